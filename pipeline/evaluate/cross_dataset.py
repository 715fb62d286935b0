"""Cross-dataset testing (stage `cross_eval`): models trained on one dataset predict every
image of another. The *target* decides whether its images need segmenting (ALL-IDB2 smears
do, C-NMC cells are already on black); the segmentation method and the crop/resize are the
model's own, as recorded in its preprocessing card at training time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.config import ConfigError, compose, conf_dir, workspace_root
from pipeline.data import build_manifest
from pipeline.evaluate.metrics import compute_metrics, metrics_args
from pipeline.inference import Predictor
from pipeline.io import BadInputError, atomic_write_json, read_image
from pipeline.labels import CLASSES, y_true
from pipeline.models.base import load_model
from pipeline.paths import MODEL_CARD
from pipeline.preprocess.card import read_card

log = logging.getLogger(__name__)


def target_dataset(name: str, roots: Mapping[str, str] | None = None) -> DictConfig:
    """The `dataset` section of conf/dataset/<name>.yaml, with `roots[name]` as its root."""
    known = sorted(p.stem for p in (conf_dir() / "dataset").glob("*.yaml"))
    if name not in known:
        raise ConfigError(f"cross.targets: unknown dataset {name!r}; known: {known}")
    dataset = compose([f"dataset={name}"]).dataset
    if roots and name in roots:
        dataset.root = roots[name]
    return dataset


def dataset_root(dataset: Mapping[str, Any], workspace: Path) -> Path:
    """The dataset's root, relative roots anchored on the workspace (as `build_manifest` does)."""
    root = Path(dataset["root"])
    return root if root.is_absolute() else workspace / root


def drop_training_images(target: pd.DataFrame, training: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The target's rows whose file is byte-identical to no image of the training dataset, and
    how many were dropped: a model is not tested on images it (or its validation) has seen."""
    seen = target["sha256"].isin(set(training["sha256"]))
    return target[~seen].reset_index(drop=True), int(seen.sum())


def require_unseen_classes(target: pd.DataFrame, seen: int, name: str, dataset: str) -> None:
    """A ConfigError unless `target` (the images left after `drop_training_images`, `seen`
    of them dropped) still holds both classes: scored on one class, accuracy, balanced
    accuracy and F1 read 1.0 for a model that calls everything that class."""
    if target.empty:
        raise ConfigError(
            f"cross.targets: every image of {name!r} is also in the training dataset "
            f"{dataset!r}: nothing unseen to test on"
        )
    missing = [label for label in CLASSES if not (target["label"] == label).any()]
    if missing:
        raise ConfigError(
            f"cross.targets: {name!r} has no unseen image of class '{missing[0]}' ({seen} of "
            f"its images are byte-identical to {dataset!r}'s and left out): its metrics would "
            "score one class only"
        )


def target_predictor(model_dir: Path, target_segment: bool) -> tuple[str, Predictor]:
    """The model with its training preprocessing, segmenting only if the target needs it.

    Returns a key identifying the preprocessing, so images are prepared once per distinct key.
    """
    card = read_card(model_dir)
    segment = bool(target_segment) and card["segment_config"]["method"] != "none"
    card = {**card, "segment": segment}
    key = json.dumps(
        {k: card[k] for k in ("segment", "crop_config")}
        | ({"segment_config": card["segment_config"]} if segment else {}),
        sort_keys=True,
    )
    return key, Predictor(load_model(model_dir), card)


def cross_predict(
    model_dirs: Mapping[str, Path],
    target: pd.DataFrame,
    target_segment: bool,
    chunk: int = 256,
) -> pd.DataFrame:
    """P(ALL) of every target image (manifest rows) by every model: columns id, label, <model>.

    Images are read and prepared once per distinct preprocessing and chunk, which bounds memory
    on large targets (C-NMC: ~10k cells).
    """
    groups: dict[str, dict[str, Predictor]] = {}
    for name, directory in model_dirs.items():
        key, predictor = target_predictor(directory, target_segment)
        groups.setdefault(key, {})[name] = predictor
    out = target[["id", "label", "group"]].reset_index(drop=True)
    scores: dict[str, list[np.ndarray]] = {name: [] for name in model_dirs}
    paths = target["path"].tolist()
    for start in range(0, len(paths), chunk):
        batch = paths[start : start + chunk]
        for predictors in groups.values():
            preprocess = next(iter(predictors.values()))
            images = [preprocess.prepare(read_image(p)) for p in batch]
            for name, predictor in predictors.items():
                scores[name].append(predictor.model.predict_proba(images))
    for name in model_dirs:
        out[name] = np.concatenate(scores[name]) if scores[name] else np.array([])
    return out


def check_models(model_dirs: Mapping[str, Path]) -> None:
    """Every model to test is trained and says how its images were prepared: checked before
    any target image is read (hashing a C-NMC-sized target takes minutes)."""
    for name, directory in model_dirs.items():
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{directory}: no such model folder: {name!r} is not trained on this dataset; "
                f"train it first (`dvc repro train@{name}`) or name the trained models "
                "(python -m pipeline.stages.cross_eval <model> ...)"
            )
        if not (directory / MODEL_CARD).is_file():
            raise FileNotFoundError(f"{directory}: no {MODEL_CARD}; not a saved model folder")
        read_card(directory)


def check_roots(cfg: DictConfig) -> None:
    """A `cross.roots` name that is not a target is a misspelling: its target would silently
    read its default root."""
    stray = sorted(set(cfg.cross.roots) - set(cfg.cross.targets))
    if stray:
        raise ConfigError(
            f"cross.roots.{stray[0]}: not one of cross.targets {list(cfg.cross.targets)}; "
            "a root is only read for a target (check the spelling, or add it to cross.targets)"
        )


def evaluate_target(
    cfg: DictConfig,
    target_name: str,
    model_dirs: Mapping[str, Path],
    training: pd.DataFrame,
    out: Path,
) -> bool:
    """Every model of `model_dirs` (trained on `cfg.dataset`, whose manifest is `training`)
    scored on the target: `out/predictions.csv` and one metrics JSON per model. False (nothing
    written) when the target's root is missing and `cross.on_missing` is `skip`."""
    target = target_dataset(target_name, cfg.cross.roots)
    root = dataset_root(target, workspace_root())
    if not root.exists():
        problem = (
            f"cross.targets: target {target_name!r}: dataset root {root} does not exist "
            f"(set +cross.roots.{target_name}=<path>, or cross.on_missing=skip)"
        )
        if cfg.cross.on_missing == "error":
            raise FileNotFoundError(problem)
        log.warning("skipped: %s", problem)
        return False
    dataset = cfg.dataset.name
    try:
        frame, problems = build_manifest(target, workspace_root())
    except BadInputError as exc:  # its policy is the target's own, not -S dataset.on_bad_file
        raise BadInputError(
            exc.problems,
            what=f"cross.targets: {target_name!r} (on_bad_file: {target.on_bad_file} in "
            f"conf/dataset/{target_name}.yaml; skip there leaves bad files out)",
        ) from None
    if problems:
        log.warning("%s: %d bad files skipped", target_name, len(problems))
    frame, seen = drop_training_images(frame, training)
    require_unseen_classes(frame, seen, target_name, dataset)
    if seen:
        log.warning(
            "%s: %d images byte-identical to %s's are left out (seen in training)",
            target_name, seen, dataset,
        )  # fmt: skip
    predictions = cross_predict(model_dirs, frame, target.segment)
    out.mkdir(parents=True)
    predictions.to_csv(out / "predictions.csv", index=False)
    y = y_true(predictions["label"])
    for name in model_dirs:
        metrics = compute_metrics(
            y, predictions[name], groups=predictions["group"].to_numpy(), **metrics_args(cfg)
        )
        metrics["n_left_out_seen_in_training"] = seen
        atomic_write_json(out / f"{name}.json", metrics)
        log.info(
            "%s -> %s %s: accuracy %.3f, ROC-AUC %s on %d images",
            dataset, target_name, name, metrics["accuracy"], metrics["roc_auc"], metrics["n"],
        )  # fmt: skip
    return True
