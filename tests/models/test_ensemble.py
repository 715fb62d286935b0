"""The soft-voting ensemble: members trained as on their own, a weighted mean, a clear config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss

from pipeline.config import ConfigError, compose
from pipeline.models import EnsembleClassifier, build_model, load_model
from tests.conftest import train_context
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
        member.fit(
            train_context(
                data_dir=image_folder_dir, work_dir=tmp_path / config["name"], image_size=32
            )
        )
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
def test_bad_ensemble_model_card_names_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"ensemble\.{key}"):
        build_model(ensemble_config(**changes))


def test_members_need_distinct_names_and_valid_configs() -> None:
    twice = ensemble_config()
    twice["members"][1]["name"] = "svm_hog"
    with pytest.raises(ConfigError, match=r"ensemble\.members"):
        build_model(twice)
    bad_member = ensemble_config()
    bad_member["members"][1]["optimizer"] = "rmsprop"  # the member's own check names it
    with pytest.raises(ConfigError, match=r"models\.resnet50\.optimizer"):
        build_model(bad_member)


def test_assembled_from_trained_members_it_averages_them_without_training(
    image_folder_dir: Path, tmp_path: Path
) -> None:
    members = []
    for config in ensemble_config()["members"]:
        member = build_model(config)
        member.fit(
            train_context(
                data_dir=image_folder_dir, work_dir=tmp_path / config["name"], image_size=32
            )
        )
        members.append(member)
    images, is_all = val_images(image_folder_dir)
    ensemble = EnsembleClassifier.assemble(members, [3, 1], image_size=32)
    expected = 0.75 * members[0].predict_proba(images) + 0.25 * members[1].predict_proba(images)
    np.testing.assert_allclose(ensemble.predict_proba(images), expected)
    row = ensemble.score_split(image_folder_dir, "val")
    assert row["val_accuracy"] == pytest.approx(accuracy_score(is_all, expected >= 0.5))
    loaded = load_model(ensemble.save(tmp_path / "saved"))
    assert [m["name"] for m in loaded.config["members"]] == list(MEMBERS)
    np.testing.assert_allclose(loaded.predict_proba(images), expected)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("ensemble.members=[yolov8,nonexistent]", "ensemble.members"),
        ("ensemble.members=[yolov8]", "ensemble.members"),
        ("ensemble.members=[yolov8,yolov8]", "ensemble.members"),
        ("ensemble.weights=[1,2]", "ensemble.weights"),
        ("ensemble.top_k=4", "ensemble.top_k"),
    ],
)
def test_the_ensemble_section_is_checked_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose([override])


def test_top_k_and_weights_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match=r"ensemble\.weights"):
        compose(["ensemble.top_k=2", "ensemble.weights=[1,1,1]"])
    assert compose(["ensemble.top_k=2"]).ensemble.top_k == 2
