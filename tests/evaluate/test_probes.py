import logging

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.evaluate.probes import PROBES, audit, image_features, shortcut_table
from pipeline.io import write_image
from pipeline.schema import ProbeConfig

SIDE = 32
CFG = OmegaConf.structured(ProbeConfig(folds=4))


def smear(tmp_path, leak: bool, n_per_class: int = 30, seed: int = 0) -> pd.DataFrame:
    """Cells on a noisy pink background; with `leak`, the background tint follows the label.

    The cell's colour is drawn independently of the label, so only the leak can be learnt.
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
        image[cell] = np.array([120, 70, 160]) + rng.normal(0, 10, 3)
        image = np.clip(image, 0, 255).astype(np.uint8)
        mask = np.where(dist <= radius / 2, 255, np.where(cell, 128, 0)).astype(np.uint8)
        model_input = np.where(cell[:, :, None], image, 0).astype(np.uint8)
        paths = {}
        for kind, array in (("raw", image), ("mask", mask), ("input", model_input)):
            paths[kind] = str(tmp_path / kind / f"im{k}.png")
            write_image(paths[kind], array)
        rows.append({"id": f"im{k}", "label": label, "group": f"im{k}", **paths})
    return pd.DataFrame(rows)


def test_a_background_that_carries_the_label_is_found_and_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.probes"):
        result = audit(smear(tmp_path, leak=True), CFG, seed=0, n_boot=200)
    assert result["background_roc_auc"] > 0.9
    assert result["shortcut_warning"]
    assert "background alone predicts the label" in caplog.text
    # segmentation blacked the background out: nothing left to learn from it
    assert result["model_input_background_roc_auc"] == pytest.approx(0.5, abs=0.1)
    assert result["cell_roc_auc"] < 0.75


def test_a_background_without_the_label_stays_near_chance(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluate.probes"):
        result = audit(smear(tmp_path, leak=False), CFG, seed=0, n_boot=200)
    assert 0.25 < result["background_roc_auc"] < 0.75
    assert not result["shortcut_warning"]
    assert "background alone" not in caplog.text
    assert result["background_roc_auc_ci_low"] <= result["background_roc_auc"]
    assert result["n"] == 60 and result["applicable"]


def test_report_section_lists_every_probe(tmp_path):
    result = audit(smear(tmp_path, leak=True, n_per_class=12), CFG, seed=0, n_boot=50)
    table = shortcut_table({"toy": result, "cnmc_like": {"applicable": False}})
    assert list(table["probe"]) == list(PROBES)
    assert set(table["dataset"]) == {"toy"}


def test_a_mask_of_another_size_is_refused():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        image_features(image, np.zeros((9, 10), bool), image, bins=4)


def test_an_empty_region_gives_zero_features_of_the_usual_length():
    image = np.full((6, 6, 3), 50, np.uint8)
    features = image_features(image, np.ones((6, 6), bool), image, bins=4)
    assert len(features["background"]) == len(features["cell"]) == 3 * 3 * (4 + 2)
    assert not features["background"].any()
