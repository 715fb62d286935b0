"""Hyperparameter search by k-fold CV, selecting on validation parts only.

Every candidate (one combination of a grid) runs the same folds as stage `cv`; inside each
fold the checkpoint is chosen on the fold's inner validation part, and the candidates are
ranked by those validation scores (`val_accuracy_mean`, ties broken by the lower
`val_loss_mean`). The test folds' metrics are recorded beside them for the report but never
rank anything, so the chosen setting's CV accuracy is not a best-of-many-on-test figure.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.config import ConfigError, validate
from pipeline.io import atomic_path, file_digest

# Candidates may only change what acts inside a fold. Segmentation, crop and dataset are
# upstream stages: vary those with `dvc exp run -S ...` instead.
TUNABLE_PREFIXES = ("augment.", "train.")
SELECTION = ("val_accuracy_mean", "val_loss_mean")
KEPT_METRICS = (
    "val_accuracy_mean",
    "val_accuracy_std",
    "val_loss_mean",
    "accuracy_mean",
    "accuracy_std",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "roc_auc",
)


def expand_grid(grid: Mapping[str, Any], model_name: str) -> list[dict[str, Any]]:
    """Every combination of `{params key: [values]}`, in the grid's order (first key slowest).

    Keys are full params.yaml keys: `models.<model_name>.*`, `augment.*` or `train.*`.
    """
    if not grid:
        raise ConfigError(f"tune.grids.{model_name}: empty or missing; nothing to search")
    allowed = (f"models.{model_name}.", *TUNABLE_PREFIXES)
    for key, values in grid.items():
        if not key.startswith(allowed):
            raise ConfigError(
                f"tune.grids.{model_name}: key {key!r} cannot be tuned inside a fold; allowed "
                f"prefixes: {list(allowed)} (vary upstream stages with dvc exp run -S)"
            )
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"tune.grids.{model_name}.{key}: expected a non-empty list")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def apply_candidate(cfg: DictConfig, candidate: Mapping[str, Any]) -> DictConfig:
    """A validated copy of `cfg` with the candidate's values; an unknown key is an error."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in candidate.items():
        if OmegaConf.select(out, key, default=KeyError) is KeyError:
            raise ConfigError(f"tune: {key!r} is not a config key (see params.yaml)")
        OmegaConf.update(out, key, value, merge=False)
    return validate(out)


# What a fold's result depends on (the params of the `cv` stage in dvc.yaml, plus the model)
RESULT_SECTIONS = ("seed", "cv", "split", "augment", "crop", "train", "evaluate")


def fingerprint(cfg: DictConfig, model_name: str, data_digest: str) -> str:
    """Identity of one candidate's CV result: its resolved settings and the data's digest.

    A resumed search reuses a finished row only under the same fingerprint, so a changed
    value, fold protocol or dataset is searched again instead of read from a stale table.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    relevant = {key: container.get(key) for key in RESULT_SECTIONS}
    relevant["model"] = {model_name: container["models"][model_name]}
    relevant["data"] = data_digest
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_digest(frame: pd.DataFrame) -> str:
    """Content hash of the images a search runs on: the files themselves, with their ids,
    labels and groups (the manifest's sha256 is the source's, which re-segmenting keeps)."""
    digest = hashlib.sha256()
    for row in frame[["id", "label", "group", "path"]].itertuples(index=False):
        digest.update(f"{row.id}|{row.label}|{row.group}|{file_digest(row.path)}\n".encode())
    return digest.hexdigest()


def candidate_row(
    candidate: Mapping[str, Any], summary: Mapping[str, Any], candidate_fingerprint: str
) -> dict[str, Any]:
    """One row of the tuning table: the candidate's overrides, its kept CV metrics and the
    fingerprint by which a resumed search recognises it."""
    return {
        **candidate,
        **{name: summary.get(name) for name in KEPT_METRICS},
        "fingerprint": candidate_fingerprint,
    }


def finished_candidates(table_path: Path) -> dict[str, dict[str, Any]]:
    """Fingerprint -> kept metrics of the candidates an earlier (maybe killed) search wrote."""
    if not table_path.exists():
        return {}
    table = pd.read_csv(table_path)
    if "fingerprint" not in table.columns:  # a table from before resuming existed
        return {}
    metrics = [name for name in KEPT_METRICS if name in table.columns]
    return {
        str(row["fingerprint"]): {
            name: None if pd.isna(row[name]) else float(row[name]) for name in metrics
        }
        for _, row in table.iterrows()
    }


def write_table(path: Path, rows: list[dict[str, Any]], selected: int | None) -> pd.DataFrame:
    """Every finished candidate, rewritten after each one so a killed search can resume;
    `selected` marks the winner once all are done (none is marked before)."""
    table = pd.DataFrame(rows)
    table.insert(0, "selected", [i == selected for i in range(len(table))])
    with atomic_path(path) as staged:
        table.to_csv(staged, index=False)
    return table


def winner_record(
    cfg: DictConfig, model_name: str, overrides: Mapping[str, Any], row: pd.Series
) -> dict[str, Any]:
    """The search's outcome as the report lists it: the winning candidate's overrides (to copy
    into `conf/experiment/`), how it was chosen, and its kept metrics (`row`: its table row)."""
    return {
        "model": model_name,
        "dataset": cfg.dataset.name,
        "folds": cfg.cv.folds,
        "repeats": cfg.cv.repeats,
        "selected_by": list(SELECTION),
        "overrides": overrides,
        "metrics": {
            k: None if pd.isna(v) else float(v) for k, v in row[list(KEPT_METRICS)].items()
        },
    }


def select(table: pd.DataFrame) -> int:
    """Row position of the winner: best validation accuracy, then lowest validation loss,
    then the earliest candidate. Never looks at test-fold columns."""
    if table.empty:
        raise ValueError("no candidates to select from")
    accuracy_column, loss_column = SELECTION
    accuracy = table[accuracy_column].astype(float).fillna(-1.0)
    loss = table[loss_column].astype(float).fillna(float("inf"))
    order = sorted(range(len(table)), key=lambda i: (-accuracy.iloc[i], loss.iloc[i], i))
    return order[0]
