"""The soft-voting ensemble: members trained as on their own, a weighted mean, a clear config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss

from pipeline.config import ConfigError, compose
from pipeline.models import EnsembleClassifier, TrainContext, build_model, load_model
from tests.models.conftest import recording_context
from tests.models.test_models import model_config, val_images

MEMBERS = ("svm_hog", "resnet50")


def ensemble_config(**changes: Any) -> dict[str, Any]:
    members = [model_config("svm_hog"), model_config("resnet50", epochs=1)]
    return {"name": "ensemble", "kind": "ensemble", "members": members, **changes}


def test_ensemble_is_the_weighted_mean_of_members_trained_as_alone(
    image_folder_dir: Path, tmp_path: Path
) -> None:
    ctx, calls = recording_context(image_folder_dir, tmp_path / "ensemble")
    ensemble = build_model(ensemble_config(weights=[1, 3]))
    history = ensemble.fit(ctx)

    images, is_all = val_images(image_folder_dir)
    alone = []
    for config in ensemble.config["members"]:
        member = build_model(config)
        member.fit(TrainContext(image_folder_dir, tmp_path / config["name"], image_size=32))
        alone.append(member.predict_proba(images))
    proba = ensemble.predict_proba(images)
    np.testing.assert_allclose(proba, 0.25 * alone[0] + 0.75 * alone[1])

    # One history row: the mean scored on the validation split, as selection reads it.
    assert len(history) == 1
    assert history[0]["val_accuracy"] == pytest.approx(accuracy_score(is_all, proba >= 0.5))
    assert history[0]["val_loss"] == pytest.approx(log_loss(is_all, proba, labels=[False, True]))
    assert calls[-1] == (1, history[0])
    member_keys = {key for _, row in calls[:-1] for key in row}
    assert {"svm_hog/val_accuracy", "resnet50/val_accuracy", "resnet50/train_loss"} <= member_keys

    saved = ensemble.save(tmp_path / "saved")
    for name in MEMBERS:  # each member a loadable model folder of its own
        assert json.loads((saved / name / "model.json").read_text())["config"]["name"] == name
    loaded = load_model(saved)
    assert isinstance(loaded, EnsembleClassifier)
    np.testing.assert_allclose(loaded.predict_proba(images), proba)
    assert loaded.cam_target() is None  # no single feature map to explain


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"members": None}, "members"),
        ({"members": "yolov8"}, "members"),
        ({"weights": [1]}, "weights"),
        ({"weights": [1, 0]}, "weights"),
        ({"weights": [1, "a"]}, "weights"),
    ],
)
def test_bad_ensemble_config_names_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\.ensemble\.{key}"):
        build_model(ensemble_config(**changes))


def test_members_need_distinct_names_and_valid_configs() -> None:
    twice = ensemble_config()
    twice["members"][1]["name"] = "svm_hog"
    with pytest.raises(ConfigError, match=r"models\.ensemble\.members"):
        build_model(twice)
    bad_member = ensemble_config()
    bad_member["members"][1]["optimizer"] = "rmsprop"  # the member's own check names it
    with pytest.raises(ConfigError, match=r"models\.resnet50\.optimizer"):
        build_model(bad_member)


def test_members_follow_their_model_sections_in_the_composed_config() -> None:
    cfg = compose(["models.yolov8.epochs=7", "models.svm_hog.C=0.5"])
    members = {m.name: m for m in cfg.models.ensemble.members}
    assert set(members) <= set(cfg.models) - {"ensemble"}
    assert members["yolov8"].epochs == 7
    assert members["svm_hog"].C == 0.5
    assert members["resnet50_svm"] == cfg.models.resnet50_svm


def test_members_can_be_chosen_by_override() -> None:
    cfg = compose(["models.ensemble.members=[${models.yolov8},${models.densenet121}]"])
    assert [m.name for m in cfg.models.ensemble.members] == ["yolov8", "densenet121"]
