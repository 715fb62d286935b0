"""choose_upstream: the nested choice of an upstream setting from published CV runs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from pipeline import config, paths
from pipeline.evaluate import crossval
from pipeline.io import dvc_dir_md5
from pipeline.stages import choose_upstream

REPO = Path(__file__).parents[2]
FOLDS = 3


def _rows() -> pd.DataFrame:
    """3 folds of 4 test and 4 validation cells each, 2 subjects per part, both classes."""
    rows = []
    for fold in range(FOLDS):
        for part in ("test", "val"):
            for i in range(4):
                cell = f"f{fold}{part}{i}"
                label = "all" if i % 2 == 0 else "hem"
                group = f"subject:{fold}{part}{i // 2}"
                rows.append((cell, label, group, 0, fold, part, 0))
    return pd.DataFrame(rows, columns=crossval.WRITTEN_COLUMNS[:-1])


def _right(rows: pd.DataFrame) -> np.ndarray:
    return np.where(rows["label"] == "all", 0.9, 0.1)


def _alternating(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two P(ALL) columns: the first right on the validation parts of folds 0 and 2, the second
    on fold 1's; on the test folds the other way round."""
    right, wrong = _right(rows), 1 - _right(rows)
    val, fold1 = (rows["part"] == "val").to_numpy(), (rows["fold"] == 1).to_numpy()
    return (
        np.where(val, np.where(fold1, wrong, right), np.where(fold1, right, wrong)),
        np.where(val, np.where(fold1, right, wrong), np.where(fold1, wrong, right)),
    )


def write_snapshot(
    folder: Path,
    model: str,
    crop_rule: str,
    p_all: np.ndarray,
    seed: int = 42,
    rows=None,
    overrides=(),
) -> Path:
    """A snapshot as `pipeline.stages.snapshot` writes one: params, a lock whose cv@<model>
    records the md5 of the copied predictions folder, and that folder."""
    rows = _rows() if rows is None else rows
    base = ["cv.folds=3", f"seed={seed}", "evaluate.bootstrap_samples=50", *overrides]
    cfg = config.compose(base)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(config.to_yaml(cfg))
    cv_dir = folder / "cv" / model
    cv_dir.mkdir(parents=True)
    rows.assign(p_all=p_all).to_csv(cv_dir / "predictions.csv", index=False)
    (cv_dir / "subjects.csv").write_text("group\n")
    (cv_dir / "selection.json").write_text("{}")
    dataset = cfg.dataset.name
    cropped = {"path": paths.cropped(dataset).as_posix(), "md5": f"{crop_rule}-crops.dir"}
    lock = {
        "schema": "2.0",
        "stages": {
            "crop": {
                "params": {"params.yaml": {"crop": {"rule": crop_rule, "size": 64}}},
                "outs": [dict(cropped)],
            },
            f"cv@{model}": {
                "deps": [dict(cropped)],  # two dicts: no YAML alias ties them
                "params": {"params.yaml": {"seed": seed, "cv": {"folds": FOLDS}}},
                "outs": [
                    {"path": paths.cv_dir(dataset, model).as_posix(), "md5": dvc_dir_md5(cv_dir)}
                ],
            },
        },
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    return folder


@pytest.fixture()
def two_settings(tmp_path, monkeypatch):
    """bbox is right on the validation parts of folds 0 and 2, fraction on fold 1's; on the
    test folds it is the other way round, which must not matter."""
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    bbox, fraction = _alternating(rows)
    write_snapshot(tmp_path / "runs" / "bbox", "svm_hog", "bbox", bbox)
    write_snapshot(tmp_path / "runs" / "frac", "svm_hog", "fraction", fraction)
    return tmp_path, rows, {"bbox": bbox, "fraction": fraction}


def test_each_fold_keeps_the_setting_best_on_its_validation_part(two_settings):
    root, rows, p_all = two_settings
    assert choose_upstream.main(
        ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog"]
    ) == 0  # fmt: skip
    record = json.loads((root / "reports/upstream/synthetic/crop.json").read_text())
    chosen = [c["setting"] for c in record["models"]["svm_hog"]["chosen"]]
    assert chosen == ["bbox", "fraction", "bbox"]  # by validation, against the test folds
    assert record["settings"]["bbox"]["crop.rule"] == "bbox"
    assert record["settings"]["fraction"]["crop.rule"] == "fraction"
    kept = pd.read_csv(root / "reports/upstream/synthetic/crop/svm_hog/predictions.csv")
    expected = np.where(rows["fold"] == 1, p_all["fraction"], p_all["bbox"])
    merged = rows.assign(expected=expected).merge(kept, on=["id", "part"])
    assert merged["p_all"].to_numpy() == pytest.approx(merged["expected"].to_numpy())
    assert record["models"]["svm_hog"]["nested"]["accuracy"] == 0.0  # each test fold wrong
    own = record["models"]["svm_hog"]["settings"]  # each setting's CV, from its predictions
    assert own["bbox"]["accuracy"] == pytest.approx(1 / 3)
    assert own["fraction"]["accuracy"] == pytest.approx(2 / 3)
    assert "nested choice" in (root / "reports/upstream/synthetic/crop.md").read_text()


def test_a_snapshot_whose_files_the_lock_does_not_prove_is_refused(two_settings, capsys):
    root, _, _ = two_settings
    predictions = root / "runs/frac/cv/svm_hog/predictions.csv"
    predictions.write_text(predictions.read_text().replace("0.9", "0.8"))
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog"]
    assert choose_upstream.main(args) == 2
    assert "runs/frac/cv/svm_hog" in capsys.readouterr().err
    assert not (root / "reports/upstream").exists()  # nothing half-written


def test_settings_may_differ_only_upstream(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    write_snapshot(tmp_path / "a", "svm_hog", "bbox", _right(rows))
    write_snapshot(tmp_path / "b", "svm_hog", "fraction", _right(rows), seed=7)
    assert choose_upstream.main(["x", "a:a", "b:b", "--models", "svm_hog"]) == 2
    assert "'seed'" in capsys.readouterr().err


def test_settings_that_share_every_upstream_param_leave_nothing_to_choose(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    write_snapshot(tmp_path / "a", "svm_hog", "bbox", _right(rows))
    write_snapshot(tmp_path / "b", "svm_hog", "bbox", 1 - _right(rows))
    assert choose_upstream.main(["x", "a:a", "b:b", "--models", "svm_hog"]) == 2
    assert "no choice" in capsys.readouterr().err


def test_settings_on_other_folds_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    moved = rows.assign(fold=(rows["fold"] + 1) % FOLDS)
    write_snapshot(tmp_path / "a", "svm_hog", "bbox", _right(rows))
    write_snapshot(tmp_path / "b", "svm_hog", "fraction", _right(rows), rows=moved)
    assert choose_upstream.main(["x", "a:a", "b:b", "--models", "svm_hog"]) == 2
    assert "same folds" in capsys.readouterr().err


def ensemble_settings(root: Path, seed: int) -> tuple[list[str], list[str]]:
    """A bbox and a fraction snapshot of random predictions for each of conf/'s ensemble
    members: (members, the two settings as `choose_upstream` takes them)."""
    rows = _rows()
    members = list(config.compose().ensemble.members)
    rng = np.random.default_rng(seed)
    for member in members:
        for label in ("bbox", "fraction"):
            write_snapshot(root / label / member, member, label, rng.uniform(size=len(rows)))
    return members, [f"{s}:" + ",".join(f"{s}/{m}" for m in members) for s in ("bbox", "fraction")]


def test_the_ensemble_averages_its_members_chosen_predictions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    members, settings = ensemble_settings(tmp_path, seed=0)
    assert choose_upstream.main(["crop", *settings, "--models", *members, "ensemble"]) == 0
    out = tmp_path / "reports/upstream/synthetic/crop"
    keys = ["id", "part"]
    chosen = [pd.read_csv(out / m / "predictions.csv").sort_values(keys) for m in members]
    ensemble = pd.read_csv(out / "ensemble" / "predictions.csv").sort_values(keys)
    mean = np.mean([c["p_all"].to_numpy() for c in chosen], axis=0)
    assert ensemble["p_all"].to_numpy() == pytest.approx(mean)
    record = json.loads(out.with_suffix(".json").read_text())["models"]["ensemble"]
    assert set(record["settings"]) == {"bbox", "fraction"} and record["members"] == members


def test_an_ensemble_may_name_a_model_opted_into_its_own_runs_only(tmp_path, monkeypatch):
    """cell_features_rf is in its own snapshots' params only (`+model@models...`), and the
    first model named (svm_hog) does not know it: the ensemble still takes it as a member."""
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    rng = np.random.default_rng(1)
    opt_in = {"cell_features_rf": ["+model@models.cell_features_rf=cell_features_rf"]}
    members = ["svm_hog", "cell_features_rf"]
    for member in members:
        for label in ("bbox", "fraction"):
            write_snapshot(
                tmp_path / label / member, member, label, rng.uniform(size=len(rows)),
                overrides=opt_in.get(member, ()),
            )  # fmt: skip
    settings = [f"{s}:" + ",".join(f"{s}/{m}" for m in members) for s in ("bbox", "fraction")]
    overrides = ["--ensemble", f"members=[{','.join(members)}]"]
    args = ["crop", *settings, "--models", *members, "ensemble", *overrides]
    assert choose_upstream.main(args) == 0
    out = tmp_path / "reports/upstream/synthetic/crop"
    record = json.loads(out.with_suffix(".json").read_text())["models"]["ensemble"]
    assert record["members"] == members
    keys = ["id", "part"]
    chosen = [pd.read_csv(out / m / "predictions.csv").sort_values(keys) for m in members]
    ensemble = pd.read_csv(out / "ensemble" / "predictions.csv").sort_values(keys)
    mean = np.mean([c["p_all"].to_numpy() for c in chosen], axis=0)
    assert ensemble["p_all"].to_numpy() == pytest.approx(mean)


def test_a_top_k_ensemble_keeps_per_fold_the_members_best_on_its_validation_part(
    tmp_path, monkeypatch
):
    """Member i is wrong on fold i's validation part and right on its test fold, the others
    the other way round: with top_k=2 each fold must average the two others."""
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    members = list(config.compose().ensemble.members)[:FOLDS]
    right, wrong = _right(rows), 1 - _right(rows)
    val = (rows["part"] == "val").to_numpy()
    p_all = {}
    for index, member in enumerate(members):
        own = (rows["fold"] == index).to_numpy()
        p_all[member] = np.where(own, np.where(val, wrong, right), np.where(val, right, wrong))
        for label in ("bbox", "fraction"):
            write_snapshot(tmp_path / label / member, member, label, p_all[member])
    settings = [f"{s}:" + ",".join(f"{s}/{m}" for m in members) for s in ("bbox", "fraction")]
    overrides = ["--ensemble", f"members=[{','.join(members)}]", "top_k=2"]
    args = ["crop", *settings, "--models", *members, "ensemble", *overrides]
    assert choose_upstream.main(args) == 0
    out = tmp_path / "reports/upstream/synthetic/crop"
    record = json.loads(out.with_suffix(".json").read_text())["models"]["ensemble"]
    assert record["top_k"] == 2 and record["members"] == members
    kept = {row["fold"]: set(row["members"]) for row in record["members_chosen"]}
    assert kept == {f: set(members) - {members[f]} for f in range(FOLDS)}
    assert record["nested"]["accuracy"] == 0.0  # every kept pair is wrong on its test fold
    ensemble = pd.read_csv(out / "ensemble" / "predictions.csv")
    expected = np.nanmean(
        [np.where(rows["fold"] == i, np.nan, p_all[m]) for i, m in enumerate(members)], axis=0
    )
    keyed = rows.assign(expected=expected).merge(ensemble, on=["id", "repeat", "fold", "part"])
    assert keyed["p_all"].to_numpy() == pytest.approx(keyed["expected"].to_numpy())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("depth=2", "only ['members', 'weights', 'top_k']"),
        ("top_k=9", "ensemble.top_k"),
        ("top_k", "is not of the form key=value"),
    ],
)
def test_a_bad_ensemble_override_is_refused_by_name(two_settings, capsys, override, message):
    root, _, _ = two_settings
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog", "ensemble"]
    assert choose_upstream.main([*args, "--ensemble", override]) == 2
    assert message in capsys.readouterr().err
    assert not (root / "reports").exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["crop", "bbox:runs/bbox,", "fraction:runs/frac"], "an empty snapshot name"),
        (["", "bbox:runs/bbox", "fraction:runs/frac"], "output name '' names a folder"),
        (["../../out", "bbox:runs/bbox", "fraction:runs/frac"], "names a folder"),
        (
            ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--ensemble", "top_k=2"],
            "`ensemble` is not in --models",
        ),
    ],
)
def test_bad_names_and_a_stray_ensemble_option_are_refused(two_settings, capsys, args, message):
    root, _, _ = two_settings
    assert choose_upstream.main([*args, "--models", "svm_hog"]) == 2
    err = capsys.readouterr().err
    assert message in err and "choose_upstream: choose_upstream" not in err
    assert not (root / "reports").exists() and not (root.parent / "out").exists()


@pytest.mark.parametrize("damage", ["stages: [unclosed\n", "- a list\n"])
def test_a_damaged_snapshot_lock_is_named(two_settings, capsys, damage):
    root, _, _ = two_settings
    (root / "runs/frac/dvc.lock").write_text(damage)
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog"]
    assert choose_upstream.main(args) == 2
    assert "runs/frac/dvc.lock: " in capsys.readouterr().err


def test_an_ensemble_without_its_members_is_refused(two_settings, capsys):
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog", "ensemble"]
    assert choose_upstream.main(args) == 2
    assert "ensemble's members" in capsys.readouterr().err


def test_dvc_dir_md5_is_the_hash_dvc_recorded_for_a_committed_folder():
    snapshot = REPO / "reports/experiments/cnmc_grouped_cv_cnns"
    lock = yaml.safe_load((snapshot / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["cv@yolov8"]["outs"]}
    assert dvc_dir_md5(snapshot / "cv" / "yolov8") == outs["reports/cv/cnmc/yolov8"]


def test_a_setting_may_hold_its_cv_and_its_crop_run_in_two_snapshots(two_settings):
    """Like cnmc_grouped_cv_cnns: a snapshot of cv@<model> alone, its crop run in another."""
    root, _, _ = two_settings
    lock_path = root / "runs/bbox/dvc.lock"
    lock = yaml.safe_load(lock_path.read_text())
    crop_only = {"schema": "2.0", "stages": {"crop": lock["stages"].pop("crop")}}
    lock_path.write_text(yaml.safe_dump(lock))
    (root / "runs/bbox_crop").mkdir()
    (root / "runs/bbox_crop/dvc.lock").write_text(yaml.safe_dump(crop_only))
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog"]
    assert choose_upstream.main(args) == 2  # its crop settings are nowhere
    args[1] = "bbox:runs/bbox,runs/bbox_crop"
    assert choose_upstream.main(args) == 0
    record = json.loads((root / "reports/upstream/synthetic/crop.json").read_text())
    assert record["settings"]["bbox"] == {
        "snapshots": ["runs/bbox", "runs/bbox_crop"],
        "crop.rule": "bbox",
    }
    selection = root / "reports/upstream/synthetic/crop/svm_hog/selection.json"
    assert json.loads(selection.read_text())["settings"]["bbox"]["snapshot"] == "runs/bbox"


def test_a_crop_run_that_did_not_make_the_cvs_input_is_not_its_setting(two_settings, capsys):
    root, _, _ = two_settings
    lock_path = root / "runs/frac/dvc.lock"
    lock = yaml.safe_load(lock_path.read_text())
    lock["stages"]["crop"]["outs"][0]["md5"] = "other-crops.dir"
    lock_path.write_text(yaml.safe_dump(lock))
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog"]
    assert choose_upstream.main(args) == 2
    assert "fraction-crops.dir" in capsys.readouterr().err


def test_best_takes_per_fold_the_model_best_on_its_validation_part(tmp_path, monkeypatch):
    """svm_hog is right on the validation parts of folds 0 and 2, yolov8 on fold 1's (their
    test folds the other way round): `best` must follow the validation parts."""
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    p_all = dict(zip(("svm_hog", "yolov8"), _alternating(rows), strict=True))
    for model, values in p_all.items():
        for label in ("bbox", "fraction"):  # the same predictions: the setting choice is moot
            write_snapshot(tmp_path / label / model, model, label, values)
    settings = [f"{s}:{s}/svm_hog,{s}/yolov8" for s in ("bbox", "fraction")]
    assert choose_upstream.main(["crop", *settings, "--models", *p_all, "best"]) == 0
    out = tmp_path / "reports/upstream/synthetic/crop"
    record = json.loads(out.with_suffix(".json").read_text())["models"]["best"]
    picked = {row["fold"]: row["model"] for row in record["models_chosen"]}
    assert picked == {0: "svm_hog", 1: "yolov8", 2: "svm_hog"}
    assert record["nested"]["accuracy"] == 0.0  # every chosen model is wrong on its test fold
    best = pd.read_csv(out / "best" / "predictions.csv")
    expected = np.where(rows["fold"] == 1, p_all["yolov8"], p_all["svm_hog"])
    keyed = rows.assign(expected=expected).merge(best, on=["id", "repeat", "fold", "part"])
    assert keyed["p_all"].to_numpy() == pytest.approx(keyed["expected"].to_numpy())
    assert "best" in (out.with_suffix(".md")).read_text()


def test_best_needs_two_models(two_settings, capsys):
    args = ["crop", "bbox:runs/bbox", "fraction:runs/frac", "--models", "svm_hog", "best"]
    assert choose_upstream.main(args) == 2
    assert "at least two models" in capsys.readouterr().err


def test_best_chooses_among_the_models_of_one_setting(tmp_path, monkeypatch):
    """One setting, two models' CVs in two snapshots: nothing upstream to choose, and `best`
    still follows the validation parts."""
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    p_all = dict(zip(("svm_hog", "yolov8"), _alternating(rows), strict=True))
    for model, values in p_all.items():
        write_snapshot(tmp_path / model, model, "fraction", values)
    args = ["estimator", "fraction:svm_hog,yolov8", "--models", *p_all, "best"]
    assert choose_upstream.main(args) == 0
    record = json.loads((tmp_path / "reports/upstream/synthetic/estimator.json").read_text())
    picked = {row["fold"]: row["model"] for row in record["models"]["best"]["models_chosen"]}
    assert picked == {0: "svm_hog", 1: "yolov8", 2: "svm_hog"}
    assert record["models"]["best"]["nested"]["accuracy"] == 0.0
    for model in p_all:  # each model's own CV, kept whole
        assert {c["setting"] for c in record["models"][model]["chosen"]} == {"fraction"}
        own = record["models"][model]["settings"]["fraction"]["accuracy"]
        assert record["models"][model]["nested"]["accuracy"] == pytest.approx(own)


def test_one_setting_without_best_or_ensemble_leaves_nothing_to_choose(two_settings, capsys):
    assert choose_upstream.main(["x", "bbox:runs/bbox", "--models", "svm_hog"]) == 2
    assert "at least two settings" in capsys.readouterr().err


def test_snapshots_older_than_a_conf_key_get_todays_default_and_say_so(tmp_path, monkeypatch):
    """A snapshot written before `train.subject_balance` existed lacks it; the ensemble fills
    it from conf/ and records that, instead of refusing the archived run."""
    monkeypatch.chdir(tmp_path)
    members, settings = ensemble_settings(tmp_path, seed=1)
    for params_file in tmp_path.glob("*/*/params.yaml"):
        params = yaml.safe_load(params_file.read_text())
        del params["train"]["subject_balance"]
        params_file.write_text(yaml.safe_dump(params))
    assert choose_upstream.main(["old", *settings, "--models", *members, "ensemble"]) == 0
    out = tmp_path / "reports/upstream/synthetic/old.json"
    record = json.loads(out.read_text())["models"]["ensemble"]
    assert record["params_filled_from_conf"] == {"train.subject_balance": False}


def test_fill_added_keys_fills_only_what_is_unset_and_leaves_unknown_keys_to_validate():
    cfg = OmegaConf.create(OmegaConf.to_container(config.compose(["train.subject_balance=true"])))
    filled_cfg, filled = config.fill_added_keys(cfg)
    assert filled == {} and filled_cfg.train.subject_balance is True  # a run's own value stays
    del cfg.train["subject_balance"]
    filled_cfg, filled = config.fill_added_keys(cfg, defaults=config.compose())
    assert filled == {"train.subject_balance": False} and "subject_balance" not in cfg.train
    config.validate(filled_cfg)
    _, filled = config.fill_added_keys(cfg, defaults=OmegaConf.create({}))
    assert filled == {}
    with pytest.raises(config.ConfigError, match="subject_balance"):
        config.validate(cfg)
