"""Reading a model's training history: which epoch's checkpoint was kept."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pipeline.errors import PipelineError

LOSSES = ("train_loss", "val_loss")
KEPT = "kept"  # 1 on the row of the checkpoint a model kept by a rule of its own (YOLO)


class TrainingDivergedError(PipelineError, RuntimeError):
    """No checkpoint is worth keeping (every epoch's loss non-finite, or no epoch at all)."""


def diverged(row: Mapping[str, float]) -> bool:
    """An epoch whose loss is not finite: its weights are NaN/inf, so it is never kept (NaN
    logits still score an accuracy: argmax picks class 0)."""
    return any(not math.isfinite(row[key]) for key in LOSSES if key in row)


def selected_epoch(history: Sequence[Mapping[str, float]], monitor: str) -> Mapping[str, float]:
    """The history row of the kept checkpoint: the best `monitor` among the epochs that did not
    diverge, the first one on ties, as the training loop chooses (`val_loss` is minimised,
    anything else maximised). A row marked `KEPT` by the model wins: Ultralytics keeps the
    last of tied epochs."""
    if not history:
        raise TrainingDivergedError("empty training history: the model reported no epoch")
    marked = [row for row in history if row.get(KEPT)]
    if marked:
        return marked[-1]
    candidates = [row for row in history if not diverged(row)]
    if not candidates:
        raise TrainingDivergedError(
            f"training diverged: every epoch (1-{len(history)}) ended with a non-finite loss "
            "(history.json); lower the model's `lr`"
        )
    if monitor not in history[0]:
        monitor = "val_accuracy"  # a model that cannot honour the monitor selects on accuracy
    sign = -1.0 if monitor == "val_loss" else 1.0
    return max(candidates, key=lambda row: sign * row[monitor])


def selection_row(
    history: Sequence[Mapping[str, float]], monitor: str, validation: Mapping[str, float]
) -> dict[str, float]:
    """What selection reads of a trained model: its kept epoch's history row, with the
    validation scores of the model's own P(ALL) (`validation`) in place of the history's.
    These can differ: resnet50_svm's history scores its CNN head, not the SVM that predicts,
    and the torchvision loss is class-weighted, so models would be ranked on unlike losses."""
    return {**selected_epoch(history, monitor), **validation}
