"""The ensemble's member records: the digest of each member's trained model folder (part
`split`) or CV outputs (part `cv`), written by the `ensemble_member@<m>` /
`ensemble_cv_member@<m>` stages and checked by `ensemble` / `ensemble_cv`, so that a member
retrained since is caught instead of silently mixed with stale records (a DVC stage cannot
depend on a list of folders read from params)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline import paths
from pipeline.config import ConfigError
from pipeline.io import atomic_write_json, folder_digest, read_json

# What a finished member's folder holds: a saved model with its preparation card, or CV outputs
FINISHED_BY = {"split": (paths.MODEL_CARD, paths.PREPROCESS_CARD), "cv": ("predictions.csv",)}
PRODUCED_BY = {"split": "train", "cv": "cv"}
CONSUMED_BY = {"split": "ensemble", "cv": "ensemble_cv"}


def recorded_folder(dataset: str, member: str, part: str) -> Path:
    """What a record of `part` stands for: the member's model folder or its CV outputs."""
    if part == "split":
        return paths.model_dir(dataset, member)
    if part == "cv":
        return paths.cv_dir(dataset, member)
    raise ConfigError(f"unknown ensemble part {part!r}: 'split' (models) or 'cv' (CV outputs)")


def write_record(dataset: str, member: str, part: str) -> Path:
    """Record the digest of the member's finished folder; returns the record's path."""
    folder = recorded_folder(dataset, member, part)
    missing = [name for name in FINISHED_BY[part] if not (folder / name).is_file()]
    if missing:  # an empty or half-copied folder: its digest would vouch for nothing
        raise FileNotFoundError(
            f"ensemble member {member}: {folder} has no {missing[0]}; run "
            f"`dvc repro {PRODUCED_BY[part]}@{member}` first"
        )
    record = {"member": member, "part": part, "digest": folder_digest(folder)}
    path = paths.ensemble_record(dataset, part, member)
    atomic_write_json(path, record)
    return path


def check_records(dataset: str, members: Sequence[str], part: str) -> None:
    """Each member's recorded digest matches its current outputs (else re-run the stages)."""
    stale = []
    for member in members:
        record_path = paths.ensemble_record(dataset, part, member)
        if not record_path.exists():
            stale.append(f"{member}: no record {record_path}")
            continue
        record = read_json(record_path)
        if record["digest"] != folder_digest(recorded_folder(dataset, member, part)):
            stale.append(f"{member}: its outputs changed since {record_path} was written")
    if stale:
        raise FileNotFoundError(
            f"ensemble members out of date (run `dvc repro {CONSUMED_BY[part]}`):\n  "
            + "\n  ".join(stale)
        )
