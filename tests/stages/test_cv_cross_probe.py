"""Stages cv, cross_eval and probe on tiny workspaces (tests/workspace.py)."""

import json
import logging
import shutil

import mlflow
import pandas as pd
import pytest

from pipeline import paths
from pipeline.evaluate.cross_dataset import target_predictor
from tests import workspace
from tests.workspace import MODELS, make_workspace, run_stage


@pytest.fixture(scope="module")
def cropped_workspace(tmp_path_factory):
    """generate_demo -> crop on the tiny smear demo, with 3-fold CV on; no model trained."""
    return workspace.cropped_workspace(
        tmp_path_factory.mktemp("cv_workspace"), ["cv.folds=3", "tracking.register_best=false"]
    )


def test_cv_off_writes_the_disabled_marker_without_reading_data(tmp_path):
    root = make_workspace(tmp_path)  # no data at all: the stage must not need any
    assert run_stage(root, "cv", "svm_hog") == 0
    assert json.loads((root / paths.cv_metrics("synthetic", "svm_hog")).read_text()) == {
        "enabled": False
    }
    assert pd.read_csv(root / paths.cv_predictions("synthetic", "svm_hog")).empty


def test_cv_is_deterministic_grouped_and_tracked_as_nested_runs(
    cropped_workspace, tmp_path, monkeypatch
):
    root = cropped_workspace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    written = (
        paths.cv_metrics("synthetic", "svm_hog"),
        paths.cv_predictions("synthetic", "svm_hog"),
    )
    outputs = []
    for _ in range(2):
        assert run_stage(root, "cv", "svm_hog") == 0
        outputs.append([(root / path).read_text() for path in written])
    assert outputs[0] == outputs[1]  # same seed: same folds, same model, same metrics
    summary = json.loads(outputs[0][0])
    assert summary["enabled"] and summary["folds"] == 3 and summary["n_folds"] == 3
    assert summary["accuracy_ci_low"] <= summary["accuracy"] <= summary["accuracy_ci_high"]
    assert summary["accuracy_std"] is not None
    predictions = pd.read_csv(root / paths.cv_predictions("synthetic", "svm_hog"))
    cropped = pd.read_csv(root / paths.cropped("synthetic") / "manifest.csv")
    tested = predictions[predictions["part"] == "test"]
    assert sorted(tested["id"]) == sorted(cropped["id"])  # every image tested once
    assert (tested.groupby("group")["fold"].nunique() == 1).all()
    assert summary["n"] == len(cropped) and summary["selection"] == "fixed"
    validated = predictions[predictions["part"] == "val"]  # each fold's validation part
    assert not validated.empty and set(validated["fold"]) == {0, 1, 2}

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 2 and set(runs["status"]) == {"FINISHED"}
    children = runs[runs["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]]
    assert len(children) == 3 and children["metrics.test_accuracy"].notna().all()
    assert parents["metrics.test_accuracy_mean"].notna().all()
    assert parents["metrics.val_accuracy_mean"].notna().all()  # what tuning selects on
    assert 0 <= summary["val_accuracy_mean"] <= 1
    assert set(runs["tags.dvc_stage"]) == {"cv@svm_hog"}


def test_cv_folds_trained_as_shards_on_the_command_line_give_the_same_cv(
    cropped_workspace, tmp_path, monkeypatch, caplog
):
    root = cropped_workspace
    written = (
        paths.cv_metrics("synthetic", "svm_hog"),
        paths.cv_predictions("synthetic", "svm_hog"),
    )
    assert run_stage(root, "cv", "svm_hog") == 0
    whole = [(root / path).read_text() for path in written]

    monkeypatch.setenv("ALL_DETECT_CV_STORE", str(tmp_path / "shared"))
    for path in written:
        (root / path).unlink()
    assert run_stage(root, "cv", "svm_hog", "0") == 0
    assert run_stage(root, "cv", "svm_hog", "2", "1") == 0
    assert not any((root / path).exists() for path in written)  # a shard scores nothing
    assert len(list((tmp_path / "shared" / "synthetic" / "svm_hog").glob("*.json"))) == 3
    with caplog.at_level(logging.INFO):
        assert run_stage(root, "cv", "svm_hog") == 0
    assert caplog.text.count("resumed from") == 3  # nothing trained again
    assert [(root / path).read_text() for path in written] == whole
    assert not (tmp_path / "shared" / "synthetic" / "svm_hog").exists()

    assert run_stage(root, "cv", "svm_hog", "3") == 1  # 3 folds: 0..2
    assert run_stage(root, "cv", "svm_hog", "first") == 1


def test_a_rerun_cv_closes_the_runs_a_killed_attempt_left_running(
    cropped_workspace, tmp_path, monkeypatch
):
    """A SIGKILLed CV leaves its parent and fold runs RUNNING; the rerun resumes the folds and
    must close those runs as KILLED, as train does (else they stay RUNNING forever)."""
    import socket
    import subprocess

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("all-detect/synthetic")
    dead = subprocess.Popen(["true"])
    dead.wait()  # the killed attempt's process: gone
    tags = {"model": "svm_hog", "dataset": "synthetic", "dvc_stage": "cv@svm_hog",
            "host": socket.gethostname(), "pid": str(dead.pid)}  # fmt: skip
    parent = client.create_run(experiment, tags=tags, run_name="cv svm_hog")
    fold = client.create_run(
        experiment, tags={**tags, "mlflow.parentRunId": parent.info.run_id}, run_name="fold0"
    )
    assert run_stage(cropped_workspace, "cv", "svm_hog") == 0
    for run in (parent, fold):
        assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_nested_cv_chooses_inside_each_fold_on_its_validation_part(
    cropped_workspace, tmp_path, monkeypatch
):
    root = cropped_workspace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    grid = '{"models.svm_hog.C": [0.0001, 1.0]}'
    assert run_stage(root, "cv", "svm_hog", "cv.nested=true", f"tune.grids.svm_hog={grid}") == 0
    summary = json.loads((root / paths.cv_metrics("synthetic", "svm_hog")).read_text())
    assert summary["selection"] == "nested" and summary["candidates"] == 2
    selection = json.loads(
        (root / paths.cv_dir("synthetic", "svm_hog") / "selection.json").read_text()
    )
    assert [c["C"] for c in [{"C": k["models.svm_hog.C"]} for k in selection["candidates"]]] == [
        0.0001,
        1.0,
    ]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 3 * 2  # every candidate trained in every fold
    for choice in selection["chosen"]:
        fold = f"repeat{choice['repeat']}-fold{choice['fold']}"
        tried = children[children["tags.mlflow.runName"].str.contains(fold)].sort_values(
            "tags.mlflow.runName"
        )
        accuracy, loss = tried["metrics.selected_val_accuracy"], tried["metrics.selected_val_loss"]
        val = list(zip(-accuracy, loss, strict=True))
        assert choice["candidate"] == min(range(2), key=lambda i: (*val[i], i))
        # the test fold scored the chosen candidate only
        scored = tried["metrics.test_accuracy"].notna().tolist()
        assert scored == [i == choice["candidate"] for i in range(2)]
    # only the chosen candidate's rows, with its number, reach the predictions
    predictions = pd.read_csv(root / paths.cv_predictions("synthetic", "svm_hog"))
    chosen = {(c["repeat"], c["fold"]): c["candidate"] for c in selection["chosen"]}
    for (repeat, fold), rows in predictions.groupby(["repeat", "fold"]):
        assert set(rows["candidate"]) == {chosen[(repeat, fold)]}


def test_tune_ranks_candidates_on_validation_folds_and_nests_their_runs(
    cropped_workspace, tmp_path, monkeypatch
):
    root = cropped_workspace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    grid = '{"models.svm_hog.C": [0.01, 1.0], "models.svm_hog.hog.color": [gray]}'
    assert run_stage(root, "tune", "svm_hog", f"tune.grids.svm_hog={grid}") == 0
    table = pd.read_csv(root / paths.tuning_table("synthetic", "svm_hog"))
    assert table["models.svm_hog.C"].tolist() == [0.01, 1.0]
    assert table["selected"].sum() == 1 and table["val_accuracy_mean"].between(0, 1).all()
    winner = json.loads((root / paths.tuning_winner("synthetic", "svm_hog")).read_text())
    assert winner["candidates"] == 2
    best = table[table["selected"]].iloc[0]
    assert winner["overrides"]["models.svm_hog.C"] == best["models.svm_hog.C"]
    assert winner["metrics"]["val_accuracy_mean"] == pytest.approx(best["val_accuracy_mean"])
    assert best["val_accuracy_mean"] == table["val_accuracy_mean"].max()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(top) == 1 and top["tags.dvc_stage"].iloc[0] == "tune@svm_hog"
    candidates = runs[runs["tags.mlflow.parentRunId"] == top["run_id"].iloc[0]]
    assert len(candidates) == 2 and candidates["metrics.val_accuracy_mean"].notna().all()
    folds = runs[runs["tags.mlflow.parentRunId"].isin(candidates["run_id"])]
    assert len(folds) == 6 and set(runs["status"]) == {"FINISHED"}
    assert set(candidates["params.models.svm_hog.C"].astype(float)) == {0.01, 1.0}
    assert run_stage(root, "report") == 0
    assert "## Hyperparameter search" in (root / "reports" / "table2.md").read_text()


def test_tune_resumes_a_killed_search_but_never_reuses_stale_rows(
    cropped_workspace, tmp_path, monkeypatch
):
    root = cropped_workspace
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    table_path = root / paths.tuning_table("synthetic", "svm_hog")
    table_path.unlink(missing_ok=True)
    grid = "tune.grids.svm_hog={models.svm_hog.C: [0.1, 10.0]}"

    def searched_candidates(*overrides: str) -> int:
        """Run the search; how many candidates it trained (child runs of the new tune run)."""
        assert run_stage(root, "tune", "svm_hog", grid, *overrides) == 0
        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(experiment_names=["all-detect/synthetic"])
        newest = runs[runs["tags.mlflow.parentRunId"].isna()].sort_values("start_time").iloc[-1]
        return int((runs["tags.mlflow.parentRunId"] == newest["run_id"]).sum())

    assert searched_candidates() == 2
    complete = pd.read_csv(table_path)
    assert complete["fingerprint"].nunique() == 2
    complete.iloc[:1].assign(selected=False).to_csv(table_path, index=False)  # killed after #0
    assert searched_candidates() == 1
    resumed = pd.read_csv(table_path)
    pd.testing.assert_frame_equal(resumed, complete)  # same rows, same winner
    assert searched_candidates() == 0  # nothing left to do
    assert searched_candidates("tune.resume=false") == 2
    assert searched_candidates("seed=7") == 2  # other folds: nothing reusable


def test_tune_refuses_upstream_keys_before_training(cropped_workspace, capsys):
    grid = '{"crop.size": [64, 96]}'
    assert run_stage(cropped_workspace, "tune", "svm_hog", f"tune.grids.svm_hog={grid}") == 1
    assert "crop.size" in capsys.readouterr().err


def test_probe_audits_the_segmented_dataset_and_the_report_shows_it(cropped_workspace):
    root = cropped_workspace
    assert run_stage(root, "probe") == 0
    result = json.loads((root / paths.shortcut("synthetic")).read_text())
    assert result["applicable"] and result["n"] == 32
    for probe in ("background", "cell", "model_input", "model_input_background"):
        assert 0 <= result[f"{probe}_roc_auc"] <= 1
    assert run_stage(root, "report") == 0
    report = (root / "reports" / "table2.md").read_text()
    assert "## Shortcut audit (background vs cell)" in report


def test_probe_is_not_applicable_without_segmentation(tmp_path):
    root = make_workspace(tmp_path, ["dataset=synthetic_cnmc"])
    assert run_stage(root, "probe") == 0
    assert json.loads((root / paths.shortcut("synthetic_cnmc")).read_text()) == {
        "applicable": False
    }


@pytest.fixture
def trained_view(demo_workspace, tmp_path):
    """A fresh folder seeing the demo workspace's data and models (read-only) through links."""

    def make(*overrides):
        root = make_workspace(tmp_path / "view", ["tracking.register_best=false", *overrides])
        for name in ("artifacts", "models"):
            if not (root / name).exists():
                (root / name).symlink_to(demo_workspace / name)
        return root

    return make


def test_cross_eval_tests_every_model_on_the_other_dataset(trained_view):
    root = trained_view()
    assert run_stage(root, "cross_eval") == 0
    out = root / paths.cross_dir("synthetic") / "synthetic_cnmc"
    target = pd.read_csv(out / "predictions.csv")
    assert len(target) == 32 and set(target["label"]) == {"all", "hem"}
    for model in MODELS:
        metrics = json.loads((out / f"{model}.json").read_text())
        assert metrics["n"] == len(target) and 0 <= metrics["accuracy"] <= 1
    assert run_stage(root, "report") == 0
    report = (root / "reports" / "table2.md").read_text()
    assert "## Cross-dataset (train → test)" in report and "synthetic_cnmc" in report


def test_cross_eval_leaves_out_images_seen_in_training(
    trained_view, demo_workspace, tmp_path, capsys
):
    target = tmp_path / "target"
    shutil.copytree(demo_workspace / "artifacts" / "demo" / "cnmc" / "C-NMC_Leukemia", target)
    trained_on = pd.read_csv(demo_workspace / paths.manifest("synthetic")).iloc[0]
    copy = target / "training_data" / "fold_0" / "all" / "UID_99_1_1_all.png"
    shutil.copyfile(demo_workspace / trained_on["path"], copy)  # a training image, renamed
    root = trained_view(f"+cross.roots.synthetic_cnmc={target}")
    assert run_stage(root, "cross_eval", "svm_hog") == 0
    out = root / paths.cross_dir("synthetic") / "synthetic_cnmc"
    metrics = json.loads((out / "svm_hog.json").read_text())
    assert metrics["n"] == 32 and metrics["n_left_out_seen_in_training"] == 1
    assert "fold0_all_UID_99_1_1_all" not in set(pd.read_csv(out / "predictions.csv")["id"])

    itself = trained_view("cross.targets=[synthetic]")
    assert run_stage(itself, "cross_eval", "svm_hog") == 1
    assert "every image of 'synthetic' is also in the training dataset" in capsys.readouterr().err


def test_a_target_left_with_one_class_is_refused_naming_it(
    trained_view, demo_workspace, tmp_path, capsys
):
    """Every healthy target image is a training image: scored on the ALL cells alone, a model
    calling everything ALL got accuracy, balanced accuracy and F1 of 1.0, not collapsed."""
    target = tmp_path / "target"
    shutil.copytree(demo_workspace / "artifacts" / "demo" / "cnmc" / "C-NMC_Leukemia", target)
    trained = pd.read_csv(demo_workspace / paths.manifest("synthetic"))
    for path in (target / "training_data" / "fold_0" / "hem").iterdir():
        path.unlink()
    for i, row in enumerate(trained[trained["label"] == "hem"].head(3).itertuples()):
        copy = target / "training_data" / "fold_0" / "hem" / f"UID_H9{i}_1_1_hem.png"
        shutil.copyfile(demo_workspace / row.path, copy)
    root = trained_view(f"+cross.roots.synthetic_cnmc={target}")
    assert run_stage(root, "cross_eval", "svm_hog") == 1
    err = capsys.readouterr().err
    assert "'synthetic_cnmc' has no unseen image of class 'hem' (3 of its images" in err
    assert not (root / paths.cross_dir("synthetic")).exists()


def test_a_bad_target_file_names_the_target_and_where_its_policy_is_set(
    trained_view, demo_workspace, tmp_path, capsys
):
    """-S dataset.on_bad_file=skip changes the training dataset's policy, not the target's."""
    target = tmp_path / "target"
    shutil.copytree(demo_workspace / "artifacts" / "demo" / "cnmc" / "C-NMC_Leukemia", target)
    corrupt = target / "training_data" / "fold_0" / "all" / "UID_98_1_1_all.png"
    corrupt.write_bytes(b"not a png")
    root = trained_view(f"+cross.roots.synthetic_cnmc={target}")
    assert run_stage(root, "cross_eval", "svm_hog") == 1
    err = capsys.readouterr().err
    assert (
        "cross.targets: 'synthetic_cnmc' (on_bad_file: error in conf/dataset/synthetic_cnmc.yaml"
        in err
    )
    assert str(corrupt) in err


def test_the_target_decides_segmentation_the_model_decides_how(demo_workspace):
    model_dir = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    key_plain, plain = target_predictor(model_dir, target_segment=False)
    key_seg, seg = target_predictor(model_dir, target_segment=True)
    assert not plain.segment and seg.segment and key_plain != key_seg
    assert seg.crop_cfg.size == plain.crop_cfg.size == 32


def test_a_missing_target_root_fails_naming_target_and_root(trained_view, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    root = trained_view("cross.targets=[all_idb2]", f"+cross.roots.all_idb2={missing}")
    assert run_stage(root, "cross_eval", "svm_hog") == 1
    err = capsys.readouterr().err
    assert "'all_idb2'" in err and str(missing) in err


@pytest.mark.parametrize(
    ("targets", "evaluated"),
    [("[all_idb2, synthetic_cnmc]", ["synthetic_cnmc"]), ("[all_idb2]", [])],
)
def test_a_missing_target_root_is_skipped_when_asked(
    trained_view, tmp_path, caplog, targets, evaluated
):
    missing = tmp_path / "nowhere"
    root = trained_view(
        f"cross.targets={targets}", f"+cross.roots.all_idb2={missing}", "cross.on_missing=skip"
    )
    with caplog.at_level(logging.WARNING):
        assert run_stage(root, "cross_eval", "svm_hog") == 0
    assert "skipped" in caplog.text and str(missing) in caplog.text
    cross = root / paths.cross_dir("synthetic")
    assert sorted(p.name for p in cross.iterdir()) == evaluated
    assert ("no target evaluated" in caplog.text) == (not evaluated)


def test_a_root_for_a_dataset_that_is_no_target_is_named(trained_view, tmp_path, capsys):
    """A misspelt root would leave its target reading the default root without a word."""
    root = trained_view(f"+cross.roots.synthetic_cmnc={tmp_path}")
    assert run_stage(root, "cross_eval", "svm_hog") == 1
    err = capsys.readouterr().err
    assert "cross.roots.synthetic_cmnc: not one of cross.targets ['synthetic_cnmc']" in err
    assert not (root / paths.cross_dir("synthetic")).exists()


def test_an_untrained_model_is_named_before_the_target_is_read(tmp_path, capsys, monkeypatch):
    """It read and hashed every target image, then blamed a missing preprocess.json on "an
    older version or by hand"."""
    from pipeline.evaluate import cross_dataset

    root = make_workspace(tmp_path)
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    for name in ("generate_demo", "ingest"):
        assert run_stage(root, name) == 0
    read: list[str] = []
    monkeypatch.setattr(cross_dataset, "build_manifest", lambda *args: read.append("target"))
    assert run_stage(root, "cross_eval", "svm_hog") == 1
    err = capsys.readouterr().err
    assert "models/synthetic/svm_hog: no such model folder" in err and "train@svm_hog" in err
    assert read == []
