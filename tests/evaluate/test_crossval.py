import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import manifest
from pipeline.config import ConfigError
from pipeline.evaluate.cross_dataset import target_dataset
from pipeline.evaluate.crossval import (
    ensemble_cv,
    make_folds,
    summarise_cv,
    write_fold_dataset,
)
from pipeline.evaluate.metrics import summarise_folds
from pipeline.io import write_image
from tests.conftest import section


def frame(n_subjects=40, seed=0):
    """Imbalanced (2:1) subjects with 1-4 images each, two subjects sharing a duplicate."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = "all" if s % 3 else "hem"
        for i in range(rng.integers(1, 5)):
            rows.append({"id": f"s{s}_{i}", "label": label, "group": f"subject:{s}"})
    data = pd.DataFrame(rows)
    data.loc[data["group"].isin(["subject:1", "subject:2"]), "group"] = "dup:1"
    return data


def test_no_group_spans_train_val_and_test_in_any_fold():
    data = frame()
    for fold in make_folds(data, folds=5, repeats=2, seed=0, val_fraction=0.11):
        spans = data.assign(split=fold.split).groupby("group")["split"].nunique()
        assert (spans == 1).all()
        assert set(fold.split) == {"train", "val", "test"}


def test_each_repeat_tests_every_image_exactly_once():
    data = frame()
    folds = make_folds(data, folds=4, repeats=3, seed=1, val_fraction=0.2)
    assert len(folds) == 12
    for repeat in range(3):
        tested = np.concatenate([f.split == "test" for f in folds if f.repeat == repeat])
        counts = np.stack([f.split == "test" for f in folds if f.repeat == repeat]).sum(axis=0)
        assert tested.sum() == len(data) and (counts == 1).all()


def test_test_and_validation_parts_are_stratified():
    data = frame(n_subjects=150)
    overall = (data["label"] == "all").mean()
    for fold in make_folds(data, folds=5, repeats=1, seed=2, val_fraction=0.11):
        for part in ("test", "val"):
            share = (data.loc[fold.split == part, "label"] == "all").mean()
            assert share == pytest.approx(overall, abs=0.12)
        assert (fold.split == "val").mean() == pytest.approx(0.8 * 0.11, abs=0.04)


def test_same_seed_same_folds_other_seed_other_folds():
    data = frame()
    a = make_folds(data, folds=5, repeats=2, seed=3, val_fraction=0.11)
    b = make_folds(data, folds=5, repeats=2, seed=3, val_fraction=0.11)
    c = make_folds(data, folds=5, repeats=2, seed=4, val_fraction=0.11)
    assert all((x.split == y.split).all() for x, y in zip(a, b, strict=True))
    assert any((x.split != y.split).any() for x, y in zip(a, c, strict=True))


def test_repeats_reshuffle_the_folds():
    folds = make_folds(frame(), folds=3, repeats=2, seed=0, val_fraction=0.2)
    assert any((x.split != y.split).any() for x, y in zip(folds[:3], folds[3:], strict=True))


@pytest.mark.parametrize("folds,repeats", [(1, 1), (-1, 1), (5, 0), (500, 1)])
def test_bad_fold_settings_fail_naming_the_key(folds, repeats):
    with pytest.raises(ConfigError, match="cv.folds"):
        make_folds(frame(), folds=folds, repeats=repeats, seed=0, val_fraction=0.1)


def test_fold_folder_augments_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    data = frame(n_subjects=20)
    paths = []
    for image_id in data["id"]:
        path = tmp_path / "src" / f"{image_id}.png"
        write_image(path, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        paths.append(str(path))
    data = data.assign(path=paths, source=paths, sha256=data["id"])
    fold = make_folds(data, folds=4, repeats=1, seed=0, val_fraction=0.2)[0]
    augment = section("augment", multiplier=2.0, splits=["train", "val", "test"])
    out = write_fold_dataset(data, fold, tmp_path / "fold", augment, seed=0)
    written = {
        split: sorted(p.stem for p in (out / split).rglob("*.png")) for split in ("train", "val")
    }
    assert not (out / "test").exists()
    ids = data["id"].to_numpy()
    assert written["val"] == sorted(ids[fold.split == "val"])  # originals only
    train_ids = set(ids[fold.split == "train"])
    assert len(written["train"]) == 2 * len(train_ids)
    assert {name.split("__")[0] for name in written["train"]} == train_ids
    for split in ("train", "val"):
        for label in ("all", "hem"):
            for path in (out / split / label).glob("*.png"):
                assert data.set_index("id").at[path.stem.split("__")[0], "label"] == label
    # the folder's manifest gives every written file its subject (train.subject_balance)
    listed = manifest.read(out / "manifest.csv").set_index("id")
    on_disk = sorted(p.stem for p in out.rglob("*.png"))
    assert sorted(listed.index) == on_disk
    sources = listed.index.str.split("__").str[0]
    assert (listed["group"].to_numpy() == data.set_index("id").loc[sources, "group"]).all()


def test_summary_pools_repeats_per_image_and_summarises_folds():
    predictions = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"] * 2 + ["e", "f"],
            "label": ["all", "all", "hem", "hem"] * 2 + ["all", "hem"],
            "group": ["a", "b", "c", "d"] * 2 + ["e", "f"],
            "repeat": [0] * 4 + [1] * 4 + [0, 0],
            "fold": [0, 1, 0, 1] * 2 + [0, 0],
            "part": ["test"] * 8 + ["val", "val"],  # validation rows never enter the pool
            "p_all": [0.9, 0.4, 0.2, 0.6, 0.7, 0.8, 0.1, 0.3, 0.0, 1.0],
        }
    )
    per_fold = [{"accuracy": 1.0, "n": 2}, {"accuracy": 0.5, "n": 2}]
    summary = summarise_cv(predictions, per_fold, folds=2, repeats=2, n_boot=50, seed=0)
    # pooled P(ALL): a .8, b .6, c .15, d .45 -> all correct
    assert summary["n"] == 4 and summary["accuracy"] == 1.0
    assert summary["accuracy_mean"] == summarise_folds(per_fold)["accuracy_mean"]
    assert summary["enabled"] and summary["folds"] == 2 and summary["repeats"] == 2


def test_unknown_cross_target_names_the_known_datasets():
    with pytest.raises(ConfigError, match="synthetic_cnmc"):
        target_dataset("no_such_dataset")


def test_cross_target_root_can_be_overridden():
    assert target_dataset("all_idb2", {"all_idb2": "/x/y"}).root == "/x/y"
    assert target_dataset("synthetic_cnmc").segment is False


def test_the_ensemble_cv_is_the_mean_of_the_members_and_top_k_chooses_on_validation(cfg):
    rows = {
        "id": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "label": ["all", "hem"] * 4,
        "group": list("abcdefgh"),
        "repeat": [0] * 8,
        "fold": [0, 0, 0, 0, 1, 1, 1, 1],
        "part": ["val", "val", "test", "test"] * 2,
    }
    base = pd.DataFrame(rows)
    good = base.assign(p_all=[0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4])  # right on validation
    bad = base.assign(p_all=[0.1, 0.9, 0.9, 0.1, 0.2, 0.8, 0.9, 0.1])  # wrong on validation
    mid = base.assign(p_all=[0.6, 0.4, 0.1, 0.9, 0.6, 0.4, 0.2, 0.7])
    cfg.cv.folds, cfg.evaluate.bootstrap_samples = 2, 50
    members = {"good": good, "bad": bad, "mid": mid}
    summary, combined, record = ensemble_cv(members, None, None, cfg)
    expected = (good["p_all"] + bad["p_all"] + mid["p_all"]) / 3
    merged = combined.merge(base.assign(expected=expected), on=["id", "part"])
    np.testing.assert_allclose(merged["p_all"], merged["expected"])
    assert summary["selection"] == "fixed" and record["pool"] == ["good", "bad", "mid"]
    # top_k=2: per fold, the two best on that fold's validation rows; the test fold never counts
    summary, combined, record = ensemble_cv(members, None, 2, cfg)
    assert summary["selection"] == "nested"
    assert [c["members"] for c in record["chosen"]] == [["good", "mid"], ["good", "mid"]]
    test = combined[combined["part"] == "test"].set_index("id")["p_all"]
    np.testing.assert_allclose(test["c"], (0.8 + 0.1) / 2)
    # without validation rows top_k cannot choose: the error names the key and the members
    tests_only = {name: table[table["part"] == "test"] for name, table in members.items()}
    with pytest.raises(ConfigError, match=r"ensemble.top_k=2 .*\['good', 'bad', 'mid'\]"):
        ensemble_cv(tests_only, None, 2, cfg)


COMMITTED_CV = Path(__file__).resolve().parents[2] / "reports" / "cv"


@pytest.mark.parametrize(
    "dataset",
    sorted(
        p.parent.parent.name
        for p in COMMITTED_CV.glob("*/ensemble/selection.json")
        if "chosen" in json.loads(p.read_text())
    ),
)
def test_committed_ensemble_cv_is_the_mean_of_its_members_committed_predictions(dataset):
    """Every committed CV ensemble averages, fold by fold, the committed out-of-fold P(ALL) of
    the members its record names: fails when a member's CV is re-run and committed without
    re-running ensemble_cv (or the other way round)."""
    folder = COMMITTED_CV / dataset
    record = json.loads((folder / "ensemble" / "selection.json").read_text())
    keys = ["id", "repeat", "fold", "part"]

    def p_all(name: str) -> pd.Series:
        table = pd.read_csv(folder / name / "predictions.csv", dtype={"id": str})
        return table.set_index(keys)["p_all"].sort_index()

    ensemble = p_all("ensemble")
    members = {name: p_all(name) for name in record["pool"]}
    fixed = record["selection"] == "fixed" and record.get("weights")  # top_k: equal weights
    weights = dict(zip(record["pool"], fixed or [1.0] * len(record["pool"]), strict=True))
    for chosen in record["chosen"]:
        fold = ensemble.xs((chosen["repeat"], chosen["fold"]), level=["repeat", "fold"])
        w = np.array([weights[m] for m in chosen["members"]])
        stacked = np.stack(
            [
                members[m]
                .xs((chosen["repeat"], chosen["fold"]), level=["repeat", "fold"])
                .reindex(fold.index)
                .to_numpy()
                for m in chosen["members"]
            ]
        )
        np.testing.assert_allclose(fold.to_numpy(), (w / w.sum()) @ stacked, rtol=1e-12)


def test_image_level_folds_are_warned_about_and_subject_grouped_ones_are_not(caplog):
    data = frame()
    data["sha256"] = data["id"]  # image-level grouping keeps only byte-identical files together
    with caplog.at_level("WARNING", logger="pipeline.evaluate.crossval"):
        make_folds(data, folds=3, repeats=1, seed=0, val_fraction=0.2)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="pipeline.evaluate.crossval"):
        make_folds(data, folds=3, repeats=1, seed=0, val_fraction=0.2, group_by="none")
    assert "image-level protocol" in caplog.text


def test_cv_scores_with_the_evaluate_stages_settings_collapse_share_included(cfg):
    """A CV flagged `collapsed` by another share than the test split's would disagree with it."""
    from omegaconf import OmegaConf

    from pipeline.evaluate.metrics import metrics_args

    changed = OmegaConf.merge(cfg, {"evaluate": {"collapse_share": 0.3}, "seed": 5})
    assert metrics_args(changed) == {
        "n_boot": cfg.evaluate.bootstrap_samples,
        "confidence": cfg.evaluate.confidence,
        "seed": 5,
        "collapse_share": 0.3,
    }


def test_validation_row_calls_a_p_all_of_exactly_the_threshold_all():
    from pipeline.evaluate.crossval import validation_row

    rows = pd.DataFrame({"part": ["val", "val", "test"], "label": ["all", "hem", "hem"],
                         "p_all": [0.5, 0.2, 0.9]})  # fmt: skip
    assert validation_row(rows)["val_accuracy"] == 1.0


def test_a_summary_from_predictions_reads_each_folds_validation_rows():
    from pipeline.evaluate.crossval import summary_from_predictions

    predictions = pd.DataFrame(
        {
            "id": list("abcdefgh"),
            "label": ["all", "hem", "all", "hem"] * 2,
            "group": list("abcdefgh"),
            "repeat": [0] * 8,
            "fold": [0] * 4 + [1] * 4,
            "part": ["test", "test", "val", "val"] * 2,
            "p_all": [0.9, 0.1, 0.8, 0.7, 0.9, 0.1, 0.8, 0.2],
        }
    )
    summary = summary_from_predictions(predictions, folds=2, repeats=1, n_boot=20, seed=0)
    assert summary["val_accuracy_mean"] == pytest.approx(0.75)  # fold 0: 1/2, fold 1: 2/2
    assert summary["n"] == 4


def test_a_fold_without_a_class_stays_a_config_error_naming_the_fold():
    # healthy cells only inside 4 of 10 ALL subjects: a test fold gets none of them; the fold
    # is named and the error keeps its type (one line from the stage, not a traceback)
    rows = [("all", f"subject:P{s}") for s in range(10) for _ in range(8)]
    rows += [("hem", f"subject:P{s}") for s in range(4)]
    data = pd.DataFrame(rows, columns=["label", "group"])
    data["id"] = data["sha256"] = [f"c{i}" for i in range(len(data))]
    with pytest.raises(ConfigError, match=r"cv repeat 0 fold \d: .*'test/hem'.*lies in 4 groups"):
        make_folds(data, folds=3, repeats=1, seed=0, val_fraction=0.2)
