"""The whole pipeline, end to end, on the tiny demo workspace (tests/workspace.py)."""

import json

import mlflow
import pandas as pd

from pipeline import paths
from tests.workspace import MODELS


def test_every_model_has_metrics_plots_and_a_report(demo_workspace):
    for model in MODELS:
        metrics = json.loads((demo_workspace / paths.metrics("synthetic", model)).read_text())
        assert 0 <= metrics["accuracy"] <= 1
        assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
        assert metrics["n"] == metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"]
        plots = demo_workspace / paths.plots("synthetic", model)
        assert {"confusion.csv", "roc.csv", "predictions.csv"} <= {p.name for p in plots.iterdir()}
    table = pd.read_csv(demo_workspace / "reports" / "table2.csv")
    assert set(table["model"]) == set(MODELS)
    assert "paper" in (demo_workspace / "reports" / "table2.md").read_text()


def test_segmentation_is_scored_against_the_demo_ground_truth(demo_workspace):
    seg = json.loads((demo_workspace / paths.metrics("synthetic", "segmentation")).read_text())
    assert seg["segmented"] and seg["cell_dice_mean"] > 0.8


def test_mlflow_holds_one_finished_run_per_model_with_params_metrics_and_model(demo_workspace):
    mlflow.set_tracking_uri(f"sqlite:///{demo_workspace}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
    assert sorted(runs["tags.model"]) == sorted(MODELS)
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["metrics.test_accuracy"].notna().all()
    assert runs["params.models.resnet50.lr"].notna().all()
    assert runs["tags.git_commit"].notna().all()
    history = mlflow.tracking.MlflowClient().get_metric_history(
        runs.loc[runs["tags.model"] == "resnet50", "run_id"].iloc[0], "val_accuracy"
    )
    assert len(history) == 1  # one epoch in the tiny workspace
