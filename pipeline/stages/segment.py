"""Stage segment: isolate the white cell (paper III.A.2) and score it against ground truth.

Datasets with `segment: false` (C-NMC: already segmented) pass through unchanged.
"""

import sys
from functools import partial

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.config import mask_colours, workspace_root
from pipeline.io import atomic_path, atomic_write_json
from pipeline.parallel import parallel_map
from pipeline.preprocess.card import segmentation_card, write_card
from pipeline.preprocess.segment_dataset import score_against_truth, segment_file
from pipeline.stages.common import log, stage


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
    colours = mask_colours(cfg.dataset.get("mask_code"))
    with atomic_path(final) as staged:
        results = parallel_map(
            partial(
                segment_file, cfg=cfg.segment, out_dir=staged, mask_dir=mask_dir, colours=colours
            ),
            frame.to_dict("records"),
            desc=f"segment {name} ({cfg.segment.method})",
        )
        scores, per_image = score_against_truth(results, mask_dir) if mask_dir else ({}, None)
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
            **scores,
        }
        if per_image is not None:
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
