"""Stage split: stratified train/val/test, no subject or duplicate across splits (paper III.B).

The achieved shares per class go to the log and to `reports/metrics/<dataset>/split.json`
(the report shows them); `split.group_by=none` (the paper's image-level protocol) is warned
about in both.
"""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.io import atomic_write_json
from pipeline.preprocess.split import IMAGE_LEVEL_WARNING, assign_splits, check_split, split_summary
from pipeline.stages.common import log, stage


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.cropped(name) / "manifest.csv")
    frame["split"] = assign_splits(frame, cfg.split, cfg.seed).values
    check_split(frame, group_column="group" if cfg.split.group_by == "subject" else "sha256")
    manifest.write(frame, paths.split_table(name))
    fractions = {"train": cfg.split.train, "val": cfg.split.val, "test": cfg.split.test}
    summary = {"group_by": cfg.split.group_by, **split_summary(frame, fractions)}
    atomic_write_json(paths.metrics(name, "split"), summary)
    counts = frame.groupby(["split", "label"]).agg(
        images=("id", "size"), groups=("group", "nunique")
    )
    log.info("split sizes (images, groups; grouped by %s):\n%s", cfg.split.group_by, counts)
    if cfg.split.group_by != "subject":
        log.warning(IMAGE_LEVEL_WARNING)


main = run
if __name__ == "__main__":
    sys.exit(main())
