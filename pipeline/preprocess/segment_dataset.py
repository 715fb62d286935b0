"""Segmenting a dataset's images and scoring them against ground-truth masks: the `segment`
stage's per-image work and summary, and the comparison of segmentation variants
(`python -m pipeline.stages.compare_segmentation`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.config import ConfigError
from pipeline.io import read_image, write_image
from pipeline.parallel import parallel_map
from pipeline.preprocess.masks import (
    MaskColours,
    MaskError,
    check_matches,
    find_mask,
    overlap_row,
    read_gt_mask,
    score_segmentations,
)
from pipeline.preprocess.segment import apply_mask_and_crop, segment_cell

log = logging.getLogger(__name__)

# name -> overrides of the `segment` section (the rest of it stays as composed).
VARIANTS: dict[str, dict[str, Any]] = {
    "otsu_gray_2": {"method": "otsu", "channel": "gray", "otsu_classes": 2},  # the paper's
    "otsu_lab_b_3": {"method": "otsu", "channel": "lab_b", "otsu_classes": 3},
    "otsu_active_contour_lab_b_3": {
        "method": "otsu_active_contour",
        "channel": "lab_b",
        "otsu_classes": 3,
    },
}


def segment_file(
    row: Mapping[str, Any],
    cfg: Any,
    out_dir: Path,
    mask_dir: Path | None,
    colours: MaskColours,
) -> dict:
    """Segment one manifest row into `out_dir` (the cell's crop under `images/`, its label mask
    under `masks/`) and score it against its ground-truth mask (coded in `colours`) when
    `mask_dir` has one. A bad mask is returned as `mask_error`, so one error can name every bad
    mask."""
    image = read_image(row["path"])
    seg = segment_cell(image, cfg)
    crop, _ = apply_mask_and_crop(image, seg)
    write_image(out_dir / "images" / f"{row['id']}.png", crop)
    # 0 background, 128 cytoplasm, 255 nucleus: the full-size mask, comparable to ground truth
    label_mask = np.where(seg.nucleus, 255, np.where(seg.cell, 128, 0)).astype(np.uint8)
    write_image(out_dir / "masks" / f"{row['id']}.png", label_mask)
    truth = find_mask(mask_dir, row["id"], row["path"]) if mask_dir else None
    overlap, mask_error = None, None
    if truth is not None:
        try:
            true_masks = read_gt_mask(truth, image.shape, colours)
        except MaskError as exc:
            mask_error = str(exc)
        else:
            overlap = overlap_row(row["id"], seg.cell, seg.nucleus, *true_masks)
            overlap["found"] = seg.found  # False: scored as the whole image it fell back to
    return {
        "id": row["id"],
        "found": seg.found,
        "overlap": overlap,
        "truth": truth,
        "mask_error": mask_error,
    }


def score_against_truth(
    results: Sequence[Mapping[str, Any]], mask_dir: Path
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The ground-truth part of the segmentation summary from `segment_file`'s results, and
    the per-image scores (None when no image has a mask, which is warned about). Bad masks
    are one `MaskError` naming each; masks no image took are counted and warned about."""
    unmatched = check_matches(mask_dir, ((r["id"], r["truth"]) for r in results))
    bad_masks = [r["mask_error"] for r in results if r["mask_error"]]
    if len(bad_masks) == 1:
        raise MaskError(f"dataset.masks: {bad_masks[0]}")
    if bad_masks:
        raise MaskError(
            f"dataset.masks: {len(bad_masks)} masks cannot be scored:\n  " + "\n  ".join(bad_masks)
        )
    summary: dict[str, Any] = {"n_masks_unmatched": unmatched}
    scored = [r["overlap"] for r in results if r["overlap"]]
    if not scored:  # a wrong folder or naming: say so, not a silent no-score
        log.warning(
            "dataset.masks: no image has a mask in %s (masks are matched by image id or "
            "file name, e.g. Im001_1.png): segmentation is not scored",
            mask_dir,
        )
        return summary, None
    scores, per_image = score_segmentations(scored)
    return {**summary, **scores}, per_image


def _score_variant(row: Mapping[str, Any], segment_cfg: Any, colours: MaskColours) -> dict:
    """`row`: a manifest row with `truth`, the mask `find_mask` gave it."""
    image = read_image(row["path"])
    seg = segment_cell(image, segment_cfg)
    truth = read_gt_mask(row["truth"], image.shape, colours)
    return overlap_row(row["id"], seg.cell, seg.nucleus, *truth)


def compare_variants(
    frame: pd.DataFrame,
    mask_dir: Path,
    segment_cfg: Any,
    dataset: str,
    colours: MaskColours,
    variants: Mapping[str, Mapping[str, Any]] = VARIANTS,
) -> pd.DataFrame:
    """One row per variant (`segment_cfg` with its overrides): its Dice/IoU summary over the
    images of `frame` that have a mask (coded in `colours`) in `mask_dir`."""
    records = frame.to_dict("records")
    taken = [find_mask(mask_dir, row["id"], row["path"]) for row in records]
    check_matches(mask_dir, zip(frame["id"], taken, strict=True))
    pairs = zip(records, taken, strict=True)
    with_mask = [{**row, "truth": truth} for row, truth in pairs if truth is not None]
    if not with_mask:
        raise ConfigError(f"dataset.masks: no mask in {mask_dir} matches an image id")
    rows = []
    for name, changes in variants.items():
        scored = parallel_map(
            partial(
                _score_variant,
                segment_cfg=OmegaConf.merge(segment_cfg, changes),
                colours=colours,
            ),
            with_mask,
            desc=f"segment {dataset} ({name})",
        )
        summary, _ = score_segmentations(scored)
        rows.append({"variant": name, **changes, "n_images": len(scored), **summary})
    return pd.DataFrame(rows)
