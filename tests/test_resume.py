"""SIGKILL `train resnet50` after its first epoch checkpoint, run it again: the result must equal
an uninterrupted run's (CPU, same seed), the dead attempt's MLflow run must end KILLED, and no
half-written output may ever be visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from pipeline import manifest, paths
from pipeline.io import read_image
from pipeline.models.base import load_model
from tests.workspace import copy_workspace

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
OVERRIDE = f"models.resnet50.epochs={EPOCHS}"  # also written into each copy's params.yaml
CHECKPOINT = paths.checkpoints("synthetic", "resnet50") / "last.pt"
MODEL = paths.model_dir("synthetic", "resnet50")


def start_training(root: Path) -> subprocess.Popen:
    """`python -m pipeline.stages.train resnet50 <override>` as DVC would run it in `root`."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "PYTHONPATH": str(REPO),
        "YOLO_OFFLINE": "1",
    }
    with open(root / "train.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.stages.train", "resnet50", OVERRIDE],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen, root: Path) -> None:
    rc = proc.wait(timeout=600)
    assert rc == 0, (root / "train.log").read_text()[-3000:]


def kill_after_first_checkpoint(root: Path) -> int:
    """Start training, SIGKILL it as soon as `last.pt` appears; return the checkpoint's epoch."""
    proc = start_training(root)
    deadline = time.monotonic() + 300
    try:
        while not (root / CHECKPOINT).exists():
            assert proc.poll() is None, (root / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    checkpoint = torch.load(root / CHECKPOINT, map_location="cpu", weights_only=False)
    return checkpoint["epoch"]


def assert_outputs_parse(root: Path) -> None:
    """Every visible JSON/CSV/checkpoint is complete; temp files are hidden (dot) names only."""
    for path in root.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=False)


def test_killed_training_resumes_to_the_uninterrupted_result(demo_workspace, tmp_path):
    killed = copy_workspace(demo_workspace, tmp_path / "killed", [OVERRIDE])
    reference = copy_workspace(demo_workspace, tmp_path / "reference", [OVERRIDE])
    uninterrupted = start_training(reference)  # runs beside the kill/resume attempts

    epoch = kill_after_first_checkpoint(killed)
    assert 1 <= epoch < EPOCHS, "killed too late to test resuming"
    assert not (killed / MODEL).exists()
    assert_outputs_parse(killed)

    finish(start_training(killed), killed)
    finish(uninterrupted, reference)
    assert f"resuming from {CHECKPOINT} after epoch {epoch}" in (killed / "train.log").read_text()
    assert_outputs_parse(killed)

    history = json.loads((killed / MODEL / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert history == json.loads((reference / MODEL / "history.json").read_text())
    resumed, fresh = load_model(killed / MODEL), load_model(reference / MODEL)
    for (name, a), (_, b) in zip(
        resumed.network.state_dict().items(), fresh.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    table = manifest.read(killed / paths.prepared("synthetic") / "manifest.csv")
    test_images = [read_image(killed / p) for p in table.loc[table["split"] == "test", "path"]]
    assert np.array_equal(resumed.predict_proba(test_images), fresh.predict_proba(test_images))

    client = mlflow.MlflowClient(f"sqlite:///{killed}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("all-detect/synthetic").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert len(client.get_metric_history(finished.info.run_id, "val_accuracy")) == EPOCHS
