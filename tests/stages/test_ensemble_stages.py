"""Stages ensemble_member / ensemble_cv_member and ensemble_cv: the CV ensemble averages the
members' own out-of-fold P(ALL), needs nothing of the single split, and refuses stale records."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from tests.workspace import ENSEMBLE_MEMBERS, make_workspace, run_stage

DATASET = "synthetic"


@pytest.fixture
def members_cv(tmp_path):
    """A workspace with 2-fold CV predictions of each default member and no trained model."""
    root = make_workspace(tmp_path, ["cv.folds=2", "evaluate.bootstrap_samples=50"])
    rows = pd.DataFrame(
        {
            "id": list("abcdefgh"),
            "label": ["all", "hem"] * 4,
            "group": list("abcdefgh"),
            "repeat": [0] * 8,
            "fold": [0] * 4 + [1] * 4,
            "part": ["val", "val", "test", "test"] * 2,
        }
    )
    rng = np.random.default_rng(0)
    for member in ENSEMBLE_MEMBERS:
        folder = root / paths.cv_dir(DATASET, member)
        folder.mkdir(parents=True)
        rows.assign(p_all=rng.uniform(size=len(rows))).to_csv(
            folder / "predictions.csv", index=False
        )
    return root


def record_cv_members(root) -> None:
    for member in ENSEMBLE_MEMBERS:
        assert run_stage(root, "ensemble_member", member, "cv") == 0


def test_the_cv_ensemble_is_the_mean_of_the_members_without_any_trained_model(members_cv):
    record_cv_members(members_cv)
    assert not (members_cv / "models").exists()
    assert run_stage(members_cv, "ensemble", "cv") == 0
    read = lambda name: pd.read_csv(  # noqa: E731
        members_cv / paths.cv_predictions(DATASET, name), dtype={"id": str}
    ).set_index(["id", "part"])["p_all"]
    expected = sum(read(m) for m in ENSEMBLE_MEMBERS) / len(ENSEMBLE_MEMBERS)
    combined = read("ensemble")
    pd.testing.assert_series_equal(combined.sort_index(), expected.sort_index())
    summary = json.loads((members_cv / paths.cv_metrics(DATASET, "ensemble")).read_text())
    assert summary["enabled"] and summary["n"] == 4  # the test-fold rows, pooled
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["tags.dvc_stage"]) == ["ensemble_cv"]  # findable by its DVC stage


def test_a_member_whose_cv_changed_since_its_record_is_refused(members_cv, capsys):
    record_cv_members(members_cv)
    changed = members_cv / paths.cv_predictions(DATASET, "svm_hog")
    changed.write_text(changed.read_text().replace("0.", "0.0", 1))
    assert run_stage(members_cv, "ensemble", "cv") == 1
    assert "svm_hog: its outputs changed since" in capsys.readouterr().err
    assert not (members_cv / paths.cv_metrics(DATASET, "ensemble")).exists()


@pytest.mark.parametrize("stage", ["ensemble", "ensemble_member"])
def test_an_unknown_ensemble_part_is_named(members_cv, capsys, stage):
    args = ["bogus"] if stage == "ensemble" else ["svm_hog", "bogus"]
    assert run_stage(members_cv, stage, *args) == 1
    assert "unknown ensemble part 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("part", ["split", "cv"])
def test_an_unfinished_member_folder_is_not_recorded(members_cv, capsys, part):
    """An empty or half-copied folder (a crashed copy, a DVC checkout of another stage)."""
    if part == "cv":
        (members_cv / paths.cv_predictions(DATASET, "svm_hog")).unlink()
    else:
        (members_cv / paths.model_dir(DATASET, "svm_hog")).mkdir(parents=True)
    assert run_stage(members_cv, "ensemble_member", "svm_hog", part) == 1
    produced_by = {"split": "train", "cv": "cv"}[part]
    assert f"`dvc repro {produced_by}@svm_hog` first" in capsys.readouterr().err
    assert not (members_cv / paths.ensemble_record(DATASET, part, "svm_hog")).exists()
