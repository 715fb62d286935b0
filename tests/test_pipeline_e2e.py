"""The whole pipeline, end to end, on the tiny demo workspace (tests/workspace.py)."""

import json

import mlflow
import pandas as pd

from pipeline import paths
from pipeline.evaluate.holdout import predict_split
from pipeline.evaluate.metrics import compute_metrics
from pipeline.io import file_digest, folder_digest
from pipeline.labels import y_true
from pipeline.manifest import read
from pipeline.models import load_model
from tests.workspace import MODELS

EVALUATED = (*MODELS, "ensemble")


def test_every_model_has_metrics_plots_and_a_report(demo_workspace):
    for model in EVALUATED:
        metrics = json.loads((demo_workspace / paths.metrics("synthetic", model)).read_text())
        assert 0 <= metrics["accuracy"] <= 1
        assert metrics["accuracy_ci_low"] <= metrics["accuracy"] <= metrics["accuracy_ci_high"]
        assert metrics["n"] == metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"]
        # what the metrics were measured on, for a byte-identical retraining to reuse them
        assert metrics["model_digest"] == folder_digest(
            demo_workspace / paths.model_dir("synthetic", model)
        )
        assert metrics["data_digest"] == file_digest(
            demo_workspace / paths.prepared("synthetic") / "manifest.csv"
        )
        plots = demo_workspace / paths.plots("synthetic", model)
        assert {"confusion.csv", "roc.csv", "predictions.csv"} <= {p.name for p in plots.iterdir()}
    table = pd.read_csv(demo_workspace / "reports" / "table2.csv")
    assert set(table["model"]) == set(EVALUATED)
    assert "paper" in (demo_workspace / "reports" / "table2.md").read_text()


def test_each_model_is_selected_on_its_own_validation_predictions(demo_workspace):
    """The kept row (champion, the ensemble's top_k) scores the model's own P(ALL) on the
    validation split, not its history: resnet50_svm's history is its CNN head's."""
    prepared = demo_workspace / paths.prepared("synthetic")
    for model in EVALUATED:
        folder = demo_workspace / paths.model_dir("synthetic", model)
        kept = json.loads((folder / paths.SELECTION).read_text())
        own = load_model(folder).score_split(prepared, "val")
        assert kept["val_accuracy"] == own["val_accuracy"], model
        assert abs(kept["val_loss"] - own["val_loss"]) < 1e-6, model


def test_segmentation_is_scored_against_the_demo_ground_truth(demo_workspace):
    seg = json.loads((demo_workspace / paths.metrics("synthetic", "segmentation")).read_text())
    assert seg["segmented"] and seg["cell_dice_mean"] > 0.8


def test_mlflow_holds_one_finished_run_per_model_with_params_metrics_and_model(demo_workspace):
    mlflow.set_tracking_uri(f"sqlite:///{demo_workspace}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
    assert sorted(runs["tags.model"]) == sorted(EVALUATED)
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["metrics.test_accuracy"].notna().all()
    assert runs["metrics.selected_val_accuracy"].notna().all()  # what the champion is chosen by
    assert runs["params.models.resnet50.lr"].notna().all()
    assert runs["tags.git_commit"].notna().all()
    assert runs["tags.model_digest"].str.len().eq(64).all()
    trained = runs[runs["tags.model"] != "ensemble"]
    assert trained["metrics.train_seconds"].notna().all()
    assert runs["metrics.evaluate_seconds"].notna().all()
    history = mlflow.tracking.MlflowClient().get_metric_history(
        runs.loc[runs["tags.model"] == "resnet50", "run_id"].iloc[0], "val_accuracy"
    )
    assert len(history) == 1  # one epoch in the tiny workspace


def test_scores_mean_p_all_the_right_way_round(demo_workspace):
    """HOG + SVM fits its 36 training cells; scored through evaluate's own path (P(ALL) column,
    label mapping, metrics) it must be right on them. A swapped class index anywhere on that
    path turns this accuracy into its complement."""
    root = demo_workspace
    table = read(root / paths.prepared("synthetic") / "manifest.csv")
    train = table[table["split"] == "train"].reset_index(drop=True)
    train = train.assign(path=[str(root / p) for p in train["path"]])
    model = load_model(root / paths.model_dir("synthetic", "svm_hog"))
    metrics = compute_metrics(y_true(train["label"]), predict_split(model, train), n_boot=20)
    assert metrics["accuracy"] >= 0.8 and metrics["roc_auc"] >= 0.8
