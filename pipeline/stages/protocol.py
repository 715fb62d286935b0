"""`python -m pipeline.stages.protocol <model> [<model> ...] [key=value ...]`: how much does
ignoring subjects inflate a model? The same k-fold CV twice, subject-grouped and image-level.

Both sides share everything but `split.group_by` (`subject`, or the paper's image-level
`none`); the grouped side reuses the `cv@<model>` output where `dvc.lock` proves it is the same
run, and `ensemble` averages its members' kept predictions (`pipeline.runs.protocol`). Reads
the workspace's cropped images and needs `cv.folds >= 2`. Writes
`reports/protocol/<dataset>.{json,csv,md}`, after each model; models run before are kept.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.config import ConfigError
from pipeline.runs.protocol import ENSEMBLE, compare_model, protocol_path, read_record, write_record
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg: DictConfig, *model_names: str) -> None:
    if not model_names:
        raise ConfigError("name at least one model: python -m pipeline.stages.protocol svm_hog")
    if cfg.cv.folds < 2:
        raise ConfigError(f"cv.folds: the comparison is k-fold CV, set >= 2 (got {cfg.cv.folds})")
    for name in model_names:
        if name != ENSEMBLE:
            model_config(cfg, name)  # a clear error for an unknown model before any training
    from pipeline.train.device import pin_threads

    pin_threads(cfg.train.threads)
    dataset = cfg.dataset.name
    trains = any(name != ENSEMBLE for name in model_names)  # the ensemble reads no images
    frame = manifest.read(paths.cropped(dataset) / "manifest.csv") if trains else None
    record = read_record(dataset)
    for name in model_names:
        record["models"][name] = compare_model(cfg, name, frame, record["models"])
        table = write_record(dataset, record)  # after each model: none is lost
    log.info(
        "protocol comparison written to %s.{json,csv,md}:\n%s",
        protocol_path(dataset),
        table.to_string(),
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
