import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.predict import list_images, main, overlay_names


def test_predict_folder_reports_a_corrupt_file_and_classifies_the_rest(
    demo_workspace, tmp_path, capsys
):
    raw = sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[:3]
    for image in raw:
        shutil.copy(image, tmp_path / image.name)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "predictions.csv"
    model = demo_workspace / paths.model_dir("synthetic", "resnet50")
    assert main([str(model), str(tmp_path), "--output", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 4
    broken = table[table["path"].str.endswith("broken.png")].iloc[0]
    assert "broken.png" in broken["error"] and broken["prediction"] == ""
    good = table[table["error"] == ""]
    p_all = good["p_all"].astype(float)
    assert (good["prediction"] == np.where(p_all >= 0.5, "all", "hem")).all()
    assert np.allclose(good["probability"].astype(float), np.maximum(p_all, 1 - p_all))
    assert "1 file(s) could not be predicted" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["svm_hog", "resnet50", "yolov8"])
def test_predict_gives_the_p_all_evaluate_scored_for_the_same_cells(
    model, demo_workspace, tmp_path
):
    """The CLI segments and crops raw images from the model's preprocessing card; evaluate read
    the pipeline's own segmented, cropped files. Same cells, same P(ALL)."""
    root = demo_workspace
    scored = pd.read_csv(root / paths.plots("synthetic", model) / "predictions.csv")
    split = pd.read_csv(root / paths.split_table("synthetic")).set_index("id")
    for image_id in scored["id"]:
        source = root / split.loc[image_id, "source"]
        shutil.copy(source, tmp_path / f"{image_id}{source.suffix}")
    out = tmp_path / "predictions.csv"
    assert (
        main([str(root / paths.model_dir("synthetic", model)), str(tmp_path), "--output", str(out)])
        == 0
    )
    predicted = pd.read_csv(out).assign(id=lambda t: t["path"].map(lambda p: Path(p).stem))
    merged = scored.merge(predicted, on="id", suffixes=("_evaluate", "_predict"))
    assert len(merged) == len(scored) > 0
    np.testing.assert_allclose(merged["p_all_predict"], merged["p_all_evaluate"], atol=1e-6)


def test_predict_single_image_prints_class_and_probability(demo_workspace, capsys):
    image = sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[0]
    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    assert main([str(model), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image)) and ("all" in line or "hem" in line) and "p=" in line


def test_predict_unknown_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path)]) == 1
    assert "model folder not found" in capsys.readouterr().err


def test_predict_writes_into_a_new_folder_and_refuses_an_empty_one(
    demo_workspace, tmp_path, capsys
):
    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    images = tmp_path / "images"
    images.mkdir()
    assert main([str(model), str(images)]) == 1
    assert "no files to predict" in capsys.readouterr().err
    shutil.copy(sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[0], images)
    (images / "gone.png").symlink_to(tmp_path / "missing.png")  # a broken link gets a row
    out = tmp_path / "new" / "deeper" / "predictions.csv"
    assert main([str(model), str(images), "--output", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 2 and table.loc[table["path"].str.endswith("gone.png"), "error"].all()


def test_predict_from_an_unknown_registry_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["models:/no-such-model@champion", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "models:/no-such-model@champion: cannot be fetched from the model registry" in err
    assert "registered models: none" in err and "Traceback" not in err


def test_a_numbered_folder_is_listed_in_number_order(tmp_path):
    """C-NMC's test sets are 1.bmp ... 2586.bmp: the CSV follows their numbers."""
    for name in ("10.bmp", "2.bmp", "1.bmp", "b/3.png", "a10/1.png", "a9/1.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listed = [path.relative_to(tmp_path).as_posix() for path in list_images(tmp_path)]
    assert listed == ["1.bmp", "2.bmp", "10.bmp", "a9/1.png", "a10/1.png", "b/3.png"]


def test_predict_lists_what_ingest_would_read_not_hidden_files_or_os_clutter(tmp_path):
    for name in ("a.png", "sub/b.png", ".DS_Store", "Thumbs.db", "desktop.ini",
                 ".ipynb_checkpoints/a-checkpoint.png", "sub/._b.png"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == [tmp_path / "a.png", tmp_path / "sub" / "b.png"]


def test_predict_reads_a_linked_folder_once_and_gives_a_pipe_its_own_row(tmp_path):
    import os

    batch = tmp_path / "elsewhere"
    batch.mkdir()
    (batch / "c.png").write_bytes(b"")
    target = tmp_path / "target"
    target.mkdir()
    (target / "linked").symlink_to(batch)
    (target / "loop").symlink_to(target)  # a cycle is walked once
    os.mkfifo(target / "pipe")
    assert list_images(target) == [target / "linked" / "c.png", target / "pipe"]


def test_an_image_without_a_cell_gets_an_error_not_a_p_all(demo_workspace, tmp_path):
    """Not blank (one pixel differs), so it is read; but a segmenting model finds no cell."""
    from pipeline.io import write_image

    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    assert json.loads((model / paths.PREPROCESS_CARD).read_text())["segment"]
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    flat[5, 5] = 129
    write_image(tmp_path / "flat.png", flat)
    out = tmp_path / "out.csv"
    assert main([str(model), str(tmp_path / "flat.png"), "--output", str(out)]) == 1  # none
    row = pd.read_csv(out, keep_default_na=False).iloc[0]  # predicted, but the row says why
    assert "flat.png: segmentation found no cell" in row["error"] and row["prediction"] == ""


def test_a_folder_where_no_image_can_be_predicted_exits_1_with_every_reason_written(
    demo_workspace, tmp_path, capsys
):
    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"not an image")
    (images / "b.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    assert main([str(model), str(images), "--output", str(out)]) == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 2 and (table["error"] != "").all()
    assert "2 file(s) could not be predicted" in capsys.readouterr().err


def test_predict_never_writes_its_csv_over_a_folder(demo_workspace, tmp_path, capsys):
    model = demo_workspace / paths.model_dir("synthetic", "svm_hog")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[0], images)
    before = sorted(images.iterdir())
    assert main([str(model), str(images), "--output", str(images)]) == 1
    assert "is a folder: give a file name" in capsys.readouterr().err
    assert sorted(images.iterdir()) == before
    assert main([str(model), str(images), "--output", str(before[0] / "x.csv")]) == 1
    assert f"{before[0]} is a file, not a folder" in capsys.readouterr().err


def test_a_registry_model_predicts_and_leaves_no_copy_behind(demo_workspace, tmp_path, monkeypatch):
    import tempfile

    from pipeline import tracking
    from pipeline.config import load

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{demo_workspace}/mlflow.db")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    image = sorted((demo_workspace / "artifacts" / "demo" / "smear").glob("*.png"))[0]
    monkeypatch.chdir(demo_workspace)
    name = tracking.registered_model_name(load(), "synthetic")
    monkeypatch.chdir(tmp_path)  # outside a workspace: conf/'s defaults and the URI suffice
    out = tmp_path / "out.csv"
    assert main([f"models:/{name}@champion", str(image), "--output", str(out)]) == 0
    assert pd.read_csv(out, keep_default_na=False).iloc[0]["error"] == ""
    assert list((tmp_path / "tmp").iterdir()) == []


def test_overlays_of_images_that_differ_only_by_suffix_keep_it():
    relative = [Path("a.png"), Path("a.jpg"), Path("sub/b.tif")]
    assert overlay_names(relative) == ["a.png", "a.jpg", "sub/b"]


def test_an_explain_folder_that_is_a_file_fails_before_predicting(tmp_path, capsys, monkeypatch):
    """Checked with --output, before any prediction: it failed after them all, with a
    FileExistsError traceback."""
    from types import SimpleNamespace

    from pipeline.inference import Predictor

    predicted: list[list[Path]] = []
    cnn = SimpleNamespace(cam_target=lambda: object(), config={}, kind="stub")
    stub = SimpleNamespace(model=cnn, predict_files=predicted.append)
    monkeypatch.setattr(Predictor, "load", staticmethod(lambda source: stub))
    image = tmp_path / "cell.png"
    image.write_bytes(b"")
    taken = tmp_path / "taken.csv"
    taken.write_text("old")
    assert main(["model", str(image), "--explain", str(taken)]) == 1
    assert f"--explain {taken} is a file" in capsys.readouterr().err
    assert main(["model", str(image), "--explain", str(taken / "heatmaps")]) == 1
    assert f"{taken} is a file, not a folder" in capsys.readouterr().err
    assert predicted == [] and taken.read_text() == "old"


def _stub_predictor(monkeypatch, predicted: list) -> None:
    """Predictor.load gives a model whose every prediction is one row without an error."""
    from types import SimpleNamespace

    from pipeline.inference import Predictor

    def predict_files(files):
        predicted.append(files)
        return pd.DataFrame({"path": [str(f) for f in files], "error": ""})

    stub = SimpleNamespace(model=None, predict_files=predict_files)
    monkeypatch.setattr(Predictor, "load", staticmethod(lambda source: stub))


def test_a_full_disk_or_read_only_output_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    """Both ended in a traceback after every prediction; the previous CSV must survive."""
    import errno
    import os
    import tempfile

    from pipeline import predict

    predicted: list = []
    _stub_predictor(monkeypatch, predicted)
    image = tmp_path / "cell.png"
    image.write_bytes(b"")
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    out.write_text("previous\n")

    def full(target, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(predict, "atomic_write_text", full)
    assert main(["model", str(image), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--output {out} cannot be written: No space left on device" in err
    assert "Traceback" not in err and out.read_text() == "previous\n"

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out.parent / "tmpx"))

    predicted.clear()
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(["model", str(image), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--output {out}: its folder cannot be written (Permission denied)" in err
    assert predicted == [] and out.read_text() == "previous\n"  # failed before predicting


class _ConstantModel:
    """Stands in for a trained model: P(ALL) 0.7 for every image it is given."""

    def predict_proba(self, images):
        return np.full(len(images), 0.7)


def test_the_summary_does_not_call_an_image_without_a_cell_unreadable(
    cfg, tmp_path, capsys, monkeypatch
):
    """A file that was read but in which a segmenting model finds no cell was predicted on,
    not unreadable: the summary line must not send the user looking for a corrupt file."""
    from omegaconf import OmegaConf

    from pipeline import predict
    from pipeline.inference import Predictor
    from pipeline.io import write_image

    card = {
        "segment": True,
        "segment_config": OmegaConf.to_container(cfg.segment, resolve=True),
        "crop_config": OmegaConf.to_container(cfg.crop, resolve=True),
    }
    predictor = Predictor(_ConstantModel(), card)
    monkeypatch.setattr(predict.Predictor, "load", lambda source: predictor)
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    flat[5, 5] = 129  # not blank, so it is read; no cell in it
    write_image(tmp_path / "flat.png", flat)
    out = tmp_path / "out.csv"
    assert main(["model", str(tmp_path / "flat.png"), "--output", str(out)]) == 1
    assert "segmentation found no cell" in pd.read_csv(out, keep_default_na=False)["error"][0]
    err = capsys.readouterr().err
    assert "could not be read" not in err and "1 file(s) could not be predicted" in err
