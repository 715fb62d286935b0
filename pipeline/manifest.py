"""The one table every stage passes on: one row per image.

Columns: `id` (unique, stable, file-name safe), `path` (where the image is now), `label`
(`all` | `hem`), `group` (images that must share a split: C-NMC subject, or byte-identical
content), `sha256` (content hash of the source file), `source` (original file). Later stages
add `split`, `mask` (segmentation) and `augmented_from`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.io import atomic_path
from pipeline.labels import CLASSES

COLUMNS = ("id", "path", "label", "group", "sha256", "source")


class ManifestError(PipelineError, ValueError):
    """A stage's manifest lacks columns, has unknown labels or duplicate ids."""


def validate(frame: pd.DataFrame, where: str = "manifest") -> pd.DataFrame:
    """`frame` unchanged, or a `ManifestError` naming `where` (its file): every stage after
    ingest trusts the columns, the two labels and unique ids without checking them again."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}")
    bad = sorted(set(frame["label"]) - set(CLASSES))
    if bad:
        raise ManifestError(f"{where}: unknown labels {bad}; expected {CLASSES}")
    dupes = frame["id"][frame["id"].duplicated()].tolist()
    if dupes:
        raise ManifestError(f"{where}: duplicate ids {dupes[:10]}")
    return frame


def read(path: Path | str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return validate(frame, where=str(path))


def write(frame: pd.DataFrame, path: Path | str) -> Path:
    validate(frame, where=str(path))
    with atomic_path(path) as staged:
        frame.to_csv(staged, index=False)
    return Path(path)
