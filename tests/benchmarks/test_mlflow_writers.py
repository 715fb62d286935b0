"""The writers benchmark counts what arrived: simultaneous writers on one SQLite store each
leave one complete run (every param and metric) in the store."""

from __future__ import annotations

from pathlib import Path

import mlflow

from benchmarks import mlflow_writers


def test_simultaneous_writers_each_leave_one_complete_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment(mlflow_writers.EXPERIMENT)
    result = mlflow_writers.measure(uri, writers=2, epochs=2)
    assert result["failed_writers"] == 0 and not result["errors"]
    assert result["complete_runs"] == 2
