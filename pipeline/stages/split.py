"""Stage split: stratified train/val/test, no subject or duplicate across splits (paper III.B)."""

import sys

from pipeline import manifest, paths
from pipeline.preprocess.split import assign_splits, check_split
from pipeline.stages.common import log, stage


@stage
def run(cfg) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.cropped(name) / "manifest.csv")
    frame["split"] = assign_splits(frame, cfg.split, cfg.seed).values
    check_split(frame)
    manifest.write(frame, paths.split_table(name))
    log.info("split sizes:\n%s", frame.groupby(["split", "label"]).size().unstack())


main = run
if __name__ == "__main__":
    sys.exit(main())
