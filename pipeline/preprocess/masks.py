"""Ground-truth segmentation masks (a colour per region, `dataset.mask_code`; ALL-IDB2's by
default) and overlap scores.

The masks measure how well `segment.py` finds the cell: Dice/IoU per image against the
manual masks, summarised as a DVC metrics JSON (mean/median and the worst images).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.config import ALL_IDB2_MASK_CODE
from pipeline.errors import PipelineError
from pipeline.io import IMAGE_SUFFIXES, is_hidden

log = logging.getLogger(__name__)

MaskColours = Mapping[str, tuple[int, int, int] | None]  # region -> RGB (config.mask_colours)
# A pixel farther than this (Euclidean, 0..255 units) from every code colour is not a code colour.
_MAX_COLOUR_DISTANCE = 100.0
# Share of pixels that may be off-palette (JPEG ringing, antialiasing) before the file is rejected.
_MAX_OFF_PALETTE = 0.05
N_WORST = 5
# The interval of a mean Dice: a 95% percentile bootstrap over images, seeded (a rerun writes
# the same file).
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
INTERVAL_KEYS = ("cell_dice", "nucleus_dice")


class MaskError(PipelineError, ValueError):
    """A ground-truth mask cannot be read or does not follow the colour code; names the file."""


def read_gt_mask(
    path: Path | str, shape: tuple[int, ...], colours: MaskColours = ALL_IDB2_MASK_CODE
) -> tuple[np.ndarray, np.ndarray]:
    """Read a colour-coded mask as (whole cell, nucleus) boolean masks of size `shape[:2]`.

    `colours`: each region's RGB colour (`config.mask_colours`; a grey level is read as grey, so
    label maps work too). Each pixel takes its nearest code colour, so compression noise does
    not matter; the mask is resized with nearest neighbour because it is drawn at the original
    resolution. Masks without a nucleus colour give an empty nucleus (left unscored).
    """
    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else np.empty(0, np.uint8)
    mask = _decode_mask(data) if data.size else None
    if mask is None:
        raise MaskError(f"{path}: not a readable mask image")
    regions = [region for region, colour in colours.items() if colour is not None]
    palette = np.array([colours[region][::-1] for region in regions], np.int32)  # BGR, as read
    code = ", ".join(f"{region} {list(colours[region])}" for region in regions)  # for errors
    pixels = mask.reshape(-1, 1, 3).astype(np.int32)
    distance = np.sqrt(((pixels - palette[None]) ** 2).sum(axis=2))
    label = distance.argmin(axis=1)
    off_palette = float((distance.min(axis=1) > _MAX_COLOUR_DISTANCE).mean())
    if off_palette > _MAX_OFF_PALETTE:
        raise MaskError(
            f"{path}: {off_palette:.0%} of pixels are none of the mask colours (RGB {code}; "
            "dataset.mask_code sets them)"
        )
    label = label.reshape(mask.shape[:2]).astype(np.uint8)
    background = regions.index("background")
    if (label == background).all():  # every white-cell image holds a cell: the code is wrong
        raise MaskError(
            f"{path}: draws no cell: every pixel is nearest the background colour (RGB {code}); "
            "are these the masks' colours (a 0/1 mask needs cytoplasm: 1)? dataset.mask_code "
            "sets them"
        )
    height, width = shape[:2]
    scaled_height = mask.shape[0] * width / mask.shape[1]  # the image's height, were it the mask's
    if abs(scaled_height - height) > max(1.5, 0.02 * height):  # beyond rounding of a rescale
        raise MaskError(
            f"{path}: a {mask.shape[1]}x{mask.shape[0]} mask cannot be a rescaled "
            f"{width}x{height} image (another aspect ratio: wrong or cropped mask?)"
        )
    # EXACT: plain INTER_NEAREST samples floor(x * scale), shifting a 257 px mask on a 103 px
    # image half a pixel down and right (nucleus Dice 0.940 instead of 0.950 on ALL-IDB2)
    label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    cell = label != background
    nucleus = label == regions.index("nucleus") if "nucleus" in regions else np.zeros_like(cell)
    return cell, nucleus


def _decode_mask(data: np.ndarray) -> np.ndarray | None:
    """A mask file's pixels as 8-bit BGR, turned upright by its EXIF orientation. A 16-bit
    label map (values 0, 1, 2 ...) keeps its values: OpenCV's 8-bit reading divides them by
    256, which turns every label into background. A 16-bit colour mask (values above 255) is
    rescaled by the 16-bit range, as OpenCV does."""
    mask = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if mask is None or mask.dtype == np.uint8:
        return mask
    if mask.dtype == np.uint16:
        if mask.max() <= 255:
            return mask.astype(np.uint8)
        return (mask / 257.0).round().astype(np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)  # float and others: OpenCV's 8-bit reading


def find_mask(mask_dir: Path | str, image_id: str, source: Path | str | None = None) -> Path | None:
    """The mask file in `mask_dir` named after `image_id` or, failing that, after the image's
    `source` file (a folder dataset's id carries its class folder: `Benign__Im131_0`), whatever
    its image suffix; None when there is none."""
    names = [image_id] + ([Path(source).stem] if source is not None else [])
    for name in dict.fromkeys(names):
        for suffix in IMAGE_SUFFIXES:
            for candidate in (suffix, suffix.upper()):
                path = Path(mask_dir) / f"{name}{candidate}"
                if path.is_file():
                    return path
    return None


def unmatched_masks(mask_dir: Path | str, taken: Iterable[Path | str]) -> list[str]:
    """Names of the entries in `mask_dir` (hidden ones aside) that no image took, `taken` being
    the masks `find_mask` returned: a mask of an image the dataset lacks, under another label or
    another suffix, or a subfolder (`name/`: never searched) would otherwise be left out of the
    scores without a word."""
    used = {Path(path).name for path in taken}
    return sorted(
        f"{path.name}/" if path.is_dir() else path.name
        for path in Path(mask_dir).iterdir()
        if not is_hidden(path.name) and path.name not in used
    )


def unmatched_warning(mask_dir: Path | str, unmatched: Sequence[str]) -> str:
    """The warning for `unmatched_masks`' names (the first 20)."""
    return (
        f"dataset.masks: {len(unmatched)} entries in {mask_dir} match no image (by image id or "
        f"file name; subfolders are not searched) and are not scored: {list(unmatched[:20])}"
    )


def check_matches(mask_dir: Path | str, taken: Iterable[tuple[str, Path | str | None]]) -> int:
    """`taken`: (image id, the mask `find_mask` gave it). Refuse a mask taken by several images,
    warn naming the masks no image took; returns how many those are."""
    taken = list(taken)
    refuse_shared_masks(taken)
    unmatched = unmatched_masks(mask_dir, [path for _, path in taken if path])
    if unmatched:
        log.warning("%s", unmatched_warning(mask_dir, unmatched))
    return len(unmatched)


def refuse_shared_masks(taken: Iterable[tuple[str, Path | str | None]]) -> None:
    """`taken`: (image id, the mask `find_mask` gave it). One mask matched by several images
    (by file name: `Malignant/x.png` and `Benign/x.png` both find `x.png`) would score each
    against another image's cell; a MaskError names them."""
    images: dict[Path, list[str]] = {}
    for image_id, path in taken:
        if path is not None:
            images.setdefault(Path(path), []).append(image_id)
    shared = [f"{path.name}: {ids}" for path, ids in sorted(images.items()) if len(ids) > 1]
    if shared:
        raise MaskError(
            f"dataset.masks: {len(shared)} masks match several images by file name; name each "
            "mask after its image id (the manifest's id column, e.g. Benign__x.png):\n"
            + "\n".join(shared)
        )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|); two empty masks agree perfectly (1.0)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = int(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|A∩B| / |A∪B|; two empty masks agree perfectly (1.0)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def overlap_row(
    image_id: str,
    cell: np.ndarray,
    nucleus: np.ndarray,
    true_cell: np.ndarray,
    true_nucleus: np.ndarray,
) -> dict[str, Any]:
    """One per-image row for `score_segmentations`. A mask that draws the cell without a
    nucleus (a whole-cell-only code) leaves the nucleus unscored (NaN), not scored 0: every
    white cell has one."""
    drawn = bool(true_nucleus.any()) or not true_cell.any()
    return {
        "id": image_id,
        "cell_dice": dice(cell, true_cell),
        "cell_iou": iou(cell, true_cell),
        "nucleus_dice": dice(nucleus, true_nucleus) if drawn else float("nan"),
        "nucleus_iou": iou(nucleus, true_nucleus) if drawn else float("nan"),
    }


def mean_interval(values: Iterable[float], seed: int = 0) -> tuple[float | None, float | None]:
    """95% percentile-bootstrap interval of the mean of per-image scores (NaN left out), bounds
    rounded outwards to 4 decimals; (None, None) where the sample cannot vary (one image, or
    all alike), rather than a zero-width interval."""
    sample = np.asarray(list(values), dtype=float)
    sample = sample[~np.isnan(sample)]
    if sample.size < 2 or np.ptp(sample) == 0:
        return None, None
    draws = np.random.default_rng(seed).integers(0, sample.size, (BOOTSTRAP_SAMPLES, sample.size))
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(sample[draws].mean(axis=1), [tail, 1 - tail])
    return float(np.floor(low * 1e4) / 1e4), float(np.ceil(high * 1e4) / 1e4)


def score_segmentations(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Summarise per-image rows (as from `overlap_row`) into metrics and a per-image table.

    The summary is flat and JSON-ready (DVC metrics): mean/median of each score, the scored
    count, the mean Dice's interval (`mean_interval`: its sampling noise over images, what a
    held-out set of masks is read against; the gate keeps its tolerance, since segmentation
    is deterministic on the same masks) and the ids of the worst images by whole-cell Dice
    (where to look first). Nucleus scores average the masks that draw a nucleus
    (`n_nucleus_scored`; null with none).
    """
    table = pd.DataFrame(list(rows))
    if table.empty:
        raise ValueError("no segmentations to score (no image had a ground-truth mask)")
    table = table.sort_values("cell_dice", kind="stable").reset_index(drop=True)
    summary: dict[str, Any] = {
        "n_scored": len(table),
        "n_nucleus_scored": int(table["nucleus_dice"].notna().sum()),
    }
    for column in ("cell_dice", "cell_iou", "nucleus_dice", "nucleus_iou"):
        for statistic in ("mean", "median"):
            value = float(table[column].agg(statistic))  # NaN (nucleus not drawn) left out
            summary[f"{column}_{statistic}"] = None if np.isnan(value) else round(value, 4)
    for column in INTERVAL_KEYS:  # not `_ci_low/_high`: the gate would widen its tolerance
        low, high = mean_interval(table[column])
        summary[f"{column}_mean_interval"] = None if low is None else [low, high]
    summary["worst_cell_dice_ids"] = table["id"].head(N_WORST).tolist()
    return summary, table
