"""A killed CV resumes at its first unfinished fold, never reuses a stale one, and folds
trained apart (shards, another machine) give the CV of one machine."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError
from pipeline.evaluate import crossval
from pipeline.evaluate.fold_store import FoldStore, FoldStoreError
from pipeline.io import write_image
from pipeline.stages.cv import parse_fold_numbers
from tests.evaluate.test_crossval import frame as subject_frame

FOLDS = 3


class Killed(RuntimeError):
    pass


class FakeTraining:
    """Stands in for `fit_predict_fold`: seeded P(ALL) per (fold, C), counts its calls, and
    dies like a killed process on call number `die_at`."""

    def __init__(self, die_at: int | None = None) -> None:
        self.calls = 0
        self.die_at = die_at

    def __call__(self, frame, fold, model_config, cfg, work_dir, on_epoch=None):
        self.calls += 1
        if self.calls == self.die_at:
            raise Killed(f"killed in {fold.name}")
        seed = [fold.repeat, fold.fold, int(1000 * model_config["C"])]
        p_all = np.random.default_rng(seed).random(int((fold.split != "train").sum()))
        history = [{"epoch": 1, "val_accuracy": float(p_all.mean()), "val_loss": 0.5}]
        if on_epoch is not None:
            on_epoch(1, history[0])
        return crossval.fold_predictions(frame, fold, p_all), history


@pytest.fixture
def images(tmp_path, monkeypatch):
    """A grouped frame with real image files (their bytes are part of a fold's key)."""
    monkeypatch.chdir(tmp_path)
    data = subject_frame(n_subjects=24)
    rng = np.random.default_rng(0)
    data["path"] = [str(tmp_path / "src" / f"{image_id}.png") for image_id in data["id"]]
    for path in data["path"]:
        write_image(path, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    return data


@pytest.fixture
def cv_cfg(cfg):
    cfg.cv.folds = FOLDS
    cfg.evaluate.bootstrap_samples = 50
    return cfg


def run_cv(data, cfg, training, monkeypatch, candidates=({},)):
    monkeypatch.setattr(crossval, "fit_predict_fold", training)
    return crossval.cross_validate(data, cfg, "svm_hog", "cv svm_hog", candidates=candidates)


def store_dir(cfg):
    return paths.cv_fold_store(cfg.dataset.name, "svm_hog")


@pytest.mark.parametrize("candidates", [({},), ({"models.svm_hog.C": 0.1}, {})])
def test_a_killed_cv_resumes_to_the_uninterrupted_result(images, cv_cfg, monkeypatch, candidates):
    trainings = FOLDS * len(candidates)
    reference = FakeTraining()
    summary, predictions = run_cv(images, cv_cfg, reference, monkeypatch, candidates)
    assert reference.calls == trainings and not store_dir(cv_cfg).exists()

    with pytest.raises(Killed):
        run_cv(images, cv_cfg, FakeTraining(die_at=trainings), monkeypatch, candidates)
    assert len(list(store_dir(cv_cfg).glob("*.json"))) == trainings - 1

    resumed = FakeTraining()
    summary_resumed, predictions_resumed = run_cv(images, cv_cfg, resumed, monkeypatch, candidates)
    assert resumed.calls == 1  # only the (fold, candidate) the kill interrupted
    pd.testing.assert_frame_equal(predictions_resumed, predictions)  # bit for bit
    assert summary_resumed == summary
    assert not store_dir(cv_cfg).exists()  # a completed CV leaves nothing to reuse


def test_resumed_folds_are_tagged_and_keep_their_curves(images, cv_cfg, monkeypatch):
    import mlflow

    with pytest.raises(Killed):
        run_cv(images, cv_cfg, FakeTraining(die_at=FOLDS), monkeypatch)
    run_cv(images, cv_cfg, FakeTraining(), monkeypatch)
    runs = mlflow.search_runs(search_all_experiments=True)
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    newest_parent = runs[runs["tags.mlflow.parentRunId"].isna()].sort_values("start_time")
    latest = children[children["tags.mlflow.parentRunId"] == newest_parent.iloc[-1]["run_id"]]
    assert (latest["tags.resumed"] == "true").sum() == FOLDS - 1
    assert latest["metrics.val_accuracy"].notna().all()


@pytest.mark.parametrize(
    "change",
    ["models.svm_hog.C", "seed", "image bytes"],
)
def test_nothing_stale_is_reused(images, cv_cfg, monkeypatch, change):
    with pytest.raises(Killed):
        run_cv(images, cv_cfg, FakeTraining(die_at=FOLDS), monkeypatch)
    stored = sorted(store_dir(cv_cfg).glob("*.json"))
    assert len(stored) == FOLDS - 1
    if change == "models.svm_hog.C":
        cv_cfg.models.svm_hog.C = 0.5
    elif change == "seed":
        cv_cfg.seed = cv_cfg.seed + 1
    else:
        write_image(images["path"].iloc[0], np.zeros((8, 8, 3), np.uint8))
    training = FakeTraining()
    run_cv(images, cv_cfg, training, monkeypatch)
    assert training.calls == FOLDS  # every fold trained again
    assert sorted(store_dir(cv_cfg).glob("*.json")) == stored  # other settings' entries kept


def test_an_unreadable_entry_is_trained_again_not_trusted(images, cv_cfg, monkeypatch, caplog):
    with pytest.raises(Killed):
        run_cv(images, cv_cfg, FakeTraining(die_at=FOLDS), monkeypatch)
    broken = sorted(store_dir(cv_cfg).glob("*.json"))[0]
    broken.write_text('{"predictions": {"id": [')  # e.g. a disk that filled up mid-write
    training = FakeTraining()
    with caplog.at_level(logging.WARNING):
        run_cv(images, cv_cfg, training, monkeypatch)
    assert training.calls == 2
    assert str(broken) in caplog.text


def test_entries_round_trip_exactly_and_clear_removes_only_its_own(tmp_path):
    store = FoldStore(tmp_path / "store")
    predictions = pd.DataFrame(
        {
            "id": ["a", "b"],
            "label": ["all", "hem"],
            "group": ["subject:1", "subject:2"],
            "repeat": [0, 0],
            "fold": [1, 1],
            "part": ["val", "test"],
            "p_all": [1 / 3, np.nextafter(0.5, 1.0)],
        }
    )
    history = [{"epoch": 1, "val_accuracy": 0.5, "val_loss": float("nan")}]
    store.save("mine", predictions, history)
    (tmp_path / "store" / "other.json").write_text(json.dumps({"predictions": {}}))
    loaded, loaded_history = FoldStore(tmp_path / "store").load("mine")
    pd.testing.assert_frame_equal(loaded, predictions)
    assert loaded_history[0]["epoch"] == 1 and np.isnan(loaded_history[0]["val_loss"])
    store.clear()
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["other.json"]


def shard(data, cfg, training, monkeypatch, fold_numbers, candidates=({},)):
    monkeypatch.setattr(crossval, "fit_predict_fold", training)
    return crossval.train_fold_shard(data, cfg, "svm_hog", fold_numbers, candidates)


@pytest.mark.parametrize("candidates", [({},), ({"models.svm_hog.C": 0.1}, {})])
def test_folds_trained_as_shards_give_the_cv_of_one_machine(
    images, cv_cfg, monkeypatch, tmp_path, candidates
):
    reference = run_cv(images, cv_cfg, FakeTraining(), monkeypatch, candidates)
    monkeypatch.setenv("ALL_DETECT_CV_STORE", str(tmp_path / "shared"))
    first, second = FakeTraining(), FakeTraining()
    store = shard(images, cv_cfg, first, monkeypatch, [0], candidates)
    shard(images, cv_cfg, second, monkeypatch, [2, 1], candidates)
    assert store == tmp_path / "shared" / cv_cfg.dataset.name / "svm_hog"
    assert first.calls == len(candidates) and second.calls == 2 * len(candidates)
    assert len(list(store.glob("*.json"))) == FOLDS * len(candidates)

    gather = FakeTraining()
    summary, predictions = run_cv(images, cv_cfg, gather, monkeypatch, candidates)
    assert gather.calls == 0  # every fold came from the shards: only selection and scoring
    pd.testing.assert_frame_equal(predictions, reference[1])
    assert summary == reference[0]
    assert not store.exists()


def test_a_shard_scores_nothing_and_writes_only_the_store(images, cv_cfg, monkeypatch):
    store = shard(images, cv_cfg, FakeTraining(), monkeypatch, [1])
    assert [p.suffix for p in store.iterdir()] == [".json"]
    assert not paths.cv_metrics(cv_cfg.dataset.name, "svm_hog").exists()
    assert not paths.cv_dir(cv_cfg.dataset.name, "svm_hog").exists()


@pytest.mark.parametrize("whole_cv", [True, False])
def test_an_unwritable_store_fails_before_any_fold_trains(
    images, cv_cfg, monkeypatch, tmp_path, whole_cv
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("ALL_DETECT_CV_STORE", str(blocker / "store"))
    training = FakeTraining()
    with pytest.raises(FoldStoreError, match=rf"{blocker}.*ALL_DETECT_CV_STORE.*cannot be written"):
        if whole_cv:
            run_cv(images, cv_cfg, training, monkeypatch)
        else:
            shard(images, cv_cfg, training, monkeypatch, [0])
    assert training.calls == 0


@pytest.mark.parametrize("numbers", [[FOLDS], [-1], []])
def test_a_fold_number_outside_the_cv_is_named(images, cv_cfg, monkeypatch, numbers):
    with pytest.raises(ConfigError, match=rf"0\.\.{FOLDS - 1}"):
        shard(images, cv_cfg, FakeTraining(), monkeypatch, numbers)


def test_entries_from_other_crops_are_named_and_retrained(images, cv_cfg, monkeypatch, caplog):
    shard(images, cv_cfg, FakeTraining(), monkeypatch, [0, 1])  # the crops of "another machine"
    write_image(images["path"].iloc[0], np.zeros((8, 8, 3), np.uint8))
    training = FakeTraining()
    with caplog.at_level(logging.WARNING):
        run_cv(images, cv_cfg, training, monkeypatch)
    assert training.calls == FOLDS
    assert "2 entries" in caplog.text and "match no fold of this CV" in caplog.text


@pytest.mark.parametrize("word", ["fold1", "-1", "1.5"])
def test_the_stage_names_a_word_that_is_not_a_fold_number(word):
    with pytest.raises(ConfigError, match=word):
        parse_fold_numbers(("0", word))
    assert parse_fold_numbers(("0", "3")) == [0, 3]
