"""`python -m pipeline.stages.compare_segmentation [key=value ...]`: segmentation variants scored
against the dataset's ground-truth masks, as one table written by code.

Composes `conf/` with the given overrides (e.g. `dataset=all_idb2 dataset.root=...
dataset.masks=...`), then segments every image that has a mask once per variant in
`pipeline.preprocess.segment_dataset.VARIANTS` (the paper's grayscale two-class Otsu, Otsu on
Lab b* with three classes, and the default with an active contour on top) and writes
`reports/segmentation/<dataset>.csv` and `.json` (the overrides, per-variant Dice/IoU
summaries, image counts). Not a DVC stage: the `segment` stage scores the chosen method on
every run; this compares the alternatives, like `tune`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pandas as pd

from pipeline import config, paths
from pipeline.config import ConfigError
from pipeline.data.build import build_manifest
from pipeline.errors import PipelineError
from pipeline.io import atomic_write_json, atomic_write_text
from pipeline.preprocess.segment_dataset import compare_variants
from pipeline.stages.common import log

SUMMARY_KEYS = ("cell_dice_mean", "cell_dice_median", "cell_iou_mean", "nucleus_dice_mean")


def compare(overrides: Sequence[str]) -> tuple[str, pd.DataFrame]:
    """(dataset name, one row per variant) for the config composed with `overrides`."""
    cfg = config.compose(overrides)
    if not cfg.dataset.masks:
        raise ConfigError("dataset.masks: a folder of ground-truth masks is needed to compare")
    workspace = config.workspace_root()
    mask_dir = workspace / cfg.dataset.masks
    if not mask_dir.is_dir():
        raise ConfigError(f"dataset.masks: {mask_dir} is not a folder")
    frame, _ = build_manifest(cfg.dataset, workspace)
    colours = config.mask_colours(cfg.dataset.get("mask_code"))
    return cfg.dataset.name, compare_variants(
        frame, mask_dir, cfg.segment, cfg.dataset.name, colours
    )


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):  # not Hydra overrides: Hydra's lexer would fail
        print(f"usage: python -m pipeline.stages.compare_segmentation [key=value ...]\n\n{__doc__}")
        return 0
    try:
        dataset, table = compare(overrides)
    except (PipelineError, FileNotFoundError) as exc:  # bad config, images or masks
        log.error("%s", exc)
        return 2
    out = paths.REPORTS / "segmentation" / dataset
    columns = ["variant", "method", "channel", "otsu_classes", "n_images", *SUMMARY_KEYS]
    atomic_write_text(out.with_suffix(".csv"), table[columns].to_csv(index=False))
    atomic_write_json(
        out.with_suffix(".json"),
        {"overrides": overrides, "variants": table.to_dict("records")},
    )
    log.info("segmentation variants of %s:\n%s", dataset, table[columns].to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
