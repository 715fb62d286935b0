"""Shortcut audit: does the label leak through something other than the cell?

On ALL-IDB2 blast and healthy images were acquired differently, so the smear background's
colour alone predicts the label; a classifier that sees the background can score well without
looking at the cell. This probe measures it: simple colour statistics of an image region feed
a scaled logistic regression, scored by grouped stratified k-fold CV, for

- `background`: the raw image outside the cell mask (the leak we look for),
- `cell`: the raw image inside the mask (what a model *should* use),
- `model_input`: the segmented, cropped image the models train on (cell on black),
- `model_input_background`: that image's exactly black pixels, i.e. what segmentation blacked
  out (near-black pixels are left out: resizing blends the cell's edge colour into them).
  Chance-level when segmentation removed the background from every image; a failed
  segmentation that kept a background shows up here.

A background ROC-AUC above `probe.warn_roc_auc` is logged as a warning and shown in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.evaluate.metrics import compute_metrics
from pipeline.io import read_image
from pipeline.models.base import POSITIVE
from pipeline.parallel import parallel_map
from pipeline.preprocess.split import grouped_folds
from pipeline.report.table import format_ci

log = logging.getLogger(__name__)

PROBES = ("background", "cell", "model_input", "model_input_background")
REPORTED = ("accuracy", "roc_auc")
# Colour spaces as OpenCV 8-bit conversions; every channel then spans 0..255 (hue 0..179).
SPACES = {"rgb": None, "hsv": cv2.COLOR_RGB2HSV, "lab": cv2.COLOR_RGB2LAB}


def colour_features(image: np.ndarray, region: np.ndarray, bins: int) -> np.ndarray:
    """Per channel of RGB, HSV and Lab: mean, std and a `bins`-bin histogram (fractions).

    An empty region gives zeros: it carries no colour, whatever the label.
    """
    parts = []
    for code in SPACES.values():
        converted = image if code is None else cv2.cvtColor(image, code)
        pixels = converted[region].astype(np.float32)  # (n, 3)
        for channel in range(3):
            values = pixels[:, channel]
            if values.size == 0:
                parts.append(np.zeros(bins + 2))
                continue
            hist, _ = np.histogram(values, bins=bins, range=(0, 256))
            parts.append(np.r_[values.mean(), values.std(), hist / values.size])
    return np.concatenate(parts).astype(np.float32)


def image_features(
    raw: np.ndarray, cell: np.ndarray, model_input: np.ndarray, bins: int
) -> dict[str, np.ndarray]:
    """Features of each probe region for one image; `cell` is the boolean cell mask of `raw`."""
    if cell.shape != raw.shape[:2]:
        raise ValueError(f"mask shape {cell.shape} does not match image shape {raw.shape[:2]}")
    dark = model_input.max(axis=2) == 0
    return {
        "background": colour_features(raw, ~cell, bins),
        "cell": colour_features(raw, cell, bins),
        "model_input": colour_features(model_input, np.ones_like(dark), bins),
        "model_input_background": colour_features(model_input, dark, bins),
    }


def _file_features(row: Mapping[str, str], bins: int) -> dict[str, np.ndarray]:
    raw = read_image(row["raw"])
    mask = read_image(row["mask"])[:, :, 0]  # 0 background, 128 cytoplasm, 255 nucleus
    return image_features(raw, mask > 0, read_image(row["input"]), bins)


def probe_scores(
    features: np.ndarray,
    frame: pd.DataFrame,
    folds: int,
    repeats: int,
    seed: int,
    **bootstrap: Any,
) -> dict[str, Any]:
    """Grouped stratified CV of a scaled logistic regression on `features` (one row per image).

    Scored on the pooled out-of-fold P(ALL), averaged over repeats, with bootstrap CIs
    (`bootstrap` goes to `compute_metrics`). Each fold fits its own scaler and model.
    """
    p_sum = np.zeros(len(frame))
    y = (frame["label"] == POSITIVE).astype(int).to_numpy()
    for _, _, train, test in grouped_folds(frame.reset_index(drop=True), folds, repeats, seed):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(features[train], y[train])
        p_sum[test] += model.predict_proba(features[test])[:, 1]
    return compute_metrics(y, p_sum / repeats, seed=seed, **bootstrap)


def audit(frame: pd.DataFrame, cfg: Any, seed: int, **bootstrap: Any) -> dict[str, Any]:
    """Flat shortcut metrics for `frame` (columns raw, mask, input, label, group).

    `cfg` is the `probe` config. Keys: `<probe>_<metric>` with `_ci_low`/`_ci_high` for
    accuracy and ROC-AUC, and `shortcut_warning` (background ROC-AUC above the threshold).
    """
    frame = frame.reset_index(drop=True)
    per_image = parallel_map(
        partial(_file_features, bins=cfg.bins),
        # absolute: joblib may reuse workers started in another working directory
        frame[["raw", "mask", "input"]].map(lambda p: str(Path(p).absolute())).to_dict("records"),
        desc="shortcut probe features",
    )
    result: dict[str, Any] = {
        "applicable": True,
        "n": len(frame),
        "folds": cfg.folds,
        "repeats": cfg.repeats,
        "warn_roc_auc": cfg.warn_roc_auc,
    }
    for probe in PROBES:
        features = np.stack([row[probe] for row in per_image])
        scores = probe_scores(features, frame, cfg.folds, cfg.repeats, seed, **bootstrap)
        for name in REPORTED:
            for suffix in ("", "_ci_low", "_ci_high"):
                result[f"{probe}_{name}{suffix}"] = scores[f"{name}{suffix}"]
    auc = result["background_roc_auc"]
    result["shortcut_warning"] = bool(auc is not None and auc > cfg.warn_roc_auc)
    if result["shortcut_warning"]:
        log.warning(warning_line(result))
    return result


def warning_line(result: Mapping[str, Any]) -> str:
    return (
        f"the background alone predicts the label: background-only ROC-AUC "
        f"{result['background_roc_auc']:.3f} > {result['warn_roc_auc']} (model input's "
        f"background: {_fmt(result.get('model_input_background_roc_auc'))}); a model that "
        "sees the background can score without looking at the cell"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def shortcut_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: one row per (dataset, probe) with accuracy and ROC-AUC (95% CI)."""
    rows = []
    for dataset, result in sorted(results.items()):
        if not result.get("applicable"):
            continue
        for probe in PROBES:
            scores = {k.removeprefix(f"{probe}_"): v for k, v in result.items()}
            rows.append(
                {
                    "dataset": dataset,
                    "probe": probe,
                    "Ac": format_ci(scores, "accuracy"),
                    "ROC-AUC": format_ci(scores, "roc_auc", 1),
                    "n": result["n"],
                }
            )
    return pd.DataFrame(rows)
