"""Where every stage reads and writes: the single map of the artifact layout.

Paths are relative to the working directory DVC runs the stage in (the repo, or a temporary
experiment copy), so `dvc exp run --temp` writes into its own copy. Only the MLflow store is
anchored on the real repo (see pipeline.tracking).
"""

from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS = Path("artifacts")
DEMO = ARTIFACTS / "demo"
MODELS = Path("models")
REPORTS = Path("reports")
METRICS = REPORTS / "metrics"
PLOTS = REPORTS / "plots"
MODEL_CARD = "model.json"  # in a model folder: its kind, config and input side
SELECTION = "selection.json"  # in a model folder: its kept epoch, scored on its own val P(ALL)
PREPROCESS_CARD = "preprocess.json"  # beside prepared images and in a model folder: how made


def dataset_dir(dataset: str) -> Path:
    return ARTIFACTS / dataset


def manifest(dataset: str) -> Path:
    return dataset_dir(dataset) / "manifest.csv"


def segmented(dataset: str) -> Path:
    return dataset_dir(dataset) / "segmented"


def cropped(dataset: str) -> Path:
    return dataset_dir(dataset) / "cropped"


def split_table(dataset: str) -> Path:
    return dataset_dir(dataset) / "split.csv"


def prepared(dataset: str) -> Path:
    """The image-folder dataset `<split>/<class>/<id>.png` that models train on."""
    return dataset_dir(dataset) / "dataset"


def checkpoints(dataset: str, model: str) -> Path:
    return dataset_dir(dataset) / "checkpoints" / model


def model_dir(dataset: str, model: str) -> Path:
    return MODELS / dataset / model


def metrics(dataset: str, name: str) -> Path:
    return METRICS / dataset / f"{name}.json"


def plots(dataset: str, model: str) -> Path:
    return PLOTS / dataset / model


def cv_metrics(dataset: str, model: str) -> Path:
    return METRICS / dataset / "cv" / f"{model}.json"


def cv_dir(dataset: str, model: str) -> Path:
    """A model's CV outputs: predictions.csv, subjects.csv, selection.json."""
    return REPORTS / "cv" / dataset / model


def cv_predictions(dataset: str, model: str) -> Path:
    """P(ALL) of every validation and test image of every fold and repeat (column `part`)."""
    return cv_dir(dataset, model) / "predictions.csv"


def cv_fold_store(dataset: str, model: str) -> Path:
    """The finished folds of a model's running CV (`evaluate.fold_store`), deleted when it
    completes; under `$ALL_DETECT_CV_STORE/<dataset>/<model>` when that is set (a folder
    several machines share, each training some folds)."""
    shared = os.environ.get("ALL_DETECT_CV_STORE")
    if shared:
        return Path(shared) / dataset / model
    return dataset_dir(dataset) / "cv_resume" / model


def cross_dir(dataset: str) -> Path:
    """Metrics of the models trained on `dataset`, tested on other datasets: <target>/<model>."""
    return METRICS / dataset / "cross"


def shortcut(dataset: str) -> Path:
    return metrics(dataset, "shortcut")


def ensemble_records(dataset: str, part: str) -> Path:
    """Digests of the ensemble's members, one JSON each: of their models (part `split`) or of
    their CV outputs (part `cv`)."""
    return dataset_dir(dataset) / "ensemble" / part


def ensemble_record(dataset: str, part: str, member: str) -> Path:
    return ensemble_records(dataset, part) / f"{member}.json"


def tuning_table(dataset: str, model: str) -> Path:
    """Hyperparameter search: one row per candidate with its validation and test-fold scores."""
    return REPORTS / "tuning" / dataset / f"{model}.csv"


def tuning_winner(dataset: str, model: str) -> Path:
    """The selected candidate: its overrides and scores (read by the report)."""
    return METRICS / dataset / "tuning" / f"{model}.json"
