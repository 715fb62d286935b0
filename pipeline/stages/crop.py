"""Stage crop: cut the black border around each (segmented) cell and resize (paper III.A.1)."""

import sys
from functools import partial

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.io import atomic_path, read_image, write_image
from pipeline.parallel import parallel_map
from pipeline.preprocess.card import SEGMENT_KEYS, read_card, with_crop, write_card
from pipeline.preprocess.crop import crop_and_resize
from pipeline.stages.common import log, stage


def _crop_one(row: dict, cfg, out_dir) -> None:
    write_image(
        out_dir / "images" / f"{row['id']}.png", crop_and_resize(read_image(row["path"]), cfg)
    )


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.segmented(name) / "manifest.csv")
    card = with_crop(read_card(paths.segmented(name), SEGMENT_KEYS), cfg.crop)
    final = paths.cropped(name)
    with atomic_path(final) as staged:
        parallel_map(
            partial(_crop_one, cfg=cfg.crop, out_dir=staged),
            frame.to_dict("records"),
            desc=f"crop {name}",
        )
        frame["path"] = [str(final / "images" / f"{i}.png") for i in frame["id"]]
        manifest.write(frame, staged / "manifest.csv")
        write_card(staged, card)
    log.info("cropped %d images to %dx%d", len(frame), cfg.crop.size, cfg.crop.size)


main = run
if __name__ == "__main__":
    sys.exit(main())
