"""The evaluate stage's own checks, in a workspace of its own (scoring: tests/evaluate/)."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow

from tests.workspace import copy_workspace, run_stage


def test_an_unreachable_store_fails_before_scoring(
    demo_workspace: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """As train does: one clear line within seconds, not MLflow's minutes of retries and a
    traceback after the metrics file is written (checked once the model and split are known
    good, so their own errors come first)."""
    root = copy_workspace(demo_workspace, tmp_path / "ws", parts=("artifacts", "models"))
    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # keeps the unfixed path short
    started = time.monotonic()
    try:
        assert run_stage(root, "evaluate", "svm_hog") == 1
    finally:
        mlflow.set_tracking_uri(previous_uri)
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert "error in stage evaluate@svm_hog:" in err and "Traceback" not in err
    assert "http://127.0.0.1:9" in err and "not reachable" in err
    assert not (root / "reports").exists()
