"""Finished folds of a running CV, so that a killed CV resumes at its first unfinished fold.

A nested CV of one network on C-NMC runs for hours on a CPU; without this, a crash or a lost
machine in fold 5 throws away folds 1-4. Each trained (fold, candidate) is written as one JSON
file (its validation and test P(ALL) and its training history) the moment it finishes, under
a key made of everything its result depends on: the candidate's settings and the images
(`tuning.fingerprint`), the fold, and the source of the `pipeline` package. A rerun reads an
entry only under the same key, so a changed value, dataset or code trains again. The entries
of a CV are deleted once it has completed: the store resumes, it never replaces a requested
retraining (delete `artifacts/<dataset>/cv_resume/` to retrain folds a killed run finished).
Under `dvc exp run --temp/--queue` the store lives, and dies, with the experiment's copy.
`ALL_DETECT_CV_STORE` moves it (to a shared folder, for folds trained on several machines:
`crossval.train_fold_shard`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.io import atomic_write_json

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
COLUMN_TYPES = {"id": str, "label": str, "group": str, "repeat": int, "fold": int, "part": str}


@cache
def source_digest() -> str:
    """sha256 over the `pipeline` package's Python files (relative path and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(f"{path.relative_to(PACKAGE).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class FoldStoreError(PipelineError):
    """The fold store's folder cannot be created or written."""


class FoldStore:
    """The resumable results of one CV: `root/<key>.json` per trained (fold, candidate)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.written: list[Path] = []

    def check_writable(self) -> None:
        """Fail before the first fold trains (an hour per network fold on C-NMC), not when it
        is saved: a mistyped `ALL_DETECT_CV_STORE`, a file in its place, a read-only mount."""
        probe = self.root / f".write-check-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            shared = "ALL_DETECT_CV_STORE" in os.environ
            raise FoldStoreError(
                f"cv fold store {self.root}"
                + (" (under ALL_DETECT_CV_STORE)" if shared else "")
                + f" cannot be written: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename else "")
            ) from None

    def key(self, fingerprint: str, fold_name: str) -> str:
        text = json.dumps([fingerprint, fold_name, source_digest()])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> tuple[pd.DataFrame, list[dict[str, Any]]] | None:
        """The stored predictions and history under `key`, or None (also for an unreadable
        entry, which is logged and trained again rather than trusted)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
            columns = entry["columns"]  # the JSON's keys are sorted
            predictions = pd.DataFrame(entry["predictions"])[columns].astype(COLUMN_TYPES)
            history = list(entry["history"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cv resume: ignoring the unreadable fold entry %s (%s)", path, exc)
            return None
        self.written.append(path)
        return predictions, history

    def save(
        self, key: str, predictions: pd.DataFrame, history: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write one entry atomically: a kill mid-write leaves the old state, never half a file."""
        entry = {
            "columns": list(predictions.columns),
            "predictions": predictions.to_dict(orient="list"),
            "history": list(history),
        }
        self.written.append(atomic_write_json(self._path(key), entry))

    def entries_except(self, keys: Iterable[str]) -> list[Path]:
        """The stored entries whose key is not in `keys` (other settings, images or code)."""
        if not self.root.is_dir():
            return []
        wanted = {f"{key}.json" for key in keys}
        return sorted(p for p in self.root.glob("*.json") if p.name not in wanted)

    def clear(self) -> None:
        """Delete the entries this CV read or wrote (others' belong to other settings)."""
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
