"""A model records how its training images were really prepared: the card the data stages
wrote beside the images, not the params of the day it trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import paths
from pipeline.inference import Predictor
from pipeline.io import file_digest, read_json
from tests.workspace import copy_workspace, run_stage

DATASET = "synthetic"


@pytest.fixture
def workspace(demo_workspace, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return copy_workspace(demo_workspace, tmp_path / "ws", parts=("artifacts", "models"))


def card(folder: Path) -> dict:
    return read_json(folder / paths.PREPROCESS_CARD)


def test_every_prepared_folder_and_model_carries_the_card(demo_workspace):
    cropped = card(demo_workspace / paths.cropped(DATASET))
    segmented = card(demo_workspace / paths.segmented(DATASET))
    assert {k: cropped[k] for k in segmented} == segmented
    assert card(demo_workspace / paths.prepared(DATASET)) == cropped
    data_manifest = demo_workspace / paths.prepared(DATASET) / "manifest.csv"
    for model in ("svm_hog", "ensemble"):
        recorded = card(demo_workspace / paths.model_dir(DATASET, model))
        assert recorded == {
            **cropped,
            "dataset": DATASET,
            "data_digest": file_digest(data_manifest),
        }


def test_training_by_hand_with_other_crop_params_records_how_the_crops_were_made(workspace):
    made_with = card(workspace / paths.cropped(DATASET))["crop_config"]["margin"]
    assert run_stage(workspace, "train", "svm_hog", f"crop.margin={made_with + 0.3}") == 0
    model_dir = workspace / paths.model_dir(DATASET, "svm_hog")
    assert card(model_dir)["crop_config"]["margin"] == made_with
    predictor = Predictor.load(model_dir)  # what predict will do to a raw image
    assert predictor.crop_cfg.margin == made_with
