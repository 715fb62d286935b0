"""Leak-free stratified splitting: a group (C-NMC subject, byte-identical images) never spans
two splits. Built on scikit-learn's StratifiedGroupKFold, also used for k-fold CV."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

log = logging.getLogger(__name__)


def _hold_out(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part of ~`fraction` of `frame`, stratified and grouped.

    StratifiedGroupKFold cuts 1/k folds, so the fraction is rounded to the nearest 1/k.
    """
    k = max(2, int(round(1 / fraction)))
    if abs(1 / k - fraction) > 0.01:
        log.warning("split fraction %.3f rounded to 1/%d = %.3f", fraction, k, 1 / k)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny sets
        _, held = next(splitter.split(frame, frame["label"], frame["group"]))
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(frame: pd.DataFrame, cfg, seed: int) -> pd.Series:
    """Return a `split` column (train/val/test) for `frame` (needs `label` and `group`)."""
    frame = frame.reset_index(drop=True)
    split = pd.Series("train", index=frame.index, name="split")
    test = _hold_out(frame, cfg.test, seed)
    split[test] = "test"
    rest = frame[~test]
    val_fraction = cfg.val / (cfg.train + cfg.val)
    val = _hold_out(rest.reset_index(drop=True), val_fraction, seed + 1)
    split[rest.index[val]] = "val"
    return split


def check_split(frame: pd.DataFrame) -> None:
    """Raise if a group spans splits or a split misses a class (guards every run)."""
    spans = frame.groupby("group")["split"].nunique()
    leaking = spans[spans > 1].index.tolist()
    if leaking:
        raise ValueError(f"groups span several splits (leakage): {leaking[:10]}")
    missing = [
        f"{s}/{c}"
        for s in ("train", "val", "test")
        for c in sorted(frame["label"].unique())
        if not ((frame["split"] == s) & (frame["label"] == c)).any()
    ]
    if missing:
        raise ValueError(f"split/class combinations without images: {missing}")


def grouped_folds(
    frame: pd.DataFrame, folds: int, repeats: int, seed: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Repeated stratified group k-fold: (repeat, fold, train_idx, test_idx) for each split."""
    out = []
    for repeat in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for fold, (train, test) in enumerate(
                splitter.split(frame, frame["label"], frame["group"])
            ):
                out.append((repeat, fold, train, test))
    return out
