"""Stage segment on a copy of the demo workspace."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pandas as pd

from pipeline import paths
from tests.workspace import copy_workspace, make_workspace, run_stage


def test_masks_that_match_no_image_are_said_not_silently_unscored(
    demo_workspace, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    elsewhere = tmp_path / "masks_of_another_dataset"
    elsewhere.mkdir()
    (elsewhere / "Im999_1.png").write_bytes(b"")
    root = copy_workspace(demo_workspace, tmp_path / "ws", [f"dataset.masks={elsewhere}"])
    with caplog.at_level(logging.WARNING):
        assert run_stage(root, "segment") == 0
    assert f"dataset.masks: no image has a mask in {elsewhere}" in caplog.text
    summary = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    assert summary["segmented"] and "cell_dice_mean" not in summary


def test_a_held_out_mask_folder_names_the_masks_no_image_took(tmp_path, monkeypatch, caplog):
    """Masks for some images only, plus masks of images not in the dataset: the images with a
    mask are scored, and every mask that matched none is named and counted."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws")
    assert run_stage(root, "generate_demo") == 0
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    demo_masks = root / "artifacts" / "demo" / "smear_masks"
    for name in ("Im002_1.png", "Im004_1.png"):
        shutil.copy(demo_masks / name, held_out / name)
    shutil.copy(demo_masks / "Im006_1.png", held_out / "Im006_0.png")  # the other label
    shutil.copy(demo_masks / "Im008_1.png", held_out / "Im999_1.png")  # no such image
    make_workspace(root, [f"dataset.masks={held_out}"])
    assert run_stage(root, "ingest") == 0
    with caplog.at_level(logging.WARNING):
        assert run_stage(root, "segment") == 0
    summary = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    assert summary["n_scored"] == 2 and summary["n_masks_unmatched"] == 2
    assert "2 entries in" in caplog.text and "['Im006_0.png', 'Im999_1.png']" in caplog.text


def test_images_whose_cell_was_not_found_are_named_in_the_metrics_and_scores(tmp_path, monkeypatch):
    """A fallback to the whole image is a failure the per-image report must name, not only
    a count and a log line."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws", ["segment.min_area_px=100000000"])  # nothing is
    for stage in ("generate_demo", "ingest", "segment"):  # large enough to be the cell
        assert run_stage(root, stage) == 0
    summary = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    scores = pd.read_csv(root / paths.segmented("synthetic") / "scores.csv")
    assert summary["n_cell_not_found"] == summary["n_images"] == len(scores)
    assert sorted(summary["cell_not_found_ids"]) == sorted(scores["id"])
    assert not scores["found"].any()


def test_every_bad_mask_is_named_in_one_error(tmp_path, monkeypatch, capsys):
    """Not the first one only, found again after each fix and rerun."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws")
    assert run_stage(root, "generate_demo") == 0
    masks = tmp_path / "masks"
    shutil.copytree(root / "artifacts" / "demo" / "smear_masks", masks)
    (masks / "Im005_1.png").write_bytes(b"not an image")
    grey = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 3  # a label map, not the code
    cv2.imwrite(str(masks / "Im007_1.png"), grey.astype(np.uint8))
    make_workspace(root, [f"dataset.masks={masks}"])
    assert run_stage(root, "ingest") == 0
    assert run_stage(root, "segment") == 1
    error = capsys.readouterr().err
    assert "2 masks cannot be scored" in error
    assert "Im005_1.png: not a readable mask image" in error
    assert "Im007_1.png: 100% of pixels are none of the mask colours" in error
    assert not (root / paths.segmented("synthetic")).exists()


def test_masks_set_while_nothing_is_segmented_are_said_unscored(tmp_path, monkeypatch, caplog):
    """C-NMC-like data (segment: false) or segment.method=none with dataset.masks set: the
    stage passes the images through, and says the masks were not scored."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws", ["segment.method=none"])
    for stage in ("generate_demo", "ingest"):
        assert run_stage(root, stage) == 0
    with caplog.at_level(logging.WARNING):
        assert run_stage(root, "segment") == 0
    assert "dataset.masks is set (artifacts/demo/smear_masks) but nothing is segmented" in (
        caplog.text
    )
    summary = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    assert summary == {"segmented": False, "n_images": 32}


def test_a_mask_two_images_find_by_file_name_stops_the_stage(tmp_path, monkeypatch, capsys):
    """A folder dataset with `x.png` under both class folders and one mask `x.png`: both
    images found it, so one was scored against the other's cell, in silence."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws")
    assert run_stage(root, "generate_demo") == 0
    demo = root / "artifacts" / "demo"
    images, masks = tmp_path / "images", tmp_path / "masks"
    masks.mkdir()
    for folder, label in (("Malignant", "1"), ("Benign", "0")):
        (images / folder).mkdir(parents=True)
        for k, source in enumerate(sorted(demo.glob(f"smear/*_{label}.png"))[:4]):
            shutil.copy(source, images / folder / f"cell{k}.png")
    shutil.copy(demo / "smear_masks" / "Im001_1.png", masks / "cell0.png")
    make_workspace(
        root,
        [
            "dataset=folder_example",
            f"dataset.root={images}",
            "dataset.classes={all: [Malignant], hem: [Benign]}",
            "dataset.segment=true",
            f"dataset.masks={masks}",
        ],
    )
    assert run_stage(root, "ingest") == 0
    assert run_stage(root, "segment") == 1
    assert "cell0.png: ['Benign__cell0', 'Malignant__cell0']" in capsys.readouterr().err


def test_label_map_masks_score_alike_given_their_mask_code(tmp_path, monkeypatch):
    """The demo's colour masks recoded as a grey label map (0, 1, 2): with `dataset.mask_code`
    naming that code, the stage scores exactly what it scores on the colour masks."""
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    root = make_workspace(tmp_path / "ws")
    for stage in ("generate_demo", "ingest", "segment"):
        assert run_stage(root, stage) == 0
    colour_scores = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in sorted((root / "artifacts" / "demo" / "smear_masks").iterdir()):
        mask = cv2.imread(str(path))  # BGR: white background, blue cytoplasm, cyan nucleus
        grey = np.where(mask[:, :, 2] > 127, 0, np.where(mask[:, :, 1] > 127, 2, 1))
        cv2.imwrite(str(labels / path.name), grey.astype(np.uint8))
    code = "dataset.mask_code={background:0,cytoplasm:1,nucleus:2}"
    make_workspace(root, [f"dataset.masks={labels}", code])
    assert run_stage(root, "segment") == 0
    label_scores = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    assert label_scores["n_scored"] == colour_scores["n_scored"] > 0
    assert label_scores == colour_scores
    make_workspace(root, [f"dataset.masks={labels}"])  # read with ALL-IDB2's colours: refused
    assert run_stage(root, "segment") != 0
