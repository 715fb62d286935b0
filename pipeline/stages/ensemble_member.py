"""Stage ensemble_member@<model> / ensemble_cv_member@<model>: record the digest of one ensemble
member's trained model folder (part `split`) or CV outputs (part `cv`), so that DVC reruns the
`ensemble` or `ensemble_cv` stage, and only it, when a member of `ensemble.members` changes (a
stage cannot depend on a list of folders read from params)."""

import sys
from pathlib import Path

from omegaconf import DictConfig

from pipeline import paths
from pipeline.config import ConfigError
from pipeline.io import atomic_write_json, folder_digest
from pipeline.stages.common import log, model_config, stage

# What a finished member's folder holds: a saved model with its preparation card, or CV outputs
FINISHED_BY = {"split": (paths.MODEL_CARD, paths.PREPROCESS_CARD), "cv": ("predictions.csv",)}
PRODUCED_BY = {"split": "train", "cv": "cv"}


def recorded_folder(dataset: str, member: str, part: str) -> Path:
    """What a record of `part` stands for: the member's model folder or its CV outputs."""
    if part == "split":
        return paths.model_dir(dataset, member)
    if part == "cv":
        return paths.cv_dir(dataset, member)
    raise ConfigError(f"unknown ensemble part {part!r}: 'split' (models) or 'cv' (CV outputs)")


@stage
def run(cfg: DictConfig, model_name: str, part: str) -> None:
    dataset = cfg.dataset.name
    model_config(cfg, model_name)
    folder = recorded_folder(dataset, model_name, part)
    missing = [name for name in FINISHED_BY[part] if not (folder / name).is_file()]
    if missing:  # an empty or half-copied folder: its digest would vouch for nothing
        raise FileNotFoundError(
            f"ensemble member {model_name}: {folder} has no {missing[0]}; run "
            f"`dvc repro {PRODUCED_BY[part]}@{model_name}` first"
        )
    record = {"member": model_name, "part": part, "digest": folder_digest(folder)}
    atomic_write_json(paths.ensemble_record(dataset, part, model_name), record)
    log.info("ensemble member %s recorded (%s)", model_name, part)


main = run
if __name__ == "__main__":
    sys.exit(main())
