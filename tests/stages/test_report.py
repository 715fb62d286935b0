"""The report stage in a workspace of its own: what it refuses, warns about and registers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.io import file_digest
from pipeline.stages import report
from tests.workspace import make_workspace, run_stage

DATASET = "synthetic"  # conf/'s default dataset


def write_metrics(root: Path, model: str, **metrics: object) -> None:
    path = root / paths.metrics(DATASET, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accuracy": 0.75, "n": 8, **metrics}))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = make_workspace(tmp_path / "ws")
    write_metrics(root, "svm_hog")
    return root


def test_the_champion_is_chosen_within_the_prepared_data_of_this_workspace(workspace, monkeypatch):
    manifest_path = workspace / paths.prepared(DATASET) / "manifest.csv"
    manifest_path.parent.mkdir(parents=True)
    manifest_path.write_text("id,label,group,split\na,1,s1,train\n")
    calls = []
    monkeypatch.setattr(
        report.tracking, "register_best", lambda *args, **kwargs: calls.append(kwargs) or 1
    )
    assert run_stage(workspace, "report") == 0
    assert calls[-1]["data_digest"] == file_digest(manifest_path)
    manifest_path.unlink()  # not prepared here (e.g. only reports pulled): every version
    assert run_stage(workspace, "report") == 0
    assert calls[-1]["data_digest"] is None


def test_a_store_without_runs_is_a_warning_after_the_table_is_written(workspace, caplog):
    """A fresh store (models restored from the DVC cache log no run): nothing to register."""
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert run_stage(workspace, "report") == 0
    assert (workspace / paths.REPORTS / "table2.md").is_file()
    assert f"no finished run with a model to register for {DATASET}" in caplog.text
    assert "no champion registered" in caplog.text


def test_no_model_metrics_is_one_clear_error_and_no_empty_table(tmp_path, capsys):
    root = make_workspace(tmp_path / "ws")
    write_metrics(root, "split")  # a dataset file, not a model's test metrics
    assert run_stage(root, "report") == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        "error in stage report: no model metrics under reports/metrics (test, CV, "
        "cross-dataset, tuning or shortcut): run the evaluate (or cv) stages first"
    )
    assert not (root / paths.REPORTS / "table2.md").exists()


def test_the_report_notes_name_metrics_of_models_no_longer_configured(workspace):
    write_metrics(workspace, "old_net")  # a model since removed from `models`
    write_metrics(workspace, "ensemble")  # configured in its own section
    assert run_stage(workspace, "report") == 0
    report_text = (workspace / paths.REPORTS / "table2.md").read_text()
    [line] = [line for line in report_text.splitlines() if "leftover metrics" in line]
    assert "`models`: synthetic/old_net." in line


def test_a_collapsed_cross_dataset_model_is_warned_about_like_a_test_split_one(workspace):
    cross = workspace / paths.cross_dir(DATASET) / "synthetic_cnmc" / "svm_hog.json"
    cross.parent.mkdir(parents=True)
    flags = {"collapsed": True, "predicted_all_share": 1.0, "balanced_accuracy": 0.5}
    cross.write_text(json.dumps({"accuracy": 0.5, "n": 8, **flags}))
    assert run_stage(workspace, "report") == 0
    report_text = (workspace / paths.REPORTS / "table2.md").read_text()
    assert "Warning (collapsed model, synthetic → synthetic_cnmc/svm_hog)" in report_text


def test_the_notes_state_the_configured_confidence(tmp_path):
    root = make_workspace(tmp_path / "ws90", ["evaluate.confidence=0.9"])
    write_metrics(root, "svm_hog")
    assert run_stage(root, "report") == 0
    assert "90% intervals in brackets" in (root / paths.REPORTS / "table2.md").read_text()


def test_an_unreachable_store_is_one_clear_error_not_a_traceback(workspace, capsys, monkeypatch):
    """Registering the champion needs the store: a server that is down is named at once
    (MLflow's client would retry for minutes, then raise)."""
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # keeps the unfixed path short
    try:
        assert run_stage(workspace, "report") == 1
    finally:
        mlflow.set_tracking_uri(previous_uri)
    err = capsys.readouterr().err
    assert "error in stage report:" in err and "not reachable" in err
