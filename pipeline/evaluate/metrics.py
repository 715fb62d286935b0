"""Test-set metrics with percentile-bootstrap confidence intervals, and CV fold summaries.

ALL (label 1) is the positive class, as in the paper. Point estimates come from scikit-learn;
the bootstrap recomputes the same quantities from resampled confusion counts and rank sums in
NumPy, because 1000 resamples x 7 scikit-learn calls would take seconds per model. A test
(tests/evaluate/test_metrics.py) checks that both agree on explicit resamples.

The result is a flat dict of JSON-safe numbers so DVC can track it as a metrics file. Where a
metric is undefined (ROC-AUC when the test set holds a single class) the value is `None`
rather than NaN, which JSON cannot represent.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "specificity",
    "balanced_accuracy",
    "roc_auc",
)
COUNTS = ("tp", "fp", "tn", "fn", "n")

Number = float | int | None


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_all: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
) -> dict[str, Number]:
    """Metrics of P(ALL) scores against 0/1 labels (1 = ALL), each with a bootstrap CI.

    The bootstrap resamples test images with replacement within each class, so every resample
    keeps the test set's class balance and ROC-AUC stays defined. A prediction is ALL when
    `p_all >= threshold`.
    """
    y, p = _check_inputs(y_true, p_all)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pred = (p >= threshold).astype(int)

    result: dict[str, Number] = dict(_point_estimates(y, p, pred))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    w_pos = (
        rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=n_boot)
        if len(pos)
        else None
    )
    w_neg = (
        rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=n_boot)
        if len(neg)
        else None
    )
    boot = bootstrap_replicates(y, p, threshold, w_pos, w_neg)
    tail = 100 * (1 - confidence) / 2
    for name in METRICS:
        values = boot[name]
        if result[name] is None:
            low = high = None
        else:
            low, high = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = low, high

    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    result.update(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn), n=len(y))
    return result


def _check_inputs(y_true: Sequence[int] | np.ndarray, p_all: Sequence[float] | np.ndarray):
    y = np.asarray(y_true)
    p = np.asarray(p_all, dtype=float)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true {y.shape} and p_all {p.shape} must be 1-D of equal length")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on an empty test set")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1 (1 = ALL), got values {sorted(set(y.tolist()))[:10]}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p_all must hold finite probabilities in [0, 1]")
    return y.astype(int), p


def _point_estimates(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, Number]:
    both_classes = len(np.unique(y)) == 2
    with warnings.catch_warnings():
        # Single-class test sets: balanced accuracy then averages the one defined recall.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y, pred)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, pos_label=1, zero_division=0)),
        "recall": float(recall_score(y, pred, pos_label=1, zero_division=0)),
        "f1": float(f1_score(y, pred, pos_label=1, zero_division=0)),
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=0)),
        "balanced_accuracy": float(balanced),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
    }


def bootstrap_replicates(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    w_pos: np.ndarray | None,
    w_neg: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Every metric for each resample, given how often each image is drawn in each resample.

    `w_pos` (B, n_pos) and `w_neg` (B, n_neg) count the draws of the positive and negative
    images (in index order); `None` when the class is absent. Zero divisions give 0, as the
    point estimates do with `zero_division=0`.
    """
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_rows = (w_pos if w_pos is not None else w_neg).shape[0]
    zeros = np.zeros(n_rows)
    n_pos, n_neg = len(pos), len(neg)
    tp = w_pos @ (p[pos] >= threshold) if n_pos else zeros
    fp = w_neg @ (p[neg] >= threshold) if n_neg else zeros
    fn, tn = n_pos - tp, n_neg - fp
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    defined = [rate for rate, n in ((recall, n_pos), (specificity, n_neg)) if n]
    auc = _rank_auc(p, pos, neg, w_pos, w_neg) if n_pos and n_neg else zeros
    return {
        "accuracy": (tp + tn) / (n_pos + n_neg),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": specificity,
        "balanced_accuracy": np.mean(defined, axis=0),
        "roc_auc": auc,
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _rank_auc(
    p: np.ndarray, pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray
) -> np.ndarray:
    """ROC-AUC per resample as P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney U).

    Scores are binned into their distinct levels, so the cost is O(B x (n + levels)).
    """
    levels, inverse = np.unique(p, return_inverse=True)
    pos_per_level = _per_level(w_pos, inverse[pos], len(levels))
    neg_per_level = _per_level(w_neg, inverse[neg], len(levels))
    neg_below = np.cumsum(neg_per_level, axis=1) - neg_per_level
    wins = (pos_per_level * (neg_below + 0.5 * neg_per_level)).sum(axis=1)
    return wins / (len(pos) * len(neg))


def _per_level(weights: np.ndarray, level: np.ndarray, n_levels: int) -> np.ndarray:
    """Sum the draw counts of the images sharing each score level: (B, n) -> (B, n_levels)."""
    order = np.argsort(level, kind="stable")
    sorted_levels = level[order]
    starts = np.flatnonzero(np.r_[True, sorted_levels[1:] != sorted_levels[:-1]])
    out = np.zeros((weights.shape[0], n_levels))
    out[:, sorted_levels[starts]] = np.add.reduceat(weights[:, order], starts, axis=1)
    return out


def summarise_folds(folds: Sequence[Mapping[str, Number]]) -> dict[str, Number]:
    """Mean and sample std (ddof=1) of each metric across CV folds.

    Folds where a metric is undefined (None) are left out of that metric; the std is None
    with fewer than two defined folds.
    """
    if not folds:
        raise ValueError("summarise_folds needs at least one fold")
    summary: dict[str, Number] = {"n_folds": len(folds)}
    for name in METRICS:
        values = np.array([f[name] for f in folds if f.get(name) is not None], dtype=float)
        summary[f"{name}_mean"] = float(values.mean()) if len(values) else None
        summary[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    summary["n"] = int(sum(int(f.get("n") or 0) for f in folds))
    return summary
