"""Validation beyond one test split: repeated grouped k-fold CV, and cross-dataset testing.

k-fold CV (stage `cv`): every image of the dataset (after segment+crop) is tested once per
repeat by a model that never saw its group (subject or duplicate chain). Inside each fold a
grouped validation part is carved out of the training part for checkpoint selection and only
the training part is augmented, so everything fitted (scalers, SVMs, networks) is fitted inside
the fold by construction. The summary gives the folds' mean and std and, with bootstrap CIs,
the metrics of the pooled out-of-fold predictions.

Cross-dataset (stage `cross_eval`): models trained on one dataset predict every image of
another. The *target* decides whether its images need segmenting (ALL-IDB2 smears do, C-NMC
cells are already on black); the segmentation method and the crop/resize are the model's own,
as recorded in its preprocessing card at training time.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.config import ConfigError, compose, conf_dir
from pipeline.evaluate.metrics import Number, compute_metrics, summarise_folds
from pipeline.io import read_image
from pipeline.models.base import POSITIVE, TrainContext, build_model, load_model
from pipeline.predict import PREPROCESS_CARD, Predictor
from pipeline.preprocess.augment import augmented_table, materialise, plan_augmentation
from pipeline.preprocess.split import check_split, grouped_folds
from pipeline.report.table import MISSING, format_ci


@dataclass(frozen=True)
class Fold:
    """One train/val/test assignment of the dataset's rows (`split[i]` for row i)."""

    repeat: int
    fold: int
    split: np.ndarray

    @property
    def name(self) -> str:
        return f"repeat{self.repeat}-fold{self.fold}"


def make_folds(
    frame: pd.DataFrame, folds: int, repeats: int, seed: int, val_fraction: float
) -> list[Fold]:
    """Repeated stratified group k-fold, each fold's training part split again into train/val.

    The validation part (~`val_fraction` of the training part, rounded to 1/k as in
    `assign_splits`) is grouped and stratified too, so no group spans train, val and test.
    """
    if folds < 2 or repeats < 1:
        raise ConfigError(f"cv.folds must be >= 2 and cv.repeats >= 1, got {folds}, {repeats}")
    if not 0 < val_fraction < 1:
        raise ConfigError(
            f"split.val / (split.train + split.val) must be in (0, 1) for CV, got {val_fraction}"
        )
    frame = frame.reset_index(drop=True)
    n_groups = frame["group"].nunique()
    if n_groups < folds:
        raise ConfigError(f"cv.folds={folds} exceeds the dataset's {n_groups} groups")
    inner_k = max(2, int(round(1 / val_fraction)))
    out = []
    for repeat, fold, train, test in grouped_folds(frame, folds, repeats, seed):
        _, _, _, val = grouped_folds(frame.iloc[train], inner_k, 1, seed + 1)[0]
        split = np.full(len(frame), "train", dtype=object)
        split[test] = "test"
        split[train[val]] = "val"
        try:
            check_split(frame.assign(split=split))
        except ValueError as exc:
            raise ValueError(f"cv repeat {repeat} fold {fold}: {exc}") from exc
        out.append(Fold(repeat, fold, split))
    return out


def write_fold_dataset(
    frame: pd.DataFrame, fold: Fold, out_dir: Path, augment: Any, seed: int
) -> Path:
    """The fold's image folder `<out_dir>/{train,val}/<class>/*.png`; train alone augmented.

    `augment` is the `augment` config; its `splits` are ignored here: a CV test fold is never
    written, and augmenting the validation part would let near-copies pick the checkpoint.
    """
    frame = frame.reset_index(drop=True).assign(split=fold.split)
    kept = frame[frame["split"] != "test"].reset_index(drop=True)
    train_only = OmegaConf.create(
        {"ops": list(augment.ops), "multiplier": augment.multiplier, "splits": ["train"]}
    )
    table = augmented_table(kept, plan_augmentation(kept, train_only, seed))
    materialise(table, out_dir, desc=f"cv {fold.name} images")
    return Path(out_dir)


def fit_predict_fold(
    frame: pd.DataFrame,
    fold: Fold,
    model_config: Mapping[str, Any],
    cfg: DictConfig,
    work_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Train a fresh model on the fold's train/val part; return P(ALL) of its test rows and
    the training history.

    `cfg` supplies `augment`, `train`, `crop.size` and `seed` exactly as the train stage uses
    them; `work_dir` (emptied by the caller) receives the fold's images and checkpoints.
    """
    data_dir = write_fold_dataset(frame, fold, work_dir / "data", cfg.augment, cfg.seed)
    classifier = build_model(dict(model_config))
    ctx = TrainContext(
        data_dir=data_dir,
        work_dir=work_dir / "checkpoints",
        image_size=cfg.crop.size,
        seed=cfg.seed,
        on_epoch=on_epoch,
        **OmegaConf.to_container(cfg.train),
    )
    history = classifier.fit(ctx)
    test = frame.reset_index(drop=True)[fold.split == "test"]
    return classifier.predict_proba([read_image(p) for p in test["path"]]), history


def selected_epoch(history: Sequence[Mapping[str, float]], monitor: str) -> Mapping[str, float]:
    """The history row of the kept checkpoint: the best `monitor`, the first one on ties, as the
    training loop chooses (`val_loss` is minimised, anything else maximised)."""
    if not history:
        raise ValueError("empty training history: the model reported no epoch")
    if monitor not in history[0]:
        monitor = "val_accuracy"  # a model that cannot honour the monitor selects on accuracy
    sign = -1.0 if monitor == "val_loss" else 1.0
    return max(history, key=lambda row: sign * row[monitor])


def summarise_selection(selected: Sequence[Mapping[str, float]]) -> dict[str, Number]:
    """Mean/std over folds of the kept checkpoints' validation scores (`val_<m>_mean/_std`).

    These come from each fold's inner validation part only, never its test fold, so they are
    what hyperparameter selection may look at (`pipeline.stages.tune`).
    """
    out: dict[str, Number] = {}
    for name in ("val_accuracy", "val_loss"):
        values = np.array([row[name] for row in selected if row.get(name) is not None], float)
        out[f"{name}_mean"] = float(values.mean()) if len(values) else None
        out[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def cross_validate(
    frame: pd.DataFrame,
    cfg: DictConfig,
    model_name: str,
    run_name: str,
    parent_run_id: str | None = None,
) -> tuple[dict[str, Number | bool], pd.DataFrame]:
    """k-fold CV of one model as configured in `cfg` (cv, split, augment, train, crop, seed).

    MLflow: one run (`run_name`, nested under `parent_run_id` if given) holding the summary
    and the out-of-fold predictions, with one child run per fold. Returns the summary and the
    predictions (one row per test image per repeat).
    """
    from pipeline import tracking  # MLflow only where CV runs

    dataset = cfg.dataset.name
    config = OmegaConf.to_container(cfg.models[model_name], resolve=True)
    val_fraction = cfg.split.val / (cfg.split.train + cfg.split.val)
    folds = make_folds(frame, cfg.cv.folds, cfg.cv.repeats, cfg.seed, val_fraction)
    bootstrap = {
        "n_boot": cfg.evaluate.bootstrap_samples,
        "confidence": cfg.evaluate.confidence,
        "seed": cfg.seed,
    }
    parts, per_fold, selected = [], [], []
    stage = f"cv@{model_name}"
    run_args = {"dataset": dataset, "model": model_name, "stage": stage}
    with tracking.start_run(
        cfg, run_name=run_name, nested=parent_run_id is not None, parent_run_id=parent_run_id,
        **run_args,
    ) as parent:  # fmt: skip
        for fold in folds:
            with (
                tracking.start_run(
                    cfg,
                    run_name=f"{run_name} {fold.name}",
                    nested=True,
                    parent_run_id=parent.info.run_id,
                    **run_args,
                ),  # fmt: skip
                tempfile.TemporaryDirectory(prefix=f"cv-{model_name}-") as work,
            ):
                p_all, history = fit_predict_fold(
                    frame,
                    fold,
                    config,
                    cfg,
                    Path(work),
                    on_epoch=lambda epoch, metrics: tracking.log_epoch(metrics, step=epoch),
                )
                part = fold_predictions(frame, fold, p_all)
                metrics = compute_metrics(y_true(part["label"]), p_all, **bootstrap)
                tracking.log_test_metrics(metrics)
            parts.append(part)
            per_fold.append(metrics)
            selected.append(selected_epoch(history, cfg.train.monitor))
        predictions = pd.concat(parts, ignore_index=True)
        summary = summarise_cv(
            predictions, per_fold, cfg.cv.folds, cfg.cv.repeats, selected, **bootstrap
        )
        tracking.log_cv_summary(summary)
        with tempfile.TemporaryDirectory() as scratch:
            table = Path(scratch) / f"{model_name}.csv"
            predictions.to_csv(table, index=False)
            tracking.log_artifacts([table], artifact_path="cv")
    return summary, predictions


def fold_predictions(frame: pd.DataFrame, fold: Fold, p_all: np.ndarray) -> pd.DataFrame:
    test = frame.reset_index(drop=True)[fold.split == "test"]
    return test[["id", "label", "group"]].assign(repeat=fold.repeat, fold=fold.fold, p_all=p_all)


def y_true(labels: pd.Series) -> np.ndarray:
    return (labels == POSITIVE).astype(int).to_numpy()


def summarise_cv(
    predictions: pd.DataFrame,
    per_fold: Sequence[Mapping[str, Number]],
    folds: int,
    repeats: int,
    selected: Sequence[Mapping[str, float]] = (),
    **bootstrap: Any,
) -> dict[str, Number | bool]:
    """Flat CV metrics: `<m>_mean`/`<m>_std` over `per_fold` metrics, pooled `<m>` with its CI,
    and `val_<m>_mean/_std` of the kept checkpoints (`selected`, one history row per fold).

    Pooled: each image's out-of-fold P(ALL), averaged over repeats, so every image counts once
    in the bootstrap (repeats are not independent test images). `bootstrap` goes to
    `compute_metrics` (n_boot, confidence, seed).
    """
    pooled = predictions.groupby("id", sort=True).agg(
        label=("label", "first"), p_all=("p_all", "mean")
    )
    return {
        "enabled": True,
        "folds": folds,
        "repeats": repeats,
        **summarise_folds(per_fold),
        **(summarise_selection(selected) if selected else {}),
        **compute_metrics(y_true(pooled["label"]), pooled["p_all"], **bootstrap),
    }


def cv_table(results: Mapping[tuple[str, str], Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: fold mean ± std and the pooled value with its CI, per (dataset, model)."""

    def mean_std(m: Mapping[str, Any], name: str, scale: float) -> str:
        mean, std = m.get(f"{name}_mean"), m.get(f"{name}_std")
        if mean is None:
            return MISSING
        digits = 1 if scale == 100 else 3
        return f"{mean * scale:.{digits}f}" + (
            f" ± {std * scale:.{digits}f}" if std is not None else ""
        )

    rows = [
        {
            "dataset": dataset,
            "model": model,
            "folds × repeats": f"{m['folds']} × {m['repeats']}",
            "Ac mean ± std": mean_std(m, "accuracy", 100),
            "F1 mean ± std": mean_std(m, "f1", 100),
            "ROC-AUC mean ± std": mean_std(m, "roc_auc", 1),
            "Ac pooled": format_ci(m, "accuracy"),
            "ROC-AUC pooled": format_ci(m, "roc_auc", 1),
            "Ac val parts": mean_std(m, "val_accuracy", 100),
            "n": m.get("n"),
        }
        for (dataset, model), m in sorted(results.items())
        if m.get("enabled")
    ]
    return pd.DataFrame(rows)


# --- cross-dataset -------------------------------------------------------------------------


def target_dataset(name: str, roots: Mapping[str, str] | None = None) -> DictConfig:
    """The `dataset` section of conf/dataset/<name>.yaml, with `roots[name]` as its root."""
    known = sorted(p.stem for p in (conf_dir() / "dataset").glob("*.yaml"))
    if name not in known:
        raise ConfigError(f"cross.targets: unknown dataset {name!r}; known: {known}")
    dataset = compose([f"dataset={name}"]).dataset
    if roots and name in roots:
        dataset.root = roots[name]
    return dataset


def dataset_root(dataset: Mapping[str, Any], repo_root: Path) -> Path:
    """The dataset's root, relative roots anchored on the repo (as `build_manifest` does)."""
    root = Path(dataset["root"])
    return root if root.is_absolute() else repo_root / root


def target_predictor(model_dir: Path, target_segment: bool) -> tuple[str, Predictor]:
    """The model with its training preprocessing, segmenting only if the target needs it.

    Returns a key identifying the preprocessing, so images are prepared once per distinct key.
    """
    card_path = Path(model_dir) / PREPROCESS_CARD
    if not card_path.exists():
        raise FileNotFoundError(f"{model_dir}: no {PREPROCESS_CARD}; not a trained model folder")
    card = json.loads(card_path.read_text())
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
    out = target[["id", "label"]].reset_index(drop=True)
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


def cross_table(results: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: one row per (trained on, tested on, model)."""
    rows = [
        {
            "trained on": train,
            "tested on": target,
            "model": model,
            "Ac": format_ci(m, "accuracy"),
            "F1": format_ci(m, "f1"),
            "Bal. acc.": format_ci(m, "balanced_accuracy"),
            "ROC-AUC": format_ci(m, "roc_auc", 1),
            "n": m.get("n"),
        }
        for (train, target, model), m in sorted(results.items())
    ]
    return pd.DataFrame(rows)
