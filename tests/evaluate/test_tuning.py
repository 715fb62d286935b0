"""Grid expansion, candidate configs and validation-only selection."""

import pandas as pd
import pytest

from pipeline.config import ConfigError, compose
from pipeline.evaluate.tuning import (
    apply_candidate,
    candidate_row,
    data_digest,
    expand_grid,
    fingerprint,
    finished_candidates,
    select,
)


def test_expand_grid_is_the_cartesian_product_in_grid_order():
    grid = {"models.svm_hog.C": [0.1, 1.0], "augment.multiplier": [1.0, 2.0, 3.0]}
    candidates = expand_grid(grid, "svm_hog")
    assert len(candidates) == 6
    assert candidates[0] == {"models.svm_hog.C": 0.1, "augment.multiplier": 1.0}
    assert candidates[-1] == {"models.svm_hog.C": 1.0, "augment.multiplier": 3.0}


@pytest.mark.parametrize(
    "grid, message",
    [
        ({}, "nothing to search"),
        ({"crop.size": [64, 96]}, "cannot be tuned inside a fold"),
        ({"models.resnet50.lr": [0.1]}, "cannot be tuned inside a fold"),  # another model
        ({"models.svm_hog.C": []}, "non-empty list"),
        ({"models.svm_hog.C": 0.1}, "non-empty list"),
    ],
)
def test_expand_grid_rejects_bad_grids_naming_the_key(grid, message):
    with pytest.raises(ConfigError, match=message):
        expand_grid(grid, "svm_hog")


def test_apply_candidate_changes_a_copy_and_validates():
    cfg = compose()
    tuned = apply_candidate(cfg, {"models.svm_hog.hog.color": "rgb", "augment.multiplier": 2.0})
    assert tuned.models.svm_hog.hog.color == "rgb" and tuned.augment.multiplier == 2.0
    assert cfg.models.svm_hog.hog.color != "rgb" or cfg.augment.multiplier != 2.0
    with pytest.raises(ConfigError, match="models.svm_hog.hog.colour"):
        apply_candidate(cfg, {"models.svm_hog.hog.colour": "rgb"})
    with pytest.raises(ConfigError, match="augment.multiplier"):
        apply_candidate(cfg, {"augment.multiplier": 0.5})  # out of range


def test_select_ranks_on_validation_only_and_breaks_ties_on_validation_loss():
    table = pd.DataFrame(
        {
            "val_accuracy_mean": [0.80, 0.90, 0.90, 0.70],
            "val_loss_mean": [0.30, 0.40, 0.35, 0.10],
            "accuracy_mean": [0.99, 0.70, 0.75, 1.00],  # test folds: must not matter
        }
    )
    assert select(table) == 2
    assert select(table.drop(columns="accuracy_mean")) == 2
    missing = table.assign(val_loss_mean=[None, None, None, None])
    assert select(missing) == 1  # equal accuracy, no loss: the earlier candidate
    with pytest.raises(ValueError):
        select(table.iloc[:0])


def test_tuning_table_names_the_selected_setting_without_the_model_prefix():
    from pipeline.report.sections import tuning_table

    winner = {
        "candidates": 4,
        "overrides": {"models.svm_hog.C": 0.1, "augment.multiplier": 2.0},
        "metrics": {
            "val_accuracy_mean": 0.9,
            "accuracy_mean": 0.85,
            "accuracy_std": 0.05,
            "accuracy": 0.85,
            "accuracy_ci_low": 0.8,
            "accuracy_ci_high": 0.9,
        },
    }
    row = tuning_table({("all_idb2", "svm_hog"): winner}).iloc[0]
    assert row["selected (by validation parts)"] == "C=0.1, augment.multiplier=2.0"
    assert row["candidates"] == 4 and row["Ac val parts"] == "90.0"
    assert row["Ac test folds mean ± std"] == "85.0 ± 5.0"
    assert row["Ac pooled"] == "85.0 [80.0–90.0]"


def test_fingerprint_changes_with_what_the_folds_depend_on_only(tmp_path):
    cfg = compose()
    base = fingerprint(cfg, "svm_hog", "data-a")
    assert fingerprint(cfg, "svm_hog", "data-a") == base
    changed = [
        fingerprint(apply_candidate(cfg, {"models.svm_hog.C": 123.0}), "svm_hog", "data-a"),
        fingerprint(apply_candidate(cfg, {"augment.multiplier": 3.0}), "svm_hog", "data-a"),
        fingerprint(apply_candidate(cfg, {"cv.repeats": 2}), "svm_hog", "data-a"),
        fingerprint(cfg, "svm_hog", "data-b"),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    other_model = apply_candidate(cfg, {"models.resnet50.epochs": 99})
    logging_only = apply_candidate(cfg, {"tracking.experiment_prefix": "elsewhere"})
    assert fingerprint(other_model, "svm_hog", "data-a") == base
    assert fingerprint(logging_only, "svm_hog", "data-a") == base

    path = tmp_path / "svm_hog.csv"
    assert finished_candidates(path) == {}
    row = candidate_row({"models.svm_hog.C": 1.0}, {"val_accuracy_mean": 0.9}, base)
    pd.DataFrame([row]).to_csv(path, index=False)
    reloaded = finished_candidates(path)
    assert reloaded[base]["val_accuracy_mean"] == 0.9 and reloaded[base]["roc_auc"] is None
    pd.DataFrame([row]).drop(columns="fingerprint").to_csv(path, index=False)
    assert finished_candidates(path) == {}  # a table without fingerprints is never reused


def test_data_digest_follows_the_image_bytes_not_only_the_manifest(tmp_path):
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        path.write_bytes(name.encode() * 10)
        paths.append(str(path))
    frame = pd.DataFrame(
        {"id": ["a", "b"], "label": ["all", "hem"], "group": ["a", "b"], "path": paths}
    )
    before = data_digest(frame)
    assert data_digest(frame) == before
    (tmp_path / "b.png").write_bytes(b"re-segmented")  # same manifest, other pixels
    assert data_digest(frame) != before
    assert data_digest(frame.assign(label=["hem", "hem"])) != data_digest(frame)
