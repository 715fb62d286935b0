import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.config import ConfigError
from pipeline.preprocess.split import (
    _acceptable,
    assign_splits,
    balanced_partition,
    check_split,
    grouped_folds,
    hold_out,
    split_summary,
)
from tests.conftest import section


def frame(n_subjects=40, per_subject=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = "all" if s % 3 else "hem"  # imbalanced 2:1, like C-NMC
        for i in range(rng.integers(1, per_subject + 1)):
            rows.append(
                {"id": f"s{s}_{i}", "label": label, "group": f"subject:{s}", "sha256": f"s{s}_{i}"}
            )
    return pd.DataFrame(rows)


SPLIT = section("split")


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


def skewed_subjects(hem=(404, 185, 162, 119, 108, 69, 47, 18, 18), seed=0) -> pd.DataFrame:
    """A C-NMC fold 0 look-alike: few healthy subjects of very unequal size, more ALL ones."""
    rng = np.random.default_rng(seed)
    all_sizes = rng.integers(9, 402, 19)
    rows = []
    for label, sizes in (("hem", hem), ("all", all_sizes)):
        for s, size in enumerate(sizes):
            rows += [
                {"id": f"{label}{s}_{i}", "label": label, "group": f"subject:{label}{s}",
                 "sha256": f"{label}{s}_{i}"}
                for i in range(int(size))
            ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_few_unequal_subjects_still_give_every_split_both_classes_near_80_10_10(seed):
    data = skewed_subjects(seed=seed)
    data["split"] = assign_splits(data, SPLIT, seed=seed).values
    check_split(data)
    for label, part in data.groupby("label"):
        share = part["split"].value_counts(normalize=True)
        assert share["train"] == pytest.approx(0.8, abs=0.06), label
        assert share["val"] == pytest.approx(0.1, abs=0.06), label
        assert share["test"] == pytest.approx(0.1, abs=0.06), label
    summary = split_summary(data, {"train": 0.8, "val": 0.1, "test": 0.1})
    assert summary["test_hem_groups"] >= 1 and summary["val_hem_groups"] >= 1


def test_scikit_learn_alone_would_leave_a_split_without_healthy_subjects():
    """Why the search exists: StratifiedGroupKFold's test fold of this layout misses a class
    or its share (this is what made the real fold 0 fail before)."""
    from pipeline.preprocess.split import _acceptable, _sgkf

    data = skewed_subjects()
    groups = data["group"]
    failures = 0
    for seed in range(10):
        _, held = next(_sgkf(data, groups, 10, seed))
        parts = np.zeros(len(data), int)
        parts[held] = 1
        failures += not _acceptable(data, parts, [0.9, 0.1], tolerance=0.25)
    assert failures > 0


def test_folds_of_few_unequal_subjects_each_hold_both_classes():
    data = skewed_subjects()
    for _, _, train, test in grouped_folds(data, folds=5, repeats=2, seed=0):
        assert set(data["label"].iloc[test]) == {"all", "hem"}
        assert not set(data["group"].iloc[train]) & set(data["group"].iloc[test])


def test_too_few_subjects_of_a_class_is_one_clear_error():
    data = skewed_subjects(hem=(50, 40))
    with pytest.raises(ConfigError, match=r"class 'hem' has 2 subjects .* fewer than the 3 parts"):
        balanced_partition(data, data["group"], [0.8, 0.1, 0.1], seed=0, what="the split")
    with pytest.raises(ConfigError, match=r"class 'hem' has 2 subjects"):
        grouped_folds(data, folds=5, repeats=1, seed=0)


def test_image_level_protocol_keeps_only_duplicates_together():
    data = skewed_subjects()
    data.loc[data.index[:2], "sha256"] = "same bytes"
    image_level = OmegaConf.merge(SPLIT, {"group_by": "none"})
    data["split"] = assign_splits(data, image_level, seed=0).values
    assert data.loc[data.index[:2], "split"].nunique() == 1
    spans = data.groupby("group")["split"].nunique()
    assert (spans > 1).any()  # subjects straddle splits: the leaky protocol, by request
    with pytest.raises(ConfigError, match="split.group_by"):
        assign_splits(data, OmegaConf.merge(SPLIT, {"group_by": "patient"}), seed=0)


def test_a_held_out_share_finer_than_the_classes_still_holds_both():
    """A CV fold's training part of 8 cells per class, with 1/9 held out for validation:
    scikit-learn refuses 9 folds of 8 cells ("n_splits=9 cannot be greater than the number of
    members in each class"); the search holds out about one cell of each class instead."""
    data = pd.DataFrame(
        {"id": [f"c{i}" for i in range(16)], "label": ["all", "hem"] * 8,
         "group": [f"cell:{i}" for i in range(16)]}
    )  # fmt: skip
    held = hold_out(data, data["group"], 1 / 9, seed=3, tolerance=0.25, what="the validation part")
    assert set(data.loc[held, "label"]) == {"all", "hem"}
    assert held.sum() < 8


def test_fewer_subjects_than_a_hold_out_needs_folds_is_a_split_or_one_clear_error():
    """1/10 held out asks scikit-learn for 10 grouped folds: with 8 subjects it refuses ("n_splits
    greater than the number of groups"); the search splits them, or names the short class."""
    data = frame(n_subjects=8, per_subject=6)
    held = hold_out(data, data["group"], 0.1, seed=0, tolerance=0.25, what="the test split")
    assert set(data.loc[held, "label"]) == {"all", "hem"}
    tiny = frame(n_subjects=4, per_subject=6)  # 2 subjects a class: too few for 3 parts
    with pytest.raises(ConfigError, match=r"class 'all' has 2 subjects .* fewer than the 3 parts"):
        assign_splits(tiny, SPLIT, seed=0)


def test_a_part_without_a_class_is_never_acceptable_whatever_the_tolerance():
    frame = pd.DataFrame({"label": ["all"] * 4 + ["hem"] * 4})
    parts = np.array([0, 0, 1, 1, 0, 0, 0, 0])  # part 1 has no healthy cell
    assert not _acceptable(frame, parts, [0.5, 0.5], tolerance=1.0)
    assert _acceptable(frame, np.array([0, 0, 1, 1, 0, 0, 1, 1]), [0.5, 0.5], tolerance=0.0)


def test_a_mixed_group_counts_for_its_majority_class():
    # duplicates labelled differently: group m is 3 healthy cells and 1 ALL cell, so it is a
    # healthy group; the healthy class then has 2 groups, enough for 2 parts
    frame = pd.DataFrame(
        {
            "label": ["hem", "hem", "hem", "hem", "hem", "hem", "all", "all", "all", "all"],
            "group": ["n1", "n1", "n1", "m", "m", "m", "m", "p1", "p1", "p2"],
        }
    )
    parts = balanced_partition(frame, frame["group"], [0.5, 0.5], seed=0, what="test")
    part_of = dict(zip(frame["group"], parts, strict=True))
    assert part_of["n1"] != part_of["m"] and part_of["p1"] != part_of["p2"]


def mixed_subjects(hem_subjects: int = 3) -> pd.DataFrame:
    """10 ALL subjects of 8 cells; the healthy cells sit in the first `hem_subjects` of them,
    one each (a patient with both kinds of cells, or one name used in both class folders)."""
    rows = [("all", f"subject:P{s}") for s in range(10) for _ in range(8)]
    rows += [("hem", f"subject:P{s}") for s in range(hem_subjects)]
    data = pd.DataFrame(rows, columns=["label", "group"])
    data["id"] = data["sha256"] = [f"c{i}" for i in range(len(data))]
    return data


def test_a_class_counted_over_the_whole_dataset_and_its_shared_subjects_named():
    # 2 healthy subjects, both shared with ALL: the error counts the dataset's 2, not what is
    # left after the test split, and says why a shared subject cannot help
    data = mixed_subjects(hem_subjects=2)
    with pytest.raises(ConfigError, match=r"class 'hem' has 2 subjects .*\(2 of them also hold"):
        assign_splits(data, SPLIT, seed=0)
    with pytest.raises(ConfigError, match=r"cannot make 5 folds: class 'hem' has 2 subjects"):
        grouped_folds(data, folds=5, repeats=1, seed=0)


def test_a_class_only_in_the_other_class_s_subjects_is_one_clear_error():
    """Its subjects count for ALL (their majority), so no part is kept for the healthy class:
    a ConfigError (printed as one line by the stage) naming the class, never a bare ValueError
    (a traceback)."""
    data = mixed_subjects(hem_subjects=3)
    with pytest.raises(ConfigError, match=r"'val/hem'.*class 'hem' lies in 3 groups, 3 of them"):
        data["split"] = assign_splits(data, SPLIT, seed=0).values
        check_split(data)
