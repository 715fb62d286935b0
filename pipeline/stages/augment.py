"""Stage augment: write the image-folder dataset `<split>/<class>/<id>.png`, adding flipped and
rotated copies to the augmented splits (train only by default; split before augmenting)."""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.io import atomic_path
from pipeline.preprocess.augment import (
    augmented_table,
    materialise,
    plan_augmentation,
    relocate,
    require_images_of,
)
from pipeline.preprocess.card import read_card, write_card
from pipeline.stages.common import log, stage


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.split_table(name))
    cropped = manifest.read(paths.cropped(name) / "manifest.csv")
    require_images_of(frame, cropped, str(paths.split_table(name)))
    table = augmented_table(frame, plan_augmentation(frame, cfg.augment, cfg.seed))
    card = read_card(paths.cropped(name))  # before hours of writing: the crops must have one
    final = paths.prepared(name)
    with atomic_path(final) as staged:
        written = materialise(table, staged, f"augment {name}")
        # the manifest names the files where they will live once the folder is in place
        manifest.write(relocate(written, final), staged / "manifest.csv")
        write_card(staged, card)
    log.info("dataset sizes:\n%s", table.groupby(["split", "label"]).size().unstack())


main = run
if __name__ == "__main__":
    sys.exit(main())
