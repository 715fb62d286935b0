"""Segmentation on drawn cells with known masks, plus the real ALL-IDB2 dev masks when present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.config import compose
from pipeline.io import read_image
from pipeline.preprocess.masks import (
    dice,
    find_mask,
    overlap_row,
    read_gt_mask,
    score_segmentations,
)
from pipeline.preprocess.segment import apply_mask_and_crop, segment_cell, select_cell
from pipeline.schema import SegmentConfig
from tests.conftest import section

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CONF = Path(__file__).resolve().parents[2] / "conf" / "segment"

# RGB colours of a Giemsa-stained smear.
BACKGROUND = (225, 222, 205)
RED_CELL = (205, 150, 160)
CYTOPLASM = (185, 175, 215)
NUCLEUS = (95, 60, 150)


def config(**overrides: object):
    return section("segment", **overrides)


def draw_smear(
    side: int = 103,
    centre: tuple[int, int] | None = None,
    background: tuple[int, int, int] = BACKGROUND,
    red_cells: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A white cell (nucleus + lighter cytoplasm) among touching red cells; known masks."""
    rng = np.random.default_rng(seed)
    image = np.zeros((side, side, 3), np.uint8)
    image[:] = background
    cx, cy = centre or (side // 2, side // 2)
    s = side / 103
    if red_cells:
        for angle in (0.3, 1.9, 3.4, 4.8):
            x = int(cx + 33 * s * np.cos(angle))
            y = int(cy + 33 * s * np.sin(angle))
            cv2.circle(image, (x, y), int(14 * s), RED_CELL, -1)
    cell = np.zeros((side, side), np.uint8)
    nucleus = np.zeros((side, side), np.uint8)
    cv2.circle(cell, (cx, cy), int(22 * s), 1, -1)
    cv2.ellipse(nucleus, (cx + int(3 * s), cy), (int(14 * s), int(12 * s)), 20, 0, 360, 1, -1)
    image[cell > 0] = CYTOPLASM
    image[nucleus > 0] = NUCLEUS
    noise = rng.normal(0, 4, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, cell > 0, nucleus > 0


@pytest.mark.parametrize("method", ["otsu", "otsu_active_contour"])
@pytest.mark.parametrize("channel", ["gray", "lab_b", "saturation"])
def test_segments_drawn_smear_cell(method: str, channel: str) -> None:
    image, cell, nucleus = draw_smear()
    seg = segment_cell(image, config(method=method, channel=channel))
    assert seg.found
    assert seg.cell.dtype == bool and seg.cell.shape == cell.shape
    # Gray and saturation cannot tell touching red cells apart; b* can (why it is the default).
    assert dice(seg.cell, cell) > (0.9 if channel == "lab_b" else 0.5)
    if channel == "lab_b":
        assert dice(seg.nucleus, nucleus) > 0.85


def test_three_classes_keep_a_bluish_background_out() -> None:
    # A scant-cytoplasm cell, a bluish background and yellower red cells: on b* the three
    # classes are cell / background / red cells, and the background must not join the cell.
    image, cell, _ = draw_smear(background=(212, 206, 232))
    image[cell] = NUCLEUS
    for classes in (2, 3):
        seg = segment_cell(image, config(method="otsu", otsu_classes=classes))
        assert dice(seg.cell, cell) > 0.9, classes


@pytest.mark.parametrize("method", ["otsu", "otsu_active_contour"])
def test_segments_cell_on_black_like_cnmc(method: str) -> None:
    image, cell, _ = draw_smear(side=150, background=(0, 0, 0), red_cells=False)
    for channel in ("gray", "lab_b"):
        seg = segment_cell(image, config(method=method, channel=channel))
        assert seg.found
        assert dice(seg.cell, cell) > 0.9, channel


def test_opening_cuts_thin_bridges_to_other_blobs() -> None:
    image = np.full((103, 103, 3), BACKGROUND, np.uint8)
    truth = np.zeros((103, 103), np.uint8)
    cv2.circle(truth, (51, 51), 20, 1, -1)
    for x, y in ((88, 51), (51, 88)):  # same-coloured blobs joined to the cell by a thin line
        cv2.circle(image, (x, y), 12, NUCLEUS, -1)
        cv2.line(image, (51, 51), (x, y), NUCLEUS, 2)
    image[truth > 0] = NUCLEUS
    paper = config(method="otsu", channel="gray", otsu_classes=2)
    assert dice(segment_cell(image, paper).cell, truth > 0) < 0.85
    opened = config(method="otsu", channel="gray", otsu_classes=2, opening_radius_px=8)
    assert dice(segment_cell(image, opened).cell, truth > 0) > 0.95


def test_convex_hull_closes_a_lobed_cell() -> None:
    image = np.full((103, 103, 3), BACKGROUND, np.uint8)
    truth = np.zeros((103, 103), np.uint8)
    cv2.circle(truth, (51, 51), 25, 1, -1)
    image[truth > 0] = NUCLEUS
    cv2.rectangle(image, (51, 20), (80, 51), BACKGROUND, -1)  # a notch, as between lobes
    for hull in (False, True):
        seg = segment_cell(image, config(method="otsu", convex_hull=hull))
        assert (dice(seg.cell, truth > 0) > 0.9) == hull


def test_picks_component_nearest_the_centre() -> None:
    foreground = np.zeros((100, 100), bool)
    foreground[5:40, 5:40] = True  # large, far from the centre
    foreground[45:60, 50:62] = True  # small, covers the centre
    chosen = select_cell(foreground, min_area=10)
    assert chosen[50, 55] and not chosen[10, 10]


def test_min_area_scales_with_image_side() -> None:
    # A 12x12 blob (144 px) passes min_area 100 at the reference side 257 ...
    cfg = config(method="otsu", channel="gray", otsu_classes=2, min_area_px=100)
    small = np.full((257, 257, 3), 230, np.uint8)
    small[122:134, 122:134] = 40
    assert segment_cell(small, cfg).found
    # ... but at twice the side the same blob is below 100 * 2^2 = 400 px: not a cell.
    large = np.full((514, 514, 3), 230, np.uint8)
    large[251:263, 251:263] = 40
    assert not segment_cell(large, cfg).found
    large[245:269, 245:269] = 40  # 24x24 = 576 px: the scaled-up blob is found again
    assert segment_cell(large, cfg).found


def test_method_none_keeps_whole_image() -> None:
    image, _, _ = draw_smear()
    seg = segment_cell(image, config(method="none"))
    assert seg.found and seg.cell.all()


def test_blank_image_falls_back_to_whole_image() -> None:
    blank = np.full((64, 64, 3), 200, np.uint8)
    for method in ("otsu", "otsu_active_contour"):
        seg = segment_cell(blank, config(method=method))
        assert not seg.found
        assert seg.cell.all() and not seg.nucleus.any()


def test_rejects_bad_input_and_unknown_keys() -> None:
    image, _, _ = draw_smear()
    with pytest.raises(ValueError, match="RGB uint8"):
        segment_cell(image[:, :, 0], config())
    with pytest.raises(ValueError, match="segment.channel"):
        segment_cell(image, config(channel="hue"))
    with pytest.raises(ValueError, match="segment.method"):
        segment_cell(image, config(method="snake"))


def test_apply_mask_and_crop() -> None:
    image, _, _ = draw_smear(centre=(40, 60))
    seg = segment_cell(image, config(method="otsu"))
    crop, mask = apply_mask_and_crop(image, seg)
    rows, cols = np.flatnonzero(seg.cell.any(1)), np.flatnonzero(seg.cell.any(0))
    assert crop.shape == (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, 3)
    assert mask.shape == crop.shape[:2] and mask.dtype == bool
    assert (crop[~mask] == 0).all()
    assert (crop[mask] == image[seg.cell]).all()


def test_conf_files_match_schema_and_methods() -> None:
    for path in CONF.glob("*.yaml"):
        composed = compose(overrides=[f"segment={path.stem}"]).segment
        cfg = OmegaConf.merge(OmegaConf.structured(SegmentConfig), composed)
        assert cfg.method == path.stem


@pytest.mark.real_data
def test_real_all_idb2_dev_masks_default_config_dice() -> None:
    img_dir, mask_dir = DATA / "ALL_IDB2" / "img", DATA / "ALL_IDB2_masks" / "dev"
    if not mask_dir.is_dir() or not img_dir.is_dir():
        pytest.skip(f"real data not found under {DATA}")
    cfg = OmegaConf.merge(OmegaConf.structured(SegmentConfig), compose().segment)
    rows = []
    for path in sorted(img_dir.iterdir()):
        mask = find_mask(mask_dir, path.stem)
        if mask is None:
            continue
        image = read_image(path)
        seg = segment_cell(image, cfg)
        rows.append(overlap_row(path.stem, seg.cell, seg.nucleus, *read_gt_mask(mask, image.shape)))
    summary, _ = score_segmentations(rows)
    assert summary["n_scored"] >= 100
    assert summary["cell_dice_mean"] >= 0.90, summary
    assert summary["nucleus_dice_mean"] >= 0.85, summary
