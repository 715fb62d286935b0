"""Report sections and warnings built from the metrics files."""

from __future__ import annotations

import json

from pipeline import paths
from pipeline.report.sections import cv_table, data_version_lines, leftover_lines, tuning_table
from tests.workspace import copy_workspace, run_stage


def test_models_scored_on_different_versions_of_a_dataset_are_named():
    metrics = {
        ("ds", "a"): {"data_digest": "1" * 64},
        ("ds", "b"): {"data_digest": "1" * 64},
        ("ds", "c"): {"data_digest": "2" * 64},
        ("other", "a"): {"data_digest": "3" * 64},
        ("old", "a"): {},  # written before digests were recorded: one version, no warning
        ("old", "b"): {},
    }
    [line] = data_version_lines(metrics)
    assert line.startswith("**Warning (data versions, ds):** its test metrics come from 2 ")
    assert f"{'1' * 12}: a, b; {'2' * 12}: c" in line


def test_metrics_of_models_no_longer_configured_are_named():
    metrics = {("ds", "a"): {}, ("ds", "gone"): {}, ("other", "old"): {}, ("other", "a"): {}}
    [line] = leftover_lines(metrics, ["a", "b"])
    assert line.startswith("**Warning (leftover metrics):** reports/metrics holds ")
    assert "`models`: ds/gone, other/old." in line
    assert leftover_lines(metrics, ["a", "gone", "old"]) == []


def test_a_nan_cv_score_renders_as_missing():
    nan = float("nan")
    summary = {"enabled": True, "folds": 3, "repeats": 1, "n": 9}
    summary |= {"roc_auc_mean": nan, "roc_auc_std": nan, "accuracy_mean": 0.5, "accuracy_std": nan}
    [row] = cv_table({("ds", "m"): summary}).to_dict("records")
    assert row["ROC-AUC mean ± std"] == "—" and row["Ac mean ± std"] == "50.0"
    winner = {"overrides": {}, "metrics": {"val_accuracy_mean": nan, "accuracy_mean": nan}}
    [row] = tuning_table({("ds", "m"): {**winner, "candidates": 2}}).to_dict("records")
    assert row["Ac val parts"] == row["Ac test folds mean ± std"] == row["Ac pooled"] == "—"


def test_the_report_warns_about_a_mix_of_data_versions(demo_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    root = copy_workspace(
        demo_workspace, tmp_path / "ws", ["tracking.register_best=false"], ("reports",)
    )
    report = root / paths.REPORTS / "table2.md"
    assert run_stage(root, "report") == 0
    assert "data versions" not in report.read_text()
    metrics_file = root / paths.metrics("synthetic", "svm_hog")
    metrics_file.write_text(
        json.dumps({**json.loads(metrics_file.read_text()), "data_digest": "f" * 64})
    )
    assert run_stage(root, "report") == 0
    assert "**Warning (data versions, synthetic):**" in report.read_text()
    assert f"{'f' * 12}: svm_hog" in report.read_text()
