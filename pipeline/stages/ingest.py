"""Stage ingest: read a dataset through its adapter into the one manifest format."""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.config import workspace_root
from pipeline.data import build_manifest
from pipeline.io import atomic_write_text
from pipeline.stages.common import log, stage


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    frame, problems = build_manifest(cfg.dataset, workspace_root())
    quarantine = paths.dataset_dir(name) / "quarantine.txt"
    atomic_write_text(quarantine, "".join(f"{p}\n" for p in problems))
    if problems:
        log.warning(
            "%d bad files skipped (on_bad_file=skip), listed in %s", len(problems), quarantine
        )
    manifest.write(frame, paths.manifest(name))
    counts = frame["label"].value_counts().to_dict()
    log.info("%s: %d images %s, %d groups", name, len(frame), counts, frame["group"].nunique())


main = run
if __name__ == "__main__":
    sys.exit(main())
