"""The two classes and the decision rule: one definition for every layer.

Alphabetical, as torchvision's ImageFolder and Ultralytics index class folders, so a
network's output index i is `CLASSES[i]`. ALL (leukaemic blast) is the positive class, as in
the paper; a cell is called ALL when P(ALL) >= THRESHOLD.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CLASSES = ("all", "hem")
POSITIVE = "all"
NEGATIVE = "hem"
THRESHOLD = 0.5


def y_true(labels: Iterable[str]) -> np.ndarray:
    """0/1 targets (1 = ALL) of class names."""
    return (np.asarray(list(labels), dtype=object) == POSITIVE).astype(int)


def called_all(p_all: np.ndarray | Iterable[float], threshold: float = THRESHOLD) -> np.ndarray:
    """The decision: True where P(ALL) reaches the threshold."""
    return np.asarray(p_all, dtype=float) >= threshold


def call_scores(is_all: Iterable[bool], p_all: Iterable[float], prefix: str) -> dict[str, float]:
    """`<prefix>_accuracy` of the calls and `<prefix>_loss` (log loss) of P(ALL) against the
    truth: how every model and ensemble is scored on its validation cells for selection."""
    from sklearn.metrics import log_loss

    truth = np.asarray(list(is_all), dtype=bool)
    p = np.asarray(list(p_all), dtype=float)
    return {
        f"{prefix}_accuracy": float((called_all(p) == truth).mean()),
        f"{prefix}_loss": float(log_loss(truth, p, labels=[False, True])),
    }


def label_of(p_all: float, threshold: float = THRESHOLD) -> str:
    return POSITIVE if p_all >= threshold else NEGATIVE
