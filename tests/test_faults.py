"""The fault matrix: every expected failure ends a stage with exit code 1 and one clear line
naming the file, key or store, and leaves every earlier output byte-identical."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline import manifest, paths
from pipeline.io import file_digest
from tests.workspace import copy_workspace, run_stage

REPO = Path(__file__).resolve().parents[1]
DATA = paths.dataset_dir("synthetic")


@pytest.fixture
def workspace(demo_workspace, tmp_path, monkeypatch) -> Path:
    """A writable copy of the demo workspace's data and models; stages run in-process."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")  # workers in-process, so monkeypatches apply
    return copy_workspace(demo_workspace, tmp_path / "ws", parts=("artifacts", "models"))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under artifacts/ and models/ (the outputs a failure must not touch)."""
    return {
        str(p.relative_to(root)): file_digest(p)
        for part in ("artifacts", "models")
        for p in sorted((root / part).rglob("*"))
        if p.is_file()
    }


def temp_leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


def fails_cleanly(root: Path, capsys, stage: str, *args: str) -> str:
    """Run a stage that must fail; return its one-line error after checking nothing changed."""
    before = snapshot(root)
    assert run_stage(root, stage, *args) == 1
    err = capsys.readouterr().err
    name = "@".join([stage, *(a for a in args if "=" not in a)])  # train@svm_hog
    assert f"error in stage {name}:" in err and "Traceback" not in err
    assert snapshot(root) == before
    assert temp_leftovers(root) == []
    return err


def one_line(err: str) -> bool:
    """The error is one line (progress bars aside, which share stderr)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error in stage" in line]
    return len(errors) == 1 and all("error in stage" in line or "it/s]" in line or "img/s]" in line
                                    for line in lines)  # fmt: skip


def test_missing_dataset_root(workspace, capsys):
    err = fails_cleanly(workspace, capsys, "ingest", "dataset.root=no/such/folder")
    assert "no/such/folder: dataset root does not exist" in err


def test_corrupt_image_is_listed_then_quarantined_with_skip(workspace, capsys):
    images = sorted((workspace / "artifacts" / "demo" / "smear").glob("*.png"))
    bad = images[len(images) // 2]
    bad.write_bytes(os.urandom(bad.stat().st_size))
    err = fails_cleanly(workspace, capsys, "ingest")
    assert bad.name in err and "bad files (1)" in err

    assert run_stage(workspace, "ingest", "dataset.on_bad_file=skip") == 0
    quarantined = (workspace / DATA / "quarantine.txt").read_text().splitlines()
    assert len(quarantined) == 1 and bad.name in quarantined[0]
    ids = manifest.read(workspace / paths.manifest("synthetic"))["id"]
    assert len(ids) == len(images) - 1 and bad.stem not in set(ids)


@pytest.mark.parametrize(
    "stage, writer",
    [("crop", "pipeline.stages.crop"), ("augment", "pipeline.preprocess.augment")],
)
def test_disk_full_while_writing_images_keeps_the_previous_output(
    workspace, capsys, monkeypatch, stage, writer
):
    calls = []

    def full_disk(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, image)

    module = importlib.import_module(writer)  # the module whose write_image the stage calls
    real_write = module.write_image
    monkeypatch.setattr(module, "write_image", full_disk)
    err = fails_cleanly(workspace, capsys, stage)
    assert "No space left on device" in err and str(calls[-1]) in err


def test_unreachable_tracking_server_fails_before_training(workspace, capsys, monkeypatch):
    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    try:
        err = fails_cleanly(workspace, capsys, "train", "resnet50")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert time.monotonic() - started < 30
    assert "http://127.0.0.1:9" in err and "not reachable" in err


def _edit_params(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params
    for part in section.split("."):
        node = node[part]
    node[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize(
    ("stage", "args", "section", "key", "value", "named"),
    [
        ("train", ["resnet50"], "models.resnet50", "lr", -0.001, "models.resnet50.lr"),
        ("split", [], "split", "train", 0.5, "split: train + val + test must sum to 1"),
    ],
)
def test_invalid_config_value_names_the_key(
    workspace, capsys, stage, args, section, key, value, named
):
    """Both ways a value reaches a stage: an ad-hoc override, and params.yaml (DVC's way)."""
    err = fails_cleanly(workspace, capsys, stage, *args, f"{section}.{key}={value}")
    assert named in err
    _edit_params(workspace, section, key, value)
    assert named in fails_cleanly(workspace, capsys, stage, *args)


def test_unknown_model_on_the_command_line(workspace):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", "nosuchmodel"],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "error in stage train@nosuchmodel: unknown model 'nosuchmodel'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "stage,args,message",
    [
        ("ingest", ("-S", "dataset.root=/x"), "too many positional arguments (got ['-S'])"),
        ("ingest", ("dataset.root",), "too many positional arguments"),
        ("train", (), "missing a required argument: 'model_name'"),
    ],
)
def test_stray_words_on_a_stage_command_line_print_its_usage(
    workspace, capsys, stage, args, message
):
    before = snapshot(workspace)
    assert run_stage(workspace, stage, *args) == 2
    err = capsys.readouterr().err
    assert message in err and f"usage: python -m pipeline.stages.{stage}" in err
    assert "Traceback" not in err and snapshot(workspace) == before


def test_help_prints_the_stage_usage_and_what_it_does(workspace, capsys):
    assert run_stage(workspace, "train", "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.stages.train <model_name> [key=value ...]")
    assert "Stage train@<model>" in out


def test_a_group_choice_on_a_stage_says_how_to_choose_it(workspace, capsys):
    err = fails_cleanly(workspace, capsys, "ingest", "dataset=all_idb2")
    assert "'dataset' is a config group" in err
    assert "python -m pipeline.config write dataset=all_idb2" in err and one_line(err)


def test_evaluate_refuses_a_model_trained_on_another_split(workspace, capsys):
    """A stage run by hand after a re-split: the test split may hold the model's training cells."""
    prepared = workspace / paths.prepared("synthetic") / "manifest.csv"
    prepared.write_text(prepared.read_text() + "\n")  # any other version of the manifest
    err = fails_cleanly(workspace, capsys, "evaluate", "svm_hog")
    assert "was trained on another version of" in err and "retrain it" in err and one_line(err)


def test_a_prepared_dataset_without_its_card_fails_before_training(workspace, capsys):
    """How its images were cropped is unknown, so predict could not prepare a raw image."""
    card = workspace / paths.prepared("synthetic") / paths.PREPROCESS_CARD
    card.unlink()
    err = fails_cleanly(workspace, capsys, "train", "resnet50")
    assert f"no {paths.PREPROCESS_CARD}" in err and "dvc repro" in err and one_line(err)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_split_rerun_without_augment_is_refused(workspace, capsys, stage):
    """Training or scoring the old split while split.json and the report show the new one."""
    resplit = manifest.read(workspace / paths.split_table("synthetic"))
    resplit["split"] = resplit["split"].map({"train": "val", "val": "train", "test": "test"})
    manifest.write(resplit, workspace / paths.split_table("synthetic"))
    err = fails_cleanly(workspace, capsys, stage, "svm_hog")
    assert "was built from another split than today's split table" in err and one_line(err)


def test_crops_changed_since_the_split_are_refused_by_augment(workspace, capsys):
    table = manifest.read(workspace / paths.split_table("synthetic"))
    manifest.write(table.iloc[1:], workspace / paths.split_table("synthetic"))
    err = fails_cleanly(workspace, capsys, "augment")
    assert "misses 1 new one(s): run `python -m pipeline.stages.split` first" in err


def test_evaluating_a_model_never_trained_names_the_stage_to_run(workspace, capsys):
    import shutil

    shutil.rmtree(workspace / paths.model_dir("synthetic", "svm_hog"))
    err = fails_cleanly(workspace, capsys, "evaluate", "svm_hog")
    assert "no trained model; run `dvc repro train@svm_hog`" in err and one_line(err)


def test_a_corrupt_model_file_or_metrics_file_is_named(workspace, capsys):
    model = workspace / paths.model_dir("synthetic", "svm_hog")
    weights = next(p for p in model.iterdir() if p.suffix == ".joblib")
    weights.write_bytes(weights.read_bytes()[:100])
    err = fails_cleanly(workspace, capsys, "evaluate", "svm_hog")
    assert f"{model.relative_to(workspace)}: its weights cannot be loaded" in err
    metrics = workspace / paths.metrics("synthetic", "svm_hog")
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("<<<<<<< HEAD\n{}")  # a merge conflict in a committed metrics file
    err = fails_cleanly(workspace, capsys, "report")
    assert "svm_hog.json: not valid JSON" in err


def test_every_user_facing_error_derives_from_one_base():
    from pipeline.config import ConfigError
    from pipeline.errors import PipelineError
    from pipeline.io import BadInputError, ImageReadError
    from pipeline.manifest import ManifestError
    from pipeline.models.weights import MissingWeightsError
    from pipeline.preprocess.masks import MaskError
    from pipeline.tracking import TrackingUnavailableError

    for error in (ConfigError, BadInputError, ImageReadError, ManifestError, MissingWeightsError,
                  MaskError, TrackingUnavailableError):  # fmt: skip
        assert issubclass(error, PipelineError), error


def test_a_manifest_with_an_unknown_label_is_one_line(workspace, capsys):
    path = workspace / paths.segmented("synthetic") / "manifest.csv"
    text = path.read_text().replace(",all,", ",blast,", 1)
    path.write_text(text)
    err = fails_cleanly(workspace, capsys, "crop")
    assert "unknown labels ['blast']" in err and one_line(err)


def test_an_unreadable_ground_truth_mask_is_one_line(workspace, capsys):
    masks = workspace / "artifacts" / "demo" / "smear_masks"
    first = sorted(masks.iterdir())[0]
    first.write_bytes(b"not a mask")
    err = fails_cleanly(workspace, capsys, "segment")
    assert f"{first.name}: not a readable mask image" in err
    assert one_line(err)


def test_an_unknown_model_kind_is_one_line(workspace, capsys):
    err = fails_cleanly(workspace, capsys, "train", "svm_hog", "models.svm_hog.kind=forest")
    assert "unknown model kind 'forest'" in err and one_line(err)


def test_an_unknown_adapter_is_one_line(workspace, capsys):
    from pipeline.data import build_manifest

    with pytest.raises(Exception) as caught:
        build_manifest({"name": "x", "adapter": "dicom", "root": str(workspace)}, workspace)
    assert "dataset.adapter" in str(caught.value)
    err = fails_cleanly(workspace, capsys, "ingest", "dataset.adapter=dicom")
    assert "dataset.adapter" in err and one_line(err)
