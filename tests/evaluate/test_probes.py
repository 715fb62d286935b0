import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.probes import PROBES, audit, colour_features, image_features, probe_scores
from pipeline.io import read_image, write_image
from pipeline.preprocess.crop import crop_and_resize, crop_footprint
from pipeline.preprocess.segment import Segmentation, apply_mask_and_crop
from pipeline.report.sections import shortcut_table
from tests.conftest import section

SIDE = 32
CFG = section("probe", folds=4)
CROP = section("crop", size=24)


def model_input_of(image: np.ndarray, cell: np.ndarray, input_tint: np.ndarray | None = None):
    """What the segment and crop stages make of `image`: the cell on black, cropped, resized;
    with `input_tint`, that colour painted over everything outside the cell."""
    segmented, window = apply_mask_and_crop(image, Segmentation(cell, cell, found=True))
    model_input = crop_and_resize(segmented, CROP)
    if input_tint is not None:
        outside = ~crop_footprint(segmented, window, CROP)
        model_input[outside] = input_tint
    return model_input


def smear(
    tmp_path,
    leak: bool,
    n_per_class: int = 30,
    seed: int = 0,
    input_leak: bool = False,
    cell_signal: bool = False,
) -> pd.DataFrame:
    """Cells on a noisy pink background; with `leak`, the background tint follows the label;
    with `input_leak`, a near-black tint that follows the label is painted into the models'
    input around the cell (what an imperfect segmentation or a stain halo would leave).

    The cell's colour is drawn independently of the label, so only a leak can be learnt;
    with `cell_signal` it follows the label (what a model should learn, not a shortcut).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    rows = []
    for k in range(2 * n_per_class):
        label = "all" if k % 2 else "hem"
        tint = (14 if label == "all" else -14) if leak else 0
        background = np.array([225 + tint, 190, 205 - tint]) + rng.normal(0, 8, 3)
        image = background + rng.normal(0, 6, (SIDE, SIDE, 3))
        radius = rng.uniform(6, 11)
        dist = np.hypot(yy - SIDE / 2, xx - SIDE / 2)
        cell = dist <= radius
        shade = (40 if label == "all" else -40) if cell_signal else 0
        image[cell] = np.array([120 + shade, 70, 160 - shade]) + rng.normal(0, 10, 3)
        image = np.clip(image, 0, 255).astype(np.uint8)
        mask = np.where(dist <= radius / 2, 255, np.where(cell, 128, 0)).astype(np.uint8)
        tint = None
        if input_leak:
            tint = np.array([0, 0, 6] if label == "all" else [6, 0, 0], np.uint8)
        model_input = model_input_of(image, cell, tint)
        paths = {}
        for kind, array in (("raw", image), ("mask", mask), ("input", model_input)):
            paths[kind] = str(tmp_path / kind / f"im{k}.png")
            write_image(paths[kind], array)
        rows.append({"id": f"im{k}", "label": label, "group": f"im{k}", **paths})
    return pd.DataFrame(rows)


def test_a_background_that_carries_the_label_is_found_and_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.probes"):
        result = audit(smear(tmp_path, leak=True), CFG, CROP, seed=0, n_boot=200)
    assert result["background_roc_auc"] > 0.9
    assert result["shortcut_warning"]
    assert "background alone predicts the label" in caplog.text
    # segmentation blacked the background out: nothing left to learn from it
    assert result["model_input_background_roc_auc"] == pytest.approx(0.5, abs=0.15)
    assert not result["model_input_warning"]
    assert result["cell_roc_auc"] < 0.75


def test_the_cells_own_colour_blended_at_its_edge_is_no_background_shortcut(tmp_path):
    """The resize blends the cell's edge into the pixels beside it: that is the cell, and a
    cell colour that follows the label must not read as the background reaching the model."""
    result = audit(smear(tmp_path, leak=False, cell_signal=True), CFG, CROP, seed=0, n_boot=200)
    assert result["cell_roc_auc"] > 0.9
    assert result["model_input_background_roc_auc"] == pytest.approx(0.5, abs=0.15)
    assert not result["model_input_warning"]


def test_a_background_without_the_label_stays_near_chance(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.probes"):
        result = audit(smear(tmp_path, leak=False), CFG, CROP, seed=0, n_boot=200)
    assert 0.25 < result["background_roc_auc"] < 0.75
    assert not result["shortcut_warning"]
    assert "background alone" not in caplog.text
    assert result["background_roc_auc_ci_low"] <= result["background_roc_auc"]
    assert result["n"] == 60 and result["applicable"]


def test_report_section_lists_every_probe(tmp_path):
    result = audit(smear(tmp_path, leak=True, n_per_class=12), CFG, CROP, seed=0, n_boot=50)
    table = shortcut_table({"toy": result, "cnmc_like": {"applicable": False}})
    assert list(table["probe"]) == list(PROBES)
    assert set(table["dataset"]) == {"toy"}


def test_a_tinted_model_input_background_is_caught_where_exact_black_saw_nothing(tmp_path, caplog):
    frame = smear(tmp_path, leak=False, input_leak=True)
    # The former probe read only the exactly black pixels of the input: the tint leaves none
    # outside the cell, so it scored chance and could not warn.
    inputs = [read_image(path) for path in frame["input"]]
    exact_black = np.stack([colour_features(im, im.max(axis=2) == 0, CFG.bins) for im in inputs])
    former = probe_scores(exact_black, frame, CFG.folds, CFG.repeats, seed=0, n_boot=50)
    assert former["roc_auc"] <= CFG.warn_roc_auc
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.probes"):
        result = audit(frame, CFG, CROP, seed=0, n_boot=200)
    assert result["model_input_background_roc_auc"] > 0.9
    assert result["model_input_warning"] and not result["shortcut_warning"]
    assert "models' input still carries it" in caplog.text


def test_a_mask_of_another_size_is_refused():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        image_features(image, np.zeros((9, 10), bool), image, CROP, bins=4)


def test_an_empty_region_gives_zero_features_of_the_usual_length():
    image = np.full((6, 6, 3), 50, np.uint8)
    cell = np.ones((6, 6), bool)
    features = image_features(image, cell, model_input_of(image, cell), CROP, bins=4)
    assert len(features["background"]) == len(features["cell"]) == 3 * 3 * (4 + 2)
    assert not features["background"].any()
