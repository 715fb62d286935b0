"""Test-set metrics with confidence intervals that hold for small and clustered samples.

ALL (label 1) is the positive class, as in the paper. Point estimates come from scikit-learn.

Intervals (95% by default), never zero-width from a finite sample:
- proportions (accuracy, precision, recall, specificity): Clopper–Pearson exact intervals
  (`scipy.stats.binomtest`), so 26/26 correct gives [86.8, 100], not the percentile
  bootstrap's [100, 100]; where images cluster in groups (a C-NMC subject, byte-identical
  duplicates) the interval is widened to the group bootstrap's when that is wider, since
  cells of one subject are not independent draws, and a rate stuck at 0 or 1 (which no
  resample varies) to the exact interval over the groups it is a share of;
- F1, weighted F1, balanced accuracy, ROC-AUC: a percentile bootstrap that resamples whole
  groups within each class (every image its own group when no groups are given). A class
  with no error (recall or specificity 1) or no hit (0) cannot vary in any resample, so the
  bootstrap alone would leave that class's uncertainty out: F1, weighted F1 and balanced
  accuracy are widened to cover their values with such a rate at its exact bound (e.g.
  recall 15/15 at 78.2%). Where the bootstrap still cannot vary (ROC-AUC of a perfect
  ranking, one group per class) the interval is the exact binomial one over the smaller
  class's number of groups, the independent units there are.

The bootstrap recomputes the metrics from resampled confusion counts and rank sums in NumPy
(1000 resamples x 8 scikit-learn calls would take seconds per model); a test checks both agree
on explicit resamples. The result is a flat dict of JSON-safe values so DVC can track it as a
metrics file; an undefined metric (ROC-AUC on a single-class test set) is `None`, not NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pipeline.labels import THRESHOLD

if TYPE_CHECKING:
    from omegaconf import DictConfig

METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "f1_weighted",
    "specificity",
    "balanced_accuracy",
    "roc_auc",
)
PROPORTIONS = ("accuracy", "precision", "recall", "specificity")
COLLAPSE_SHARE = 0.05

Number = float | int | None


def metrics_args(cfg: DictConfig) -> dict[str, Any]:
    """`compute_metrics`' settings (`n_boot`, `confidence`, `seed`, `collapse_share`) from
    `evaluate` and `seed`: one reading, so that the test split, CV, cross-dataset tests and the
    shortcut audit score alike (a CV flagged `collapsed` by another share than the test split's
    would disagree with it)."""
    return {
        "n_boot": cfg.evaluate.bootstrap_samples,
        "confidence": cfg.evaluate.confidence,
        "seed": cfg.seed,
        "collapse_share": cfg.evaluate.collapse_share,
    }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_all: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    threshold: float = THRESHOLD,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
    collapse_share: float = COLLAPSE_SHARE,
) -> dict[str, Number | bool]:
    """Metrics of P(ALL) scores against 0/1 labels (1 = ALL), each with its interval.

    `groups` names the independent units (subjects, duplicate groups; default: each image).
    A prediction is ALL when `p_all >= threshold`. `collapsed` flags a model whose rarer
    predicted class holds less than `collapse_share` of the predictions while the test set
    has both classes: it calls (almost) every cell the same.
    """
    y, p = _check_inputs(y_true, p_all)
    group_ids = _check_groups(groups, len(y))
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())

    result: dict[str, Number | bool] = dict(_point_estimates(y, p, pred))
    weights = group_bootstrap_weights(y, group_ids, n_boot, np.random.default_rng(seed))
    boot = bootstrap_replicates(y, p, threshold, weights)
    alpha = 1 - confidence
    clustered = len(np.unique(group_ids)) < len(y)
    units = _units_per_class(y, group_ids)
    successes = {"accuracy": (tp + tn, len(y)), "precision": (tp, tp + fp),
                 "recall": (tp, tp + fn), "specificity": (tn, tn + fp)}  # fmt: skip
    denominators = {"accuracy": np.ones(len(y), bool), "precision": pred == 1,
                    "recall": y == 1, "specificity": y == 0}  # fmt: skip
    for name in PROPORTIONS:
        low, high = exact_interval(*successes[name], confidence)
        if clustered:
            b_low, b_high = _percentile(boot[name], alpha)
            if b_high - b_low <= 0 and result[name] is not None:
                # a rate stuck at 0 or 1 in every resample: its independent units are the
                # groups it is a share of, not the cells (4 subjects all right: 4/4, not 240/240)
                k = len(np.unique(group_ids[denominators[name]]))
                b_low, b_high = exact_interval(round(float(result[name]) * k), k, confidence)
            low, high = min(low, b_low), max(high, b_high)
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = low, high
    corners = _boundary_corners(tp + fn, tn + fp, result)
    for name in (m for m in METRICS if m not in PROPORTIONS):
        value = result[name]
        if value is None:
            result[f"{name}_ci_low"] = result[f"{name}_ci_high"] = None
            continue
        low, high = _percentile(boot[name], alpha)
        if name in corners:  # a per-class rate the bootstrap cannot vary
            low, high = min(low, *corners[name]), max(high, *corners[name])
        if high - low <= 0:  # the bootstrap cannot vary: fall back on the exact bound
            n_units = max(1, min(units))
            low, high = exact_interval(round(value * n_units), n_units, confidence)
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = low, high

    result.update(tp=tp, fp=fp, tn=tn, fn=fn, n=len(y), n_groups=int(len(np.unique(group_ids))))
    predicted_all = float(pred.mean())
    result["predicted_all_share"] = predicted_all
    result["collapsed"] = bool(
        len(np.unique(y)) == 2 and min(predicted_all, 1 - predicted_all) < collapse_share
    )
    return result


def collapse_warning(model: str, metrics: Mapping[str, object]) -> str:
    """The loud line for a model that calls (almost) every test cell the same class."""
    share = float(metrics["predicted_all_share"])
    called = "ALL" if share >= THRESHOLD else "healthy (hem)"
    return (
        f"COLLAPSED: {model} calls {max(share, 1 - share):.1%} of the test cells {called} "
        f"(balanced accuracy {metrics['balanced_accuracy']:.3f}): it has learned the majority "
        "class, not the cells (check train.class_balance and the training curve)"
    )


def exact_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Clopper–Pearson interval of a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def _boundary_corners(
    n_pos: int, n_neg: int, result: Mapping[str, Number | bool]
) -> dict[str, np.ndarray]:
    """F1, weighted F1 and balanced accuracy at the corners of the box that moves each
    per-class rate stuck at 0 or 1 to its exact bound (`result` holds recall and specificity
    with their intervals); empty when no rate is stuck.

    The metrics rise with both rates, so the corners are their extremes over the box.
    """
    axes, stuck = [], False
    for rate, n_class in (("recall", n_pos), ("specificity", n_neg)):
        value = float(result[rate]) if n_class else 0.0
        axis = [value]
        if n_class and value in (0.0, 1.0):
            axis.append(float(result[f"{rate}_ci_{'low' if value == 1.0 else 'high'}"]))
            stuck = True
        axes.append(axis)
    if not stuck:
        return {}
    recall, specificity = (grid.ravel() for grid in np.meshgrid(*axes))
    positives, negatives = np.full(len(recall), n_pos), np.full(len(recall), n_neg)
    corner = _from_counts(recall * positives, (1 - specificity) * negatives, positives, negatives)
    return {name: corner[name] for name in ("f1", "f1_weighted", "balanced_accuracy")}


def _percentile(values: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * alpha, 100 - 50 * alpha])
    return float(low), float(high)


def _check_inputs(y_true: Sequence[int] | np.ndarray, p_all: Sequence[float] | np.ndarray):
    y = np.asarray(y_true)
    p = np.asarray(p_all, dtype=float)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true {y.shape} and p_all {p.shape} must be 1-D of equal length")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on an empty test set")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must be 0/1 (1 = ALL), got values {sorted(set(y.tolist()))[:10]}")
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if bad.any():
        raise ValueError(
            f"p_all must hold finite probabilities in [0, 1]: {int(bad.sum())} of {len(p)} "
            f"are not, e.g. {p[bad][:5].tolist()} (a diverged model gives NaN)"
        )
    return y.astype(int), p


def _check_groups(groups: Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
    """Integer group codes; each image its own group when `groups` is None."""
    if groups is None:
        return np.arange(n)
    values = np.asarray(groups)
    if values.shape != (n,):
        raise ValueError(f"groups {values.shape} must have one entry per image ({n})")
    return np.unique(values.astype(str), return_inverse=True)[1]


def _units_per_class(y: np.ndarray, group_ids: np.ndarray) -> list[int]:
    """Distinct groups holding each present class (the independent units per class)."""
    return [len(np.unique(group_ids[y == c])) for c in (0, 1) if (y == c).any()]


def group_bootstrap_weights(
    y: np.ndarray, group_ids: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """How often each image is drawn in each resample, shape (n_boot, n images).

    Whole groups are drawn with replacement within each class stratum (a group's stratum is
    its majority label), so every resample keeps both classes and ROC-AUC stays defined.
    """
    n_groups = int(group_ids.max()) + 1
    positives = np.bincount(group_ids, weights=y, minlength=n_groups)
    sizes = np.bincount(group_ids, minlength=n_groups)
    stratum = (2 * positives >= sizes).astype(int)
    draws = np.zeros((n_boot, n_groups))
    for label in (0, 1):
        members = np.flatnonzero(stratum == label)
        if len(members):
            draws[:, members] = rng.multinomial(
                len(members), np.full(len(members), 1 / len(members)), size=n_boot
            )
    return draws[:, group_ids]


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
        # the C-NMC challenge's metric: per-class F1 weighted by the true class sizes
        "f1_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=0)),
        "balanced_accuracy": float(balanced),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
    }


def bootstrap_replicates(
    y: np.ndarray, p: np.ndarray, threshold: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric for each resample, given how often each image is drawn in it.

    `weights` (B, n) counts the draws of each image. Zero divisions give 0, as the point
    estimates do with `zero_division=0`.
    """
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    called = (p >= threshold).astype(float)
    n_pos, n_neg = weights[:, pos].sum(axis=1), weights[:, neg].sum(axis=1)
    tp, fp = weights[:, pos] @ called[pos], weights[:, neg] @ called[neg]
    metrics = _from_counts(tp, fp, n_pos, n_neg)
    if len(pos) and len(neg):
        metrics["roc_auc"] = _rank_auc(p, pos, neg, weights[:, pos], weights[:, neg])
    else:
        metrics["roc_auc"] = np.zeros(weights.shape[0])
    return metrics


def _from_counts(
    tp: np.ndarray, fp: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray
) -> dict[str, np.ndarray]:
    """The threshold metrics from (possibly fractional) counts of hits per class.

    A class absent from every resample (n = 0) leaves balanced accuracy to the other.
    """
    fn, tn = n_pos - tp, n_neg - fp
    recall = _ratio(tp, n_pos)
    specificity = _ratio(tn, n_neg)
    defined = [rate for rate, n in ((recall, n_pos), (specificity, n_neg)) if n.any()]
    f1_pos = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_neg = _ratio(2 * tn, 2 * tn + fn + fp)
    return {
        "accuracy": _ratio(tp + tn, n_pos + n_neg),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "f1": f1_pos,
        "f1_weighted": _ratio(n_pos * f1_pos + n_neg * f1_neg, n_pos + n_neg),
        "specificity": specificity,
        "balanced_accuracy": np.mean(defined, axis=0),
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
    return _ratio(wins, w_pos.sum(axis=1) * w_neg.sum(axis=1))


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


# What a comparison of CV runs quotes of each (`protocol`, `choose_upstream`): the challenge
# metric and the imbalance-proof ones beside accuracy.
HEADLINE = ("accuracy", "f1_weighted", "balanced_accuracy", "roc_auc")


def headline(summary: Mapping[str, Any], keys: Sequence[str] = ()) -> dict[str, Any]:
    """`keys` of a CV summary and its pooled HEADLINE metrics with their CI bounds."""
    names = [*keys, *(f"{m}{s}" for m in HEADLINE for s in ("", "_ci_low", "_ci_high"))]
    return {name: summary.get(name) for name in names}
