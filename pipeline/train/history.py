"""Reading a model's training history: which epoch's checkpoint was kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def selected_epoch(history: Sequence[Mapping[str, float]], monitor: str) -> Mapping[str, float]:
    """The history row of the kept checkpoint: the best `monitor`, the first one on ties, as the
    training loop chooses (`val_loss` is minimised, anything else maximised)."""
    if not history:
        raise ValueError("empty training history: the model reported no epoch")
    if monitor not in history[0]:
        monitor = "val_accuracy"  # a model that cannot honour the monitor selects on accuracy
    sign = -1.0 if monitor == "val_loss" else 1.0
    return max(history, key=lambda row: sign * row[monitor])
