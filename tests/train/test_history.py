"""Which epoch a history says was kept: the same rule as the training loop."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import PipelineError
from pipeline.train.history import (
    KEPT,
    TrainingDivergedError,
    diverged,
    selected_epoch,
    selection_row,
)

NAN = math.nan


def test_the_best_monitor_is_selected_first_on_ties() -> None:
    history = [
        {"epoch": 1, "val_accuracy": 0.7, "val_loss": 0.6},
        {"epoch": 2, "val_accuracy": 0.9, "val_loss": 0.5},
        {"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.4},
    ]
    assert selected_epoch(history, "val_accuracy")["epoch"] == 2
    assert selected_epoch(history, "val_loss")["epoch"] == 3


def test_a_diverged_epoch_is_never_selected() -> None:
    """NaN weights still score an accuracy (argmax of NaN is class 0): fit does not keep them,
    so the history must not report them as kept either."""
    history = [
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_accuracy": 0.45},
        {"epoch": 2, "train_loss": 0.6, "val_loss": NAN, "val_accuracy": 0.5},
        {"epoch": 3, "train_loss": NAN, "val_loss": 0.5, "val_accuracy": 0.6},
    ]
    assert [diverged(row) for row in history] == [False, True, True]
    assert selected_epoch(history, "val_accuracy")["epoch"] == 1
    assert selected_epoch(history, "val_loss")["epoch"] == 1
    assert not diverged({"epoch": 1, "val_accuracy": 0.5})  # a history without losses


def test_a_history_that_only_diverged_is_a_user_facing_error() -> None:
    # a PipelineError: the stage prints it as one line (lower the lr), not a traceback
    with pytest.raises(PipelineError, match=r"every epoch \(1-1\).*lower the model's `lr`"):
        selected_epoch([{"epoch": 1, "train_loss": NAN, "val_accuracy": 0.5}], "val_accuracy")
    with pytest.raises(TrainingDivergedError, match="no epoch"):
        selected_epoch([], "val_accuracy")


def test_a_row_the_model_marked_kept_wins_over_the_rule() -> None:
    history = [
        {"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.5},
        {"epoch": 2, "val_accuracy": 0.9, "val_loss": 0.4, KEPT: 1.0},
    ]
    assert selected_epoch(history, "val_accuracy")["epoch"] == 2


def test_selection_reads_the_models_own_validation_scores() -> None:
    """resnet50_svm's history scores its CNN head; the SVM that predicts may score otherwise."""
    history = [{"epoch": 1, "train_loss": 0.3, "val_accuracy": 0.9, "val_loss": 0.2}]
    own = {"val_accuracy": 0.6, "val_loss": 0.7}
    assert selection_row(history, "val_accuracy", own) == {"epoch": 1, "train_loss": 0.3, **own}
    assert selection_row(history, "val_accuracy", {})["val_accuracy"] == 0.9  # no val part


def test_the_last_row_the_model_marked_kept_wins():
    history = [
        {"epoch": 1, "val_accuracy": 0.9, KEPT: 1.0},
        {"epoch": 2, "val_accuracy": 0.8, KEPT: 1.0},
    ]
    assert selected_epoch(history, "val_accuracy")["epoch"] == 2


def test_a_monitor_the_history_lacks_selects_on_validation_accuracy():
    history = [
        {"epoch": 1, "val_accuracy": 0.6},
        {"epoch": 2, "val_accuracy": 0.8},
        {"epoch": 3, "val_accuracy": 0.7},
    ]
    assert selected_epoch(history, "val_loss")["epoch"] == 2
