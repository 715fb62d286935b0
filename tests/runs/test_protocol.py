"""The protocol comparison (subject-grouped vs image-level CV) on a tiny workspace."""

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from pipeline import config, paths
from pipeline.evaluate import crossval
from pipeline.labels import called_all, y_true
from pipeline.runs import protocol
from tests.workspace import cropped_workspace, make_workspace, run_stage


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    return cropped_workspace(tmp_path_factory.mktemp("protocol"), ["cv.folds=3"])


def fake_cross_validate(seen):
    def fake_cv(frame, run_cfg, model_name, run_name):
        seen.append(run_cfg)
        summary = {"accuracy_mean": 0.5, "accuracy_std": 0.1, "f1_weighted": 0.5}
        return summary, pd.DataFrame(columns=crossval.PREDICTION_COLUMNS)

    return fake_cv


@pytest.fixture()
def committed_cv(cfg, tmp_path, monkeypatch):
    """A workspace whose dvc.lock records cv@svm_hog with exactly `cfg`'s params, and its outputs.

    Returns the frame of its images and the lock (as a dict) to alter.
    """
    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(__file__).parents[2] / "dvc.yaml", tmp_path / "dvc.yaml")
    frame = pd.DataFrame({"id": [f"cell{i}" for i in range(6)]})
    predictions = pd.DataFrame(
        {"id": [*frame["id"], "cell0"], "part": ["test"] * 6 + ["val"], "p_all": 0.5}
    )
    summary = {"selection": "fixed", "accuracy_mean": 0.7, "accuracy_std": 0.1}
    summary |= {"f1_weighted": 0.7, "folds": 3, "repeats": 1, "n": 6}
    metrics = paths.cv_metrics(cfg.dataset.name, "svm_hog")
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(summary))
    paths.cv_predictions(cfg.dataset.name, "svm_hog").parent.mkdir(parents=True)
    predictions.to_csv(paths.cv_predictions(cfg.dataset.name, "svm_hog"), index=False)
    declared = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["cv"]["params"]
    keys = [k.replace("${item.model}", "svm_hog") for k in declared]
    recorded = {k: protocol.lock_param(cfg, k) for k in keys}
    md5 = hashlib.md5(metrics.read_bytes()).hexdigest()
    lock = {
        "stages": {
            "cv@svm_hog": {
                "params": {"params.yaml": recorded},
                "outs": [{"path": metrics.as_posix(), "md5": md5}],
            }
        }
    }

    def write(lock=lock):
        Path("dvc.lock").write_text(yaml.safe_dump(lock))

    write()
    return frame, lock, write


def test_the_grouped_side_is_the_cv_stage_output_the_lock_proves(cfg, committed_cv, monkeypatch):
    frame, _, _ = committed_cv
    seen = []
    monkeypatch.setattr(crossval, "cross_validate", fake_cross_validate(seen))
    results = protocol.compare(frame, cfg, "svm_hog")
    assert [c.split.group_by for c in seen] == ["none"]  # only the image-level side trained
    assert results["subject"]["accuracy_mean"] == 0.7
    assert results["subject"]["source"] == "cv@svm_hog"
    assert results["subject"]["source_lock_entry"]["outs"][0]["path"].endswith("svm_hog.json")
    assert (
        results["subject"]["predictions"]
        == paths.cv_predictions(cfg.dataset.name, "svm_hog").as_posix()
    )
    assert results["none"]["source"] == "trained"


@pytest.mark.parametrize(
    ("alter", "named"),
    [
        (lambda cfg, lock, frame: OmegaConf.update(cfg, "models.svm_hog.C", 7.0), "models.svm_hog"),
        (lambda cfg, lock, frame: OmegaConf.update(cfg, "seed", 1), "seed"),
        (lambda cfg, lock, frame: lock["stages"].clear(), "has no cv@svm_hog"),
        (
            lambda cfg, lock, frame: lock["stages"]["cv@svm_hog"]["outs"][0].update(md5="0"),
            "is not the output",
        ),
        (lambda cfg, lock, frame: frame.drop(index=0, inplace=True), "other images"),
    ],
)
def test_the_grouped_side_trains_when_the_lock_does_not_prove_it(
    cfg, committed_cv, monkeypatch, alter, named
):
    frame, lock, write = committed_cv
    cfg = copy.deepcopy(cfg)  # the fixture is shared
    alter(cfg, lock, frame)
    write(lock)
    summary, why = protocol.committed_grouped_cv(frame, cfg, "svm_hog")
    assert summary is None and named in why
    seen = []
    monkeypatch.setattr(crossval, "cross_validate", fake_cross_validate(seen))
    protocol.compare(frame, cfg, "svm_hog")
    assert [c.split.group_by for c in seen] == ["subject", "none"]


def test_the_two_runs_differ_in_the_grouping_only(cfg, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no dvc.lock: both sides train
    seen = []
    monkeypatch.setattr(crossval, "cross_validate", fake_cross_validate(seen))
    results = protocol.compare(pd.DataFrame(), cfg, "svm_hog")
    assert list(results) == ["subject", "none"]
    assert [c.split.group_by for c in seen] == ["subject", "none"]
    for key in ("cv", "augment", "train", "models", "seed", "crop"):
        assert seen[0][key] == seen[1][key], key


def test_table_reports_the_inflation_of_image_level_over_grouped():
    summary = {"folds": 5, "n": 100, "accuracy_std": 0.02, "accuracy": 0.8}
    table = protocol.protocol_table(
        {
            "m": {
                "subject": {**summary, "accuracy_mean": 0.76},
                "none": {**summary, "accuracy_mean": 0.90},
            }
        }
    )
    assert table["protocol"].tolist() == list(protocol.PROTOCOLS.values())
    assert table["inflation (Ac points)"].tolist() == ["", "+14.0"]


def test_writes_both_protocols_and_keeps_models_run_before(cropped, monkeypatch):
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    out = cropped / "reports" / "protocol" / "synthetic"
    out.parent.mkdir(parents=True, exist_ok=True)
    earlier = {"folds": 3, "repeats": 1, "n": 1, "accuracy_mean": 0.5, "accuracy_std": None}
    out.with_suffix(".json").write_text(
        json.dumps(
            {"dataset": "synthetic", "models": {"earlier": {"subject": earlier, "none": earlier}}}
        )
    )
    assert run_stage(cropped, "protocol", "svm_hog") == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert set(record["models"]) == {"earlier", "svm_hog"}
    run = record["models"]["svm_hog"]
    assert run["settings"]["cv.folds"] == 3
    assert "git_revision" in run["provenance"] and run["provenance"]["wall_minutes"] >= 0
    for group_by in protocol.PROTOCOLS:
        assert run[group_by]["folds"] == 3 and run[group_by]["n"] > 0
        low, high = run[group_by]["accuracy_ci_low"], run[group_by]["accuracy_ci_high"]
        assert low < high
        kept = pd.read_csv(cropped / run[group_by]["predictions"])  # both sides trained here
        assert list(kept.columns) == crossval.WRITTEN_COLUMNS  # the cv stage's layout
        tested = kept[kept["part"] == "test"]
        images = pd.read_csv(cropped / paths.cropped("synthetic") / "manifest.csv")
        assert sorted(tested["id"]) == sorted(images["id"])
        accuracy = (called_all(tested["p_all"]) == y_true(tested["label"])).mean()
        assert accuracy == pytest.approx(run[group_by]["accuracy"])
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 4 and set(table["model"]) == {"earlier", "svm_hog"}
    report = out.with_suffix(".md").read_text()
    assert "image-level (paper)" in report
    assert report.startswith("**Warning:**") and "image-level protocol" in report


@pytest.mark.parametrize(
    ("args", "named"),
    [(("svm_hog", "cv.folds=0"), "cv.folds"), (("nonsense",), "nonsense"), ((), "model")],
)
def test_bad_requests_fail_with_one_line_naming_the_key(tmp_path, capsys, args, named):
    root = make_workspace(tmp_path, ["cv.folds=3"])
    assert run_stage(root, "protocol", *args) == 1
    assert named in capsys.readouterr().err
    assert not (root / "reports" / "protocol").exists()


REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted((REPO / "reports" / "protocol").glob("*.json"))


@pytest.mark.parametrize("record_path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_a_committed_reused_grouped_side_is_the_committed_cv_it_names(record_path):
    """A comparison whose grouped side came from cv@<model> goes stale when that CV is re-run:
    its lock entry must still name the committed metrics file, and the figures must be its."""
    record = json.loads(record_path.read_text())
    sides = {m: v["subject"] for m, v in record["models"].items()}
    reused = {m: s for m, s in sides.items() if (s.get("source") or "").startswith("cv@")}
    for model, grouped in reused.items():
        metrics = REPO / paths.cv_metrics(record["dataset"], model)
        committed = json.loads(metrics.read_text())
        # a rescored file (`rescore`: today's metrics code, no re-run) is checked through the
        # run's own file, kept as written in the snapshot whose lock the record names
        rescored = committed.get("rescored")
        as_written = (
            REPO / Path(rescored["run"]).parent / "metrics" / "cv" / f"{model}.json"
            if rescored
            else metrics
        )
        if "source_lock_entry" in grouped:  # recorded since 019a06d
            recorded = {o["path"]: o["md5"] for o in grouped["source_lock_entry"]["outs"]}
            assert recorded[paths.cv_metrics(record["dataset"], model).as_posix()] == (
                hashlib.md5(as_written.read_bytes()).hexdigest()
            ), f"{model}: cv@{model} was re-run after the comparison; re-run the protocol"
        for key in ("accuracy", "accuracy_mean", "f1_weighted", "roc_auc", "n", "folds"):
            assert grouped[key] == committed[key], (model, key)


def test_lock_param_reads_a_param_as_dvc_recorded_it_in_the_committed_lock(cfg):
    """The committed dvc.lock was written by DVC from params.yaml (= the composed defaults)."""
    recorded = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["cv@svm_hog"]
    for key, value in recorded["params"]["params.yaml"].items():
        assert protocol.lock_param(cfg, key) == value, key


@pytest.fixture()
def members_compared(tmp_path):
    """A workspace whose protocol record holds both sides of each default ensemble member,
    with the out-of-fold P(ALL) each side kept (3 folds, validation and test rows)."""
    root = make_workspace(tmp_path, ["cv.folds=3", "evaluate.bootstrap_samples=50"])
    cfg = config.load(root / "params.yaml")
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "id": [f"cell{i}" for i in range(18)],
            "label": ["all", "hem"] * 9,
            "group": [f"subject{i // 2}" for i in range(18)],
            "repeat": 0,
            "fold": [i % 3 for i in range(18)],
            "part": (["test"] * 4 + ["val"] * 2) * 3,
            "candidate": 0,
        }
    )
    models = {}
    for member in cfg.ensemble.members:
        sides = {}
        for group_by in protocol.PROTOCOLS:
            kept = protocol.predictions_path("synthetic", member, group_by)
            (root / kept).parent.mkdir(parents=True, exist_ok=True)
            rows.assign(p_all=rng.uniform(size=len(rows))).to_csv(root / kept, index=False)
            sides[group_by] = {"folds": 3, "n": 12, "accuracy_mean": 0.5, "accuracy_std": 0.1}
            sides[group_by]["predictions"] = kept.as_posix()
        settings = {"cv.folds": 3, "cv.repeats": 1, "seed": cfg.seed}
        models[member] = {"settings": settings, **sides}
    out = root / protocol.protocol_path("synthetic")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"dataset": "synthetic", "models": models}))
    return root, list(cfg.ensemble.members)


def test_the_ensemble_averages_its_members_kept_predictions_on_each_side(members_compared):
    root, members = members_compared
    assert run_stage(root, "protocol", "ensemble") == 0
    out = root / protocol.protocol_path("synthetic")
    record = json.loads(out.with_suffix(".json").read_text())["models"]["ensemble"]
    for group_by in protocol.PROTOCOLS:
        side = record[group_by]
        assert side["source"] == "members: " + ", ".join(members)
        mine = pd.read_csv(root / side["predictions"]).sort_values(["id", "part"])
        theirs = [
            pd.read_csv(root / protocol.predictions_path("synthetic", m, group_by))
            .sort_values(["id", "part"])["p_all"]
            .to_numpy()
            for m in members
        ]
        assert mine["p_all"].to_numpy() == pytest.approx(np.mean(theirs, axis=0))
        tested = mine[mine["part"] == "test"]
        accuracy = (called_all(tested["p_all"]) == y_true(tested["label"])).mean()
        assert side["accuracy"] == pytest.approx(accuracy)
    assert "ensemble" in set(pd.read_csv(out.with_suffix(".csv"))["model"])


@pytest.mark.parametrize("damage", ["{not json", '{"dataset": "synthetic"}'])
def test_a_damaged_protocol_record_is_named_before_anything_runs(members_compared, capsys, damage):
    root, _ = members_compared
    record = (root / protocol.protocol_path("synthetic")).with_suffix(".json")
    record.write_text(damage)
    assert run_stage(root, "protocol", "ensemble") == 1
    err = capsys.readouterr().err
    assert f"{record.name}: " in err and "Traceback" not in err
    assert record.read_text() == damage


def test_the_ensemble_names_a_member_without_kept_predictions(members_compared, capsys):
    root, members = members_compared
    (root / protocol.predictions_path("synthetic", members[1], "none")).unlink()
    before = (root / protocol.protocol_path("synthetic")).with_suffix(".json").read_text()
    assert run_stage(root, "protocol", "ensemble") == 1
    err = capsys.readouterr().err
    assert repr(members[1]) in err and f"pipeline.stages.protocol {members[1]}" in err
    assert (root / protocol.protocol_path("synthetic")).with_suffix(".json").read_text() == before


@pytest.mark.parametrize("record_path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_a_committed_ensemble_row_is_the_mean_of_its_members_kept_predictions(record_path):
    record = json.loads(record_path.read_text())
    ensemble = record["models"].get("ensemble")
    if ensemble is None:
        pytest.skip(f"{record_path.name} has no ensemble row")
    settings = ensemble["settings"]["ensemble"]
    assert settings["weights"] is None and settings["top_k"] is None  # plain mean below
    keys = ["id", "repeat", "fold", "part"]
    for group_by in protocol.PROTOCOLS:
        mine = pd.read_csv(REPO / ensemble[group_by]["predictions"]).sort_values(keys)
        theirs = [
            pd.read_csv(REPO / record["models"][m][group_by]["predictions"]).sort_values(keys)
            for m in settings["members"]
        ]
        assert all(t[keys].to_numpy().tolist() == mine[keys].to_numpy().tolist() for t in theirs)
        mean = np.mean([t["p_all"].to_numpy() for t in theirs], axis=0)
        assert mine["p_all"].to_numpy() == pytest.approx(mean)
