"""Stage segment: isolate the white cell (paper III.A.2) and score it against ground truth.

Datasets with `segment: false` (C-NMC: already segmented) pass through unchanged.
"""

import sys
from functools import partial

import numpy as np
from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.config import workspace_root
from pipeline.io import atomic_path, atomic_write_json, read_image, write_image
from pipeline.parallel import parallel_map
from pipeline.preprocess.card import segmentation_card, write_card
from pipeline.preprocess.masks import (
    MaskError,
    check_matches,
    find_mask,
    overlap_row,
    read_gt_mask,
    score_segmentations,
)
from pipeline.preprocess.segment import apply_mask_and_crop, segment_cell
from pipeline.stages.common import log, stage


def _segment_one(row: dict, cfg, out_dir, mask_dir) -> dict:
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
            true_masks = read_gt_mask(truth, image.shape)
        except MaskError as exc:  # gathered, so one error names every bad mask
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


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.manifest(name))
    final = paths.segmented(name)
    metrics_path = paths.metrics(name, "segmentation")
    card = segmentation_card(cfg.dataset, cfg.segment)
    if not card["segment"]:
        with atomic_path(final) as staged:
            staged.mkdir()
            manifest.write(frame, staged / "manifest.csv")
            write_card(staged, card)
        atomic_write_json(metrics_path, {"segmented": False, "n_images": len(frame)})
        log.info("%s: segment=false, images pass through unchanged", name)
        if cfg.dataset.masks:  # a user who set masks expects scores: say why there are none
            log.warning(
                "dataset.masks is set (%s) but nothing is segmented (dataset.segment=%s, "
                "segment.method=%s): the masks are not scored",
                cfg.dataset.masks, cfg.dataset.segment, cfg.segment.method,
            )  # fmt: skip
        return
    mask_dir = cfg.dataset.masks and workspace_root() / cfg.dataset.masks
    if mask_dir and not mask_dir.is_dir():
        raise FileNotFoundError(f"dataset.masks: {mask_dir} is not a folder")
    with atomic_path(final) as staged:
        results = parallel_map(
            partial(_segment_one, cfg=cfg.segment, out_dir=staged, mask_dir=mask_dir),
            frame.to_dict("records"),
            desc=f"segment {name} ({cfg.segment.method})",
        )
        if mask_dir:
            unmatched = check_matches(mask_dir, ((r["id"], r["truth"]) for r in results))
        bad_masks = [r["mask_error"] for r in results if r["mask_error"]]
        if len(bad_masks) == 1:
            raise MaskError(f"dataset.masks: {bad_masks[0]}")
        if bad_masks:
            raise MaskError(
                f"dataset.masks: {len(bad_masks)} masks cannot be scored:\n  "
                + "\n  ".join(bad_masks)
            )
        frame["path"] = [str(final / "images" / f"{i}.png") for i in frame["id"]]
        frame["mask"] = [str(final / "masks" / f"{i}.png") for i in frame["id"]]
        manifest.write(frame, staged / "manifest.csv")
        write_card(staged, card)
        not_found = [r["id"] for r in results if not r["found"]]
        summary = {
            "segmented": True,
            "method": cfg.segment.method,
            "n_images": len(frame),
            "n_cell_not_found": len(not_found),
            "cell_not_found_ids": not_found,
        }
        scored = [r["overlap"] for r in results if r["overlap"]]
        if mask_dir and not scored:  # a wrong folder or naming: say so, not a silent no-score
            log.warning(
                "dataset.masks: no image has a mask in %s (masks are matched by image id or "
                "file name, e.g. Im001_1.png): segmentation is not scored",
                mask_dir,
            )
        if mask_dir:
            summary["n_masks_unmatched"] = unmatched
        if scored:
            scores, per_image = score_segmentations(scored)
            summary.update(scores)
            per_image.to_csv(staged / "scores.csv", index=False)
        atomic_write_json(metrics_path, summary)
    if not_found:
        log.warning(
            "no plausible cell found in %d images (kept whole): %s", len(not_found), not_found[:20]
        )
    log.info(
        "segmentation summary: %s", {k: v for k, v in summary.items() if not k.endswith("_ids")}
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
