"""Plot data for `dvc plots` (CSV) and PNG renders of the same data for MLflow artifacts.

CSV files follow DVC's templates: `confusion.csv` holds one (actual, predicted) row per test
image for the `confusion` template, `roc.csv` the ROC points for `simple`/`linear` with
x=fpr, y=tpr. Figures are drawn with matplotlib's object API (no pyplot state, Agg canvas,
bundled DejaVu font), so rendering needs no display and downloads nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve

from pipeline.io import atomic_path, atomic_write_text
from pipeline.labels import CLASSES, NEGATIVE, POSITIVE, THRESHOLD, called_all


def write_plot_data(
    out_dir: Path | str,
    y_true: Sequence[int] | np.ndarray,
    p_all: Sequence[float] | np.ndarray,
    history: Sequence[Mapping[str, float]] | pd.DataFrame | None = None,
    threshold: float = THRESHOLD,
) -> list[Path]:
    """Write confusion/ROC (and training-curve, when `history` has rows) CSVs and PNGs.

    `y_true` is 0/1 with 1 = ALL, `p_all` the predicted P(ALL); `history` is the per-epoch
    list of metric dicts a classifier's `fit` returns. Each file is written atomically.
    """
    out_dir = Path(out_dir)
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_all, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and p_all {p.shape} must be 1-D of equal length")
    actual = np.where(y == 1, POSITIVE, NEGATIVE)
    predicted = np.where(called_all(p, threshold), POSITIVE, NEGATIVE)
    confusion = pd.DataFrame({"actual": actual, "predicted": predicted})
    roc = _roc_table(y, p)

    written = [
        _write_csv(out_dir / "confusion.csv", confusion),
        _write_csv(out_dir / "roc.csv", roc),
        _write_png(out_dir / "confusion.png", _confusion_figure(actual, predicted)),
        _write_png(out_dir / "roc.png", _roc_figure(y, p, roc)),
    ]
    curves = pd.DataFrame(history) if history is not None else pd.DataFrame()
    if not curves.empty:
        if "epoch" not in curves:
            curves.insert(0, "epoch", np.arange(1, len(curves) + 1))
        written.append(_write_csv(out_dir / "history.csv", curves))
        written.append(_write_png(out_dir / "curves.png", _curves_figure(curves)))
    return written


def _roc_table(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """ROC points; sklearn's first threshold (inf) is written as max(p) + 1 to stay numeric.

    With a single class in `y` one of the rates is undefined (NaN), as sklearn reports it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = roc_curve(y, p, pos_label=1)
    thresholds = np.where(np.isinf(thresholds), p.max() + 1, thresholds)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def _confusion_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    fig = Figure(figsize=(4, 3.6), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        actual, predicted, labels=list(CLASSES), ax=fig.subplots(), colorbar=False
    )
    return fig


def _roc_figure(y: np.ndarray, p: np.ndarray, roc: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(4, 4), layout="constrained")
    ax = fig.subplots()
    auc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan")
    ax.plot(roc["fpr"], roc["tpr"], label=f"ROC-AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false-positive rate", ylabel=f"true-positive rate ({POSITIVE})")
    ax.legend(loc="lower right")
    return fig


def _curves_figure(curves: pd.DataFrame) -> Figure:
    """Losses on the left panel, every other per-epoch metric (accuracies, ...) on the right."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    for column in curves.columns.drop("epoch"):
        ax = loss_ax if "loss" in column else metric_ax
        ax.plot(curves["epoch"], curves[column], marker=".", label=column)
    for ax, title in ((loss_ax, "loss"), (metric_ax, "metrics")):
        ax.set(xlabel="epoch", title=title)
        if ax.lines:
            ax.legend()
    return fig


def _write_csv(path: Path, table: pd.DataFrame) -> Path:
    return atomic_write_text(path, table.to_csv(index=False))


def _write_png(path: Path, fig: Figure) -> Path:
    with atomic_path(path) as staged:
        fig.savefig(staged, format="png", dpi=110)
    return path
