"""Shortcut audit: does the label leak through something other than the cell?

On ALL-IDB2 blast and healthy images were acquired differently, so the smear background's
colour alone predicts the label; a classifier that sees the background can score well without
looking at the cell. This probe measures it: simple colour statistics of an image region feed
a scaled logistic regression, scored by stratified k-fold CV grouped by subject (whatever
`split.group_by` says: the probe asks about the dataset, not about a split protocol), for

- `background`: the raw image outside the cell mask (the leak we look for),
- `cell`: the raw image inside the mask (what a model *should* use),
- `model_input`: the segmented, cropped image the models train on (cell on black),
- `model_input_background`: the pixels of that image no cell pixel contributes to, found by
  taking the segmentation mask through the crop stage's own crop, padding and resize, with
  the image's own interpolation (`crop_footprint`). The resize's blend of the cell's edge is
  the cell, not background: counting it (a nearest-neighbour mask did, until 2026-12-06) let
  the probe read the cell's own colour there and raise a false warning (ROC-AUC 0.891 on
  ALL-IDB2). Segmentation that blacks the background out leaves this region nothing to learn
  from; anything added after it (a tint, a padding colour, a stage that stopped masking)
  shows up here (a test paints a label-dependent tint and expects the warning).

A background ROC-AUC above `probe.warn_roc_auc` is logged as a warning and shown in the
report: `shortcut_warning` for the raw image (the dataset carries a shortcut), and
`model_input_warning` for what the models see (the shortcut reaches them).
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
from pipeline.labels import y_true
from pipeline.parallel import parallel_map
from pipeline.preprocess.crop import crop_footprint
from pipeline.preprocess.segment import Segmentation, apply_mask_and_crop
from pipeline.preprocess.split import grouped_folds

log = logging.getLogger(__name__)

PROBES = ("background", "cell", "model_input", "model_input_background")
WARNINGS = {"shortcut_warning": "background", "model_input_warning": "model_input_background"}
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
    raw: np.ndarray, cell: np.ndarray, model_input: np.ndarray, crop_cfg: Any, bins: int
) -> dict[str, np.ndarray]:
    """Features of each probe region for one image; `cell` is the boolean cell mask of `raw`,
    `crop_cfg` the crop stage's config that turned the segmented cell into `model_input`."""
    if cell.shape != raw.shape[:2]:
        raise ValueError(f"mask shape {cell.shape} does not match image shape {raw.shape[:2]}")
    segmented, window = apply_mask_and_crop(raw, Segmentation(cell, cell, found=True))
    inside = crop_footprint(segmented, window, crop_cfg)
    if inside.shape != model_input.shape[:2]:
        raise ValueError(
            f"model input {model_input.shape[:2]} does not match the crop config's "
            f"{inside.shape}: re-run the crop stage"
        )
    return {
        "background": colour_features(raw, ~cell, bins),
        "cell": colour_features(raw, cell, bins),
        "model_input": colour_features(model_input, np.ones_like(inside), bins),
        "model_input_background": colour_features(model_input, ~inside, bins),
    }


def _file_features(row: Mapping[str, str], crop_cfg: Any, bins: int) -> dict[str, np.ndarray]:
    raw = read_image(row["raw"])
    mask = read_image(row["mask"])[:, :, 0]  # 0 background, 128 cytoplasm, 255 nucleus
    return image_features(raw, mask > 0, read_image(row["input"]), crop_cfg, bins)


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
    y = y_true(frame["label"])
    for _, _, train, test in grouped_folds(frame.reset_index(drop=True), folds, repeats, seed):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(features[train], y[train])
        p_sum[test] += model.predict_proba(features[test])[:, 1]
    return compute_metrics(
        y, p_sum / repeats, groups=frame["group"].to_numpy(), seed=seed, **bootstrap
    )


def audit(
    frame: pd.DataFrame, cfg: Any, crop_cfg: Any, seed: int, **bootstrap: Any
) -> dict[str, Any]:
    """Flat shortcut metrics for `frame` (columns raw, mask, input, label, group).

    `cfg` is the `probe` config, `crop_cfg` the crop stage's. Keys: `<probe>_<metric>` with
    `_ci_low`/`_ci_high` for accuracy and ROC-AUC, `shortcut_warning` (the raw background's
    ROC-AUC above the threshold) and `model_input_warning` (the model input's background's).
    """
    frame = frame.reset_index(drop=True)
    per_image = parallel_map(
        partial(_file_features, crop_cfg=crop_cfg, bins=cfg.bins),
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
    for flag, probe in WARNINGS.items():
        auc = result[f"{probe}_roc_auc"]
        result[flag] = bool(auc is not None and auc > cfg.warn_roc_auc)
    for line in warning_lines(result):
        log.warning(line)
    return result


def warning_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per raised warning: what predicts the label, and what it means."""
    lines = []
    if result.get("shortcut_warning"):
        lines.append(
            f"the raw background alone predicts the label: ROC-AUC "
            f"{result['background_roc_auc']:.3f} > {result['warn_roc_auc']}; a model that sees "
            "the background can score without looking at the cell"
        )
    if result.get("model_input_warning"):
        lines.append(
            f"the models' input still carries it: its non-cell area predicts the label with "
            f"ROC-AUC {result['model_input_background_roc_auc']:.3f} > {result['warn_roc_auc']}"
            " (segmentation leaves background, or a tint, around the cell)"
        )
    return lines
