"""`python -m pipeline.stages.compare_segmentation [key=value ...]`: segmentation variants scored
against the dataset's ground-truth masks, as one table written by code.

Composes `conf/` with the given overrides (e.g. `dataset=all_idb2 dataset.root=...
dataset.masks=...`), then segments every image that has a mask once per variant in `VARIANTS`
(the paper's grayscale two-class Otsu, Otsu on Lab b* with three classes, and the default with
an active contour on top) and writes `reports/segmentation/<dataset>.csv` and `.json` (the
overrides, per-variant Dice/IoU summaries, image counts). Not a DVC stage: the `segment` stage
scores the chosen method on every run; this compares the alternatives, like `tune`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import config, paths
from pipeline.config import ConfigError
from pipeline.data.build import build_manifest
from pipeline.errors import PipelineError
from pipeline.io import atomic_write_json, atomic_write_text, read_image
from pipeline.parallel import parallel_map
from pipeline.preprocess.masks import (
    check_matches,
    find_mask,
    overlap_row,
    read_gt_mask,
    score_segmentations,
)
from pipeline.preprocess.segment import segment_cell
from pipeline.stages.common import log

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
SUMMARY_KEYS = ("cell_dice_mean", "cell_dice_median", "cell_iou_mean", "nucleus_dice_mean")


def _score_one(row: dict, segment_cfg) -> dict:
    """`row`: a manifest row with `truth`, the mask `find_mask` gave it."""
    image = read_image(row["path"])
    seg = segment_cell(image, segment_cfg)
    return overlap_row(row["id"], seg.cell, seg.nucleus, *read_gt_mask(row["truth"], image.shape))


def compare(cfg: DictConfig, variants: dict[str, dict[str, Any]] = VARIANTS) -> pd.DataFrame:
    """One row per variant: its Dice/IoU summary over the images that have a mask."""
    workspace = config.workspace_root()
    if not cfg.dataset.masks:
        raise ConfigError("dataset.masks: a folder of ground-truth masks is needed to compare")
    mask_dir = workspace / cfg.dataset.masks
    if not mask_dir.is_dir():
        raise ConfigError(f"dataset.masks: {mask_dir} is not a folder")
    frame, _ = build_manifest(cfg.dataset, workspace)
    records = frame.to_dict("records")
    taken = [find_mask(mask_dir, row["id"], row["path"]) for row in records]
    check_matches(mask_dir, zip(frame["id"], taken, strict=True))
    pairs = zip(records, taken, strict=True)
    with_mask = [{**row, "truth": truth} for row, truth in pairs if truth is not None]
    if not with_mask:
        raise ConfigError(f"dataset.masks: no mask in {mask_dir} matches an image id")
    rows = []
    for name, changes in variants.items():
        segment_cfg = OmegaConf.merge(cfg.segment, changes)
        scored = parallel_map(
            partial(_score_one, segment_cfg=segment_cfg),
            with_mask,
            desc=f"segment {cfg.dataset.name} ({name})",
        )
        summary, _ = score_segmentations(scored)
        rows.append({"variant": name, **changes, "n_images": len(scored), **summary})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):  # not Hydra overrides: Hydra's lexer would fail
        print(f"usage: python -m pipeline.stages.compare_segmentation [key=value ...]\n\n{__doc__}")
        return 0
    try:
        cfg = config.compose(overrides)
        table = compare(cfg)
    except (PipelineError, FileNotFoundError) as exc:  # bad config, images or masks
        log.error("%s", exc)
        return 2
    out = paths.REPORTS / "segmentation" / cfg.dataset.name
    columns = ["variant", "method", "channel", "otsu_classes", "n_images", *SUMMARY_KEYS]
    atomic_write_text(out.with_suffix(".csv"), table[columns].to_csv(index=False))
    atomic_write_json(
        out.with_suffix(".json"),
        {"overrides": overrides, "variants": table.to_dict("records")},
    )
    log.info("segmentation variants of %s:\n%s", cfg.dataset.name, table[columns].to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
