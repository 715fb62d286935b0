import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.preprocess.split import assign_splits, check_split, grouped_folds
from pipeline.schema import SplitConfig


def frame(n_subjects=40, per_subject=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = "all" if s % 3 else "hem"  # imbalanced 2:1, like C-NMC
        for i in range(rng.integers(1, per_subject + 1)):
            rows.append({"id": f"s{s}_{i}", "label": label, "group": f"subject:{s}"})
    return pd.DataFrame(rows)


SPLIT = OmegaConf.structured(SplitConfig())


def test_groups_never_span_splits_and_every_split_has_both_classes():
    data = frame()
    data["split"] = assign_splits(data, SPLIT, seed=1).values
    check_split(data)  # raises on leakage


def test_split_is_stratified_and_near_80_10_10():
    data = frame(n_subjects=200, per_subject=1)
    data["split"] = assign_splits(data, SPLIT, seed=3).values
    share = data["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["test"] == pytest.approx(0.1, abs=0.03)
    overall = (data["label"] == "all").mean()
    for _, part in data.groupby("split"):
        assert (part["label"] == "all").mean() == pytest.approx(overall, abs=0.08)


def test_same_seed_same_split_other_seed_other_split():
    data = frame()
    a = assign_splits(data, SPLIT, seed=5)
    assert a.equals(assign_splits(data, SPLIT, seed=5))
    assert not a.equals(assign_splits(data, SPLIT, seed=6))


def test_duplicates_sharing_a_group_stay_together():
    data = frame(n_subjects=60, per_subject=1)
    data.loc[data.index[:2], "group"] = "dup"  # two images with identical bytes
    data["split"] = assign_splits(data, SPLIT, seed=0).values
    assert data.loc[data.index[:2], "split"].nunique() == 1


def test_check_split_detects_leakage():
    data = pd.DataFrame(
        {
            "id": list("abcdef"),
            "label": ["all", "hem"] * 3,
            "group": ["g", "g", "h", "i", "j", "k"],
            "split": ["train", "test", "train", "val", "test", "val"],
        }
    )
    with pytest.raises(ValueError, match="leakage"):
        check_split(data)


def test_cv_folds_are_grouped_stratified_and_cover_everything_once_per_repeat():
    data = frame()
    folds = grouped_folds(data, folds=5, repeats=2, seed=0)
    assert len(folds) == 10
    for repeat in range(2):
        tests = np.concatenate([t for r, _, _, t in folds if r == repeat])
        assert sorted(tests) == list(range(len(data)))
    for _, _, train, test in folds:
        assert not set(data["group"].iloc[train]) & set(data["group"].iloc[test])
