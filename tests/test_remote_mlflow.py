"""The pipeline against a remote MLflow tracking server (`mlflow server`, proxied artifacts), as
a team would share one: params, test metrics and the model all land on the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import paths, tracking
from pipeline.io import read_image
from tests.mlflow_server import fresh_postgres_database, mlflow_server
from tests.workspace import PREP_STAGES, make_workspace, run_stage

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A fresh `mlflow server` with its own empty store."""
    with mlflow_server(tmp_path / "server.db", tmp_path) as url:
        yield url


def test_train_and_evaluate_log_params_metrics_and_model_to_the_server(
    server, tmp_path, monkeypatch
):
    root = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    previous_uri = mlflow.get_tracking_uri()
    try:
        for name in PREP_STAGES:
            assert run_stage(root, name) == 0, name
        assert run_stage(root, "train", "svm_hog") == 0
        assert run_stage(root, "evaluate", "svm_hog") == 0
    finally:
        mlflow.set_tracking_uri(previous_uri)

    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("all-detect/synthetic")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served, not local
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "svm_hog" and run.data.tags["dataset_hash"]
    assert run.data.params["models.svm_hog.C"] == "1.0"
    assert run.data.params["crop.size"] == "32"
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    assert {"test_f1", "test_roc_auc"} <= set(run.data.metrics)
    assert "predictions.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}

    # The model (an MLflow 3 logged model of the run) downloads from the server and is the one
    # evaluate scored: same probabilities on the test images.
    model_uri = run.data.tags[tracking.MODEL_URI_TAG]
    (logged,) = client.search_logged_models([experiment.experiment_id])
    assert logged.source_run_id == run.info.run_id and model_uri.endswith(logged.model_id)
    predictions = pd.read_csv(root / paths.plots("synthetic", "svm_hog") / "predictions.csv")
    mlflow.set_tracking_uri(server)  # `models:/` URIs resolve on the global store, not `client`
    try:
        served = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous_uri)  # an earlier test may have set it: leave it so
    with monkeypatch.context() as patch:
        patch.chdir(root)
        images = np.stack([read_image(p) for p in predictions["path"]])
    np.testing.assert_allclose(served.predict(images), predictions["p_all"], rtol=1e-6)


def test_a_postgres_store_keeps_artifacts_in_the_repo_from_a_dvc_temp_copy(
    cfg, tmp_path, monkeypatch
):
    """A direct database URI: MLflow's default artifact root would be `./mlruns` of the
    working directory, which `dvc exp run --temp` deletes with its copy."""
    repo = tmp_path / "repo"
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "xyz"
    temp_copy.mkdir(parents=True)
    for root in (repo, temp_copy):  # the copy looks like a repo too
        (root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    note = tmp_path / "note.txt"
    note.write_text("kept")
    previous_uri = mlflow.get_tracking_uri()
    with fresh_postgres_database() as database:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", database)
        try:
            with tracking.start_run(cfg, "synthetic", "svm_hog", "train") as run:
                tracking.log_artifacts([note])
            experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
        finally:
            mlflow.set_tracking_uri(previous_uri)
    artifacts = repo.resolve() / "mlartifacts" / "all-detect" / "synthetic"
    assert experiment.artifact_location == artifacts.as_uri()
    assert (artifacts / run.info.run_id / "artifacts" / "note.txt").read_text() == "kept"
    assert not (temp_copy / "mlruns").exists()
