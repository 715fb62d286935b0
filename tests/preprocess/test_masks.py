"""Ground-truth colour masks (ALL-IDB2's code and others, `dataset.mask_code`) and the overlap
scores."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import ALL_IDB2_MASK_CODE, mask_colours
from pipeline.preprocess.masks import (
    MaskError,
    dice,
    find_mask,
    iou,
    mean_interval,
    overlap_row,
    read_gt_mask,
    refuse_shared_masks,
    score_segmentations,
    unmatched_masks,
)

# As OpenCV writes them
NUCLEUS_BGR = ALL_IDB2_MASK_CODE["nucleus"][::-1]
CYTOPLASM_BGR = ALL_IDB2_MASK_CODE["cytoplasm"][::-1]


def write_colour_mask(path: Path, side: int = 250, noise: int = 0) -> None:
    """Cytoplasm disk with a nucleus disk inside on white, BGR as ALL-IDB2 stores it."""
    mask = np.full((side, side, 3), 255, np.uint8)
    cv2.circle(mask, (side // 2, side // 2), side // 4, CYTOPLASM_BGR, -1)
    cv2.circle(mask, (side // 2, side // 2), side // 8, NUCLEUS_BGR, -1)
    if noise:
        jitter = np.random.default_rng(0).integers(-noise, noise + 1, mask.shape)
        mask = np.clip(mask.astype(int) + jitter, 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), mask)


def test_reads_colour_code_and_resizes(tmp_path: Path) -> None:
    path = tmp_path / "Im001_1.tif"
    write_colour_mask(path)
    cell, nucleus = read_gt_mask(path, (100, 100, 3))
    assert cell.shape == nucleus.shape == (100, 100)
    assert cell.dtype == bool and nucleus.dtype == bool
    assert (nucleus <= cell).all()  # the whole cell contains the nucleus
    yy, xx = np.mgrid[:100, :100]
    r = np.hypot(yy - 50, xx - 50)
    assert cell[r < 23].all() and not cell[r > 27].any()
    assert nucleus[r < 11].all() and not nucleus[r > 14].any()


def test_tolerates_jpeg_like_colour_noise(tmp_path: Path) -> None:
    clean, noisy = tmp_path / "clean.png", tmp_path / "noisy.jpg"
    write_colour_mask(clean)
    write_colour_mask(noisy, noise=20)
    for a, b in zip(read_gt_mask(clean, (80, 80)), read_gt_mask(noisy, (80, 80)), strict=True):
        assert dice(a, b) > 0.97


def test_a_label_map_and_a_whole_cell_mask_read_with_their_own_code(tmp_path: Path) -> None:
    """The same cell as a grey label map (0, 1, 2) and as a binary whole-cell mask (0, 255)
    reads as the ALL-IDB2 colour mask does, the binary one with no nucleus."""
    write_colour_mask(tmp_path / "colour.png")
    cell, nucleus = read_gt_mask(tmp_path / "colour.png", (100, 100))
    labels = np.zeros((250, 250), np.uint8)
    cv2.circle(labels, (125, 125), 250 // 4, 1, -1)
    cv2.circle(labels, (125, 125), 250 // 8, 2, -1)
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    label_code = mask_colours({"background": 0, "cytoplasm": 1, "nucleus": 2})
    label_cell, label_nucleus = read_gt_mask(tmp_path / "labels.png", (100, 100), label_code)
    assert (label_cell == cell).all() and (label_nucleus == nucleus).all()
    cv2.imwrite(str(tmp_path / "binary.png"), np.where(labels > 0, 255, 0).astype(np.uint8))
    binary_code = mask_colours({"background": 0, "cytoplasm": 255})
    binary_cell, binary_nucleus = read_gt_mask(tmp_path / "binary.png", (100, 100), binary_code)
    assert (binary_cell == cell).all() and not binary_nucleus.any()
    assert np.isnan(overlap_row("x", cell, nucleus, binary_cell, binary_nucleus)["nucleus_dice"])


def test_a_16_bit_label_map_keeps_its_labels(tmp_path: Path) -> None:
    """A label map saved as a 16-bit PNG (0, 1, 2) reads as its 8-bit twin: OpenCV's 8-bit
    reading divides by 256, which made every pixel background and every Dice 0, silently. A
    16-bit colour mask (white = 65535) still reads as its 8-bit colours."""
    labels = np.zeros((250, 250), np.uint8)
    cv2.circle(labels, (125, 125), 250 // 4, 1, -1)
    cv2.circle(labels, (125, 125), 250 // 8, 2, -1)
    cv2.imwrite(str(tmp_path / "labels8.png"), labels)
    cv2.imwrite(str(tmp_path / "labels16.png"), labels.astype(np.uint16))
    code = mask_colours({"background": 0, "cytoplasm": 1, "nucleus": 2})
    cell8, nucleus8 = read_gt_mask(tmp_path / "labels8.png", (100, 100), code)
    cell16, nucleus16 = read_gt_mask(tmp_path / "labels16.png", (100, 100), code)
    assert cell16.any() and nucleus16.any()
    assert (cell16 == cell8).all() and (nucleus16 == nucleus8).all()
    write_colour_mask(tmp_path / "colour8.png")
    colour = cv2.imread(str(tmp_path / "colour8.png"))
    cv2.imwrite(str(tmp_path / "colour16.png"), colour.astype(np.uint16) * 257)
    for a, b in zip(
        read_gt_mask(tmp_path / "colour8.png", (100, 100)),
        read_gt_mask(tmp_path / "colour16.png", (100, 100)),
        strict=True,
    ):
        assert (a == b).all()


def test_a_mask_that_draws_no_cell_is_refused_naming_the_code(tmp_path: Path) -> None:
    """A 0/1 whole-cell mask read with the documented code {background: 0, cytoplasm: 255}:
    1 lies nearest 0, so every pixel read as background, within the off-palette tolerance,
    and segment scored every image Dice 0 without a word. A single-cell mask always draws a
    cell, so none at all means the code is wrong."""
    binary = np.zeros((250, 250), np.uint8)
    cv2.circle(binary, (125, 125), 250 // 4, 1, -1)
    cv2.imwrite(str(tmp_path / "Im001_1.png"), binary)
    code = mask_colours({"background": 0, "cytoplasm": 255})
    with pytest.raises(MaskError, match=r"Im001_1.png: draws no cell.*mask_code"):
        read_gt_mask(tmp_path / "Im001_1.png", (100, 100), code)
    right = mask_colours({"background": 0, "cytoplasm": 1})
    assert read_gt_mask(tmp_path / "Im001_1.png", (100, 100), right)[0].any()


def test_a_mask_read_with_another_code_is_refused_naming_the_code(tmp_path: Path) -> None:
    write_colour_mask(tmp_path / "Im001_1.png")
    label_code = mask_colours({"background": 0, "cytoplasm": 1, "nucleus": 2})
    with pytest.raises(MaskError, match=r"Im001_1.png: .* background \[0, 0, 0\].*mask_code"):
        read_gt_mask(tmp_path / "Im001_1.png", (100, 100), label_code)


def test_bad_masks_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not an image")
    with pytest.raises(MaskError, match="broken.tif"):
        read_gt_mask(broken, (50, 50))
    with pytest.raises(MaskError, match="missing.png"):
        read_gt_mask(tmp_path / "missing.png", (50, 50))
    photo = tmp_path / "photo.png"  # a colour image that is not a mask
    cv2.imwrite(str(photo), np.full((40, 40, 3), (30, 120, 200), np.uint8))
    with pytest.raises(MaskError, match="photo.png"):
        read_gt_mask(photo, (40, 40))


def test_a_mask_of_another_aspect_ratio_is_refused_not_stretched(tmp_path: Path) -> None:
    path = tmp_path / "Im001_1.tif"
    write_colour_mask(path, side=257)
    cropped = cv2.imread(str(path))[:, :86]  # a third of its width
    cv2.imwrite(str(path), cropped)
    with pytest.raises(MaskError, match=r"Im001_1.tif: a 86x257 mask cannot be a rescaled 103x103"):
        read_gt_mask(path, (103, 103))
    write_colour_mask(path, side=257)  # the 0.4-scale ALL-IDB2 image: 257 px -> 103 px
    assert read_gt_mask(path, (103, 103))[0].shape == (103, 103)
    assert read_gt_mask(path, (102, 103))[0].shape == (102, 103)  # a rounding pixel is fine


def test_find_mask_any_suffix(tmp_path: Path) -> None:
    write_colour_mask(tmp_path / "Im003_1.tif")
    write_colour_mask(tmp_path / "Im005_1.PNG")
    assert find_mask(tmp_path, "Im003_1") == tmp_path / "Im003_1.tif"
    assert find_mask(tmp_path, "Im005_1") == tmp_path / "Im005_1.PNG"
    assert find_mask(tmp_path, "Im007_1") is None


def test_a_folder_datasets_mask_is_found_by_its_file_name(tmp_path: Path) -> None:
    """Its id carries the class folder (`Benign__Im131_0`); the mask is named after the file."""
    write_colour_mask(tmp_path / "Im131_0.png")
    source = tmp_path / "data" / "Benign" / "Im131_0.jpg"
    assert find_mask(tmp_path, "Benign__Im131_0", source) == tmp_path / "Im131_0.png"
    assert find_mask(tmp_path, "Benign__Im131_0") is None


def test_dice_and_iou_edge_cases() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    half = np.zeros((4, 4), bool)
    half[:2] = True
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert dice(empty, full) == iou(full, empty) == 0.0
    assert dice(full, full) == iou(full, full) == 1.0
    assert dice(half, full) == pytest.approx(2 * 8 / 24)
    assert iou(half, full) == pytest.approx(0.5)


def test_score_segmentations_summary_and_worst() -> None:
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True
    rows = []
    for k in range(7):  # image k misses k rows of the cell
        pred = truth.copy()
        pred[2 : 2 + k] = False
        rows.append(overlap_row(f"im{k}", pred, pred, truth, truth))
    summary, table = score_segmentations(rows)
    assert summary["n_scored"] == 7
    assert summary["worst_cell_dice_ids"] == ["im6", "im5", "im4", "im3", "im2"]
    dices = [row["cell_dice"] for row in rows]
    assert summary["cell_dice_mean"] == pytest.approx(np.mean(dices), abs=1e-4)
    assert summary["cell_dice_median"] == pytest.approx(rows[3]["cell_dice"], abs=1e-4)
    assert table["id"].iloc[0] == "im6" and len(table) == 7
    assert 0 < summary["nucleus_iou_mean"] < summary["nucleus_dice_mean"] < 1
    json.dumps(summary)  # DVC metrics must be plain JSON
    with pytest.raises(ValueError, match="no segmentations"):
        score_segmentations([])


def test_a_downscaled_mask_samples_pixel_centres(tmp_path: Path) -> None:
    """Every odd column is nucleus: halving samples columns 1, 3, ... (the centres of 2-pixel
    blocks), not 0, 2, ... as plain nearest neighbour would."""
    mask = np.full((8, 8, 3), 255, np.uint8)
    mask[:, 1::2] = NUCLEUS_BGR
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    cell, nucleus = read_gt_mask(tmp_path / "m.png", (4, 4))
    assert nucleus.all() and cell.all()


def test_masks_no_image_took_are_named(tmp_path: Path) -> None:
    """A held-out folder may hold masks of images the dataset lacks, under another label, or
    another suffix: they are named, not silently left out of the scores."""
    for name in ("Im002_1.tif", "Im004_0.tif", "Im999_1.png", "Im006_1.gif"):
        write_colour_mask(tmp_path / name)
    (tmp_path / ".DS_Store").write_bytes(b"")  # OS clutter is not a mask
    (tmp_path / "Benign").mkdir()  # masks sorted by class: find_mask never looks inside
    write_colour_mask(tmp_path / "Benign" / "Im132_0.tif")
    taken = [find_mask(tmp_path, image_id) for image_id in ("Im002_1", "Im004_1", "Im006_1")]
    assert unmatched_masks(tmp_path, [path for path in taken if path]) == [
        "Benign/",
        "Im004_0.tif",
        "Im006_1.gif",
        "Im999_1.png",
    ]


def test_a_whole_cell_only_mask_leaves_the_nucleus_unscored_not_zero(tmp_path: Path) -> None:
    """A mask code with the whole cell in one colour (no nucleus drawn) must not count as a
    true empty nucleus: that would score every predicted nucleus 0 and sink the mean."""
    full, cell_only = tmp_path / "full.png", tmp_path / "cell_only.png"
    write_colour_mask(full)
    mask = cv2.imread(str(full))
    mask[(mask == NUCLEUS_BGR).all(axis=2)] = CYTOPLASM_BGR
    cv2.imwrite(str(cell_only), mask)
    rows = []
    for name, path in (("full", full), ("cell_only", cell_only)):
        true_cell, true_nucleus = read_gt_mask(path, (100, 100))
        rows.append(overlap_row(name, true_cell, true_nucleus, true_cell, true_nucleus))
    assert np.isnan(rows[1]["nucleus_dice"]) and rows[1]["cell_dice"] == 1.0
    summary, _ = score_segmentations(rows)
    assert summary["n_nucleus_scored"] == 1 and summary["nucleus_dice_mean"] == 1.0
    summary, _ = score_segmentations(rows[1:])  # no mask draws a nucleus
    assert summary["nucleus_dice_mean"] is None and summary["cell_dice_mean"] == 1.0
    json.dumps(summary, allow_nan=False)


def test_the_mean_dice_has_an_interval_never_zero_width() -> None:
    """A held-out set of masks gives another mean: the interval says by how much it may
    differ from sampling alone. Where the images cannot vary it is null, not [1, 1]."""
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True
    rows = []
    for k in range(7):
        pred = truth.copy()
        pred[2 : 2 + k] = False
        rows.append(overlap_row(f"im{k}", pred, pred, truth, truth))
    summary, _ = score_segmentations(rows)
    for key in ("cell_dice_mean", "nucleus_dice_mean"):
        low, high = summary[f"{key}_interval"]
        assert 0 <= low < summary[key] < high <= 1
    assert score_segmentations(rows)[0] == summary  # seeded: a rerun writes the same file
    same = [overlap_row(f"im{k}", truth, truth, truth, truth) for k in range(3)]
    summary, _ = score_segmentations(same)
    assert summary["cell_dice_mean_interval"] is None
    assert mean_interval([0.9]) == (None, None)
    low, high = mean_interval([0.99990, 0.99991])  # rounded outwards, not to one value
    assert low < high
    json.dumps(summary, allow_nan=False)


def test_the_dice_interval_leaves_the_gates_tolerance_alone() -> None:
    """Segmentation is deterministic on the same masks: a code change that costs 0.015 Dice
    must still fail the gate's 0.01, however wide the sampling interval."""
    from pipeline.gate import Rule, compare

    rows = [overlap_row(f"im{k}", *pair) for k, pair in enumerate(_varied_pairs(40))]
    base, _ = score_segmentations(rows)
    assert base["cell_dice_mean_interval"][1] - base["cell_dice_mean_interval"][0] > 0.03
    current = {**base, "cell_dice_mean": base["cell_dice_mean"] - 0.015}
    rule = Rule(tolerance=0.01, ci_scale=2.0)
    (row,) = compare({"d/segmentation.json": base}, {"d/segmentation.json": current},
                     {"cell_dice_mean": rule})  # fmt: skip
    assert row.status == "regressed"


def _varied_pairs(n: int):
    rng = np.random.default_rng(1)
    truth = np.zeros((20, 20), bool)
    truth[4:16, 4:16] = True
    for _ in range(n):
        pred = truth.copy()
        pred[4 : 4 + int(rng.integers(0, 8))] = False
        yield pred, pred, truth, truth


def test_one_mask_found_by_two_images_file_name_is_refused(tmp_path: Path) -> None:
    """`Malignant/x.png` and `Benign/x.png` (ids `Malignant__x`, `Benign__x`) both find `x.png`
    by file name: each would be scored against one mask, one of them another image's."""
    write_colour_mask(tmp_path / "x.png")
    write_colour_mask(tmp_path / "y.png")
    images = {f"{folder}__x": tmp_path / folder / "x.jpg" for folder in ("Malignant", "Benign")}
    images["Benign__y"] = tmp_path / "Benign" / "y.jpg"
    taken = [(i, find_mask(tmp_path, i, source)) for i, source in images.items()]
    with pytest.raises(MaskError, match=r"x.png: \['Malignant__x', 'Benign__x'\]"):
        refuse_shared_masks(taken)
    write_colour_mask(tmp_path / "Benign__x.png")  # named by id, as the message says
    refuse_shared_masks([(i, find_mask(tmp_path, i, source)) for i, source in images.items()])
