"""The real C-NMC 2019 fold 0 in ../shared/data (skipped where it is absent, e.g. a user's
clone): the adapter reads it, and neither the split nor the CV folds let a subject straddle."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import build_manifest
from pipeline.evaluate.crossval import make_folds
from pipeline.preprocess.split import assign_splits, check_split
from tests.conftest import real_data, section

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def fold0(tmp_path_factory):
    root = real_data("C-NMC")
    dataset = {"name": "cnmc", "adapter": "cnmc", "root": str(root), "folds": [0]}
    frame, problems = build_manifest(dataset, tmp_path_factory.mktemp("cnmc"))
    assert problems == []
    return frame


def test_fold0_counts_and_subjects(fold0):
    assert fold0["label"].value_counts().to_dict() == {"all": 2397, "hem": 1130}
    subjects = fold0.groupby("label")["group"].nunique().to_dict()
    assert subjects == {"all": 19, "hem": 9}  # 28 subjects; no duplicate joins two of them
    assert fold0["group"].str.startswith("subject:").all()
    assert all(path.endswith(".png") for path in fold0["path"])


def test_the_default_split_keeps_subjects_whole_and_holds_both_classes(fold0):
    frame = fold0.assign(split=assign_splits(fold0, section("split"), 42).values)
    check_split(frame)  # no subject spans splits; every split/class combination present
    for label, part in frame.groupby("label"):
        share = part["split"].value_counts(normalize=True)
        assert share["train"] == pytest.approx(0.8, abs=0.1), label
        assert part[part["split"] == "test"]["group"].nunique() >= 1


def test_five_grouped_folds_give_every_fold_a_subject_of_each_class(fold0):
    folds = make_folds(fold0, folds=5, repeats=1, seed=42, val_fraction=1 / 9)
    tested = np.zeros(len(fold0), int)
    for fold in folds:
        frame = fold0.assign(split=fold.split)
        check_split(frame)
        tested += fold.split == "test"
        healthy = frame[(frame["split"] == "test") & (frame["label"] == "hem")]
        assert healthy["group"].nunique() >= 1  # 9 healthy subjects of 18-404 cells in 5 folds
        # as even as the subjects allow: ~226 healthy cells a fold, or one subject H24 alone
        assert 150 <= len(healthy) <= 404
    assert (tested == 1).all()


def test_the_unseen_folds_config_shares_nothing_with_fold0_or_names_what_is_missing(
    fold0, tmp_path
):
    """conf/dataset/cnmc_unseen.yaml (folds 1 and 2, the cross-dataset target for new
    patients): where they sit beside fold 0, no subject or image of theirs is in fold 0;
    where they do not (../shared holds fold 0 only), the error names each missing fold."""
    from pipeline.config import compose
    from pipeline.io import BadInputError

    dataset = compose(["dataset=cnmc_unseen"]).dataset
    dataset.root = str(real_data("C-NMC"))
    training = real_data("C-NMC", "training_data")
    if not all((training / f"fold_{fold}").is_dir() for fold in dataset.folds):
        with pytest.raises(BadInputError) as info:
            build_manifest(dataset, tmp_path)
        for fold in dataset.folds:
            if not (training / f"fold_{fold}").is_dir():
                assert f"fold_{fold}: fold requested by dataset.folds is missing" in str(info.value)
        return
    unseen, _ = build_manifest(dataset, tmp_path)
    assert not set(unseen["group"]) & set(fold0["group"])
    assert not set(unseen["sha256"]) & set(fold0["sha256"])
