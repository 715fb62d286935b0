"""The soft-voting ensemble: assembled from trained members, a weighted mean, a clear config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from pipeline.config import ConfigError, compose
from pipeline.errors import PipelineError
from pipeline.models import EnsembleClassifier, build_model, load_model
from tests.conftest import train_context
from tests.models.test_models import model_config, val_images

MEMBERS = ("svm_hog", "resnet50")


def ensemble_config(**changes: Any) -> dict[str, Any]:
    members = [model_config("svm_hog"), model_config("resnet50", epochs=1)]
    return {"name": "ensemble", "kind": "ensemble", "members": members, **changes}


def test_an_ensemble_is_assembled_never_trained(image_folder_dir: Path, tmp_path: Path) -> None:
    ensemble = build_model(ensemble_config())
    with pytest.raises(PipelineError, match=r"assembled .*stage `ensemble`.*train@<member>"):
        ensemble.fit(train_context(data_dir=image_folder_dir, work_dir=tmp_path, image_size=32))


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
    assert loaded.cam_target() is None  # no single feature map to explain


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
