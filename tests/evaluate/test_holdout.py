"""Which MLflow run the evaluate stage logs a model's test metrics into."""

from __future__ import annotations

import json

import pytest

from pipeline import paths, tracking
from pipeline.evaluate.holdout import training_run

DATASET, MODEL = "synthetic", "svm_hog"


@pytest.fixture
def runs(cfg, tmp_path, monkeypatch) -> dict[str, str]:
    """Two training runs of the same model bytes (digest "d"), the newer one last, and a run
    of another model (digest "e"); run ids by name."""
    monkeypatch.chdir(tmp_path)
    made = {}
    for name, digest in (("older", "d"), ("newer", "d"), ("other", "e")):
        with tracking.start_run(cfg, dataset=DATASET, model=MODEL, stage=f"train@{MODEL}") as run:
            tracking.set_tags({tracking.MODEL_DIGEST_TAG: digest})
        made[name] = run.info.run_id
    return made


def record(run_id: str) -> None:
    target = paths.training_run(DATASET, MODEL)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"run_id": run_id, "model_digest": "d"}))


def test_the_recorded_run_wins_over_a_newer_run_of_the_same_model(cfg, runs):
    record(runs["older"])
    assert training_run(cfg, DATASET, MODEL, "d") == runs["older"]


def test_without_a_record_the_newest_run_of_the_model_digest(cfg, runs):
    assert training_run(cfg, DATASET, MODEL, "d") == runs["newer"]


@pytest.mark.parametrize("recorded", ["not-in-this-store", "other"])
def test_a_record_of_another_store_or_model_falls_back_to_the_digest(cfg, runs, recorded):
    record(runs.get(recorded, recorded))
    assert training_run(cfg, DATASET, MODEL, "d") == runs["newer"]


def test_no_run_of_the_model_anywhere(cfg, runs):
    record(runs["other"])
    assert training_run(cfg, DATASET, MODEL, "f") is None
