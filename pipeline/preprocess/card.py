"""The preparation card: how a folder's images were made, written beside them.

`segment` writes its settings, `crop` adds its own, `augment` hands the card on to the
prepared dataset and `train` copies it into the model folder. So `predict` prepares a raw
image the way the model's training images really were prepared, even when a stage was run
by hand with other settings than today's params.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError
from pipeline.io import MalformedFileError, read_json_object
from pipeline.paths import PREPROCESS_CARD

log = logging.getLogger(__name__)

SEGMENT_KEYS = ("segment", "segment_config")
PREPARED_KEYS = (*SEGMENT_KEYS, "crop_config")


class MissingCardError(PipelineError, FileNotFoundError):
    """A folder of prepared images or a model folder has no preparation card."""


def segmentation_card(dataset_cfg: DictConfig, segment_cfg: DictConfig) -> dict[str, Any]:
    """What the segment stage did: whether it segmented, and with which settings."""
    return {
        "segment": bool(dataset_cfg.segment) and segment_cfg.method != "none",
        "segment_config": OmegaConf.to_container(segment_cfg, resolve=True),
    }


def with_crop(card: dict[str, Any], crop_cfg: DictConfig) -> dict[str, Any]:
    return {**card, "crop_config": OmegaConf.to_container(crop_cfg, resolve=True)}


def write_card(folder: Path | str, card: dict[str, Any]) -> None:
    """Into a folder being written (a stage's staging folder, moved into place as a whole)."""
    (Path(folder) / PREPROCESS_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))


def read_card(folder: Path | str, needs: Iterable[str] = PREPARED_KEYS) -> dict[str, Any]:
    """The card of `folder`, with at least the keys `needs`."""
    path = Path(folder) / PREPROCESS_CARD
    if not path.is_file():
        raise MissingCardError(
            f"{folder}: no {PREPROCESS_CARD}, so how its images were prepared is unknown; "
            "it was written by an older version or by hand: re-run its stages (`dvc repro`)"
        )
    card = read_json_object(path, "a preparation card")
    missing = [key for key in needs if key not in card]
    if missing:
        raise MalformedFileError(f"{path}: not a preparation card (no {', '.join(missing)})")
    return card


def warn_on_resize(card: dict[str, Any], input_side: int, folder: Path | str) -> bool:
    """Warn when training at `crop.size` resamples crops cut at another side: a `crop.size`
    override given to train or cv alone (`dvc exp run -S` re-crops; a hand run does not)."""
    cropped = card.get("crop_config", {}).get("size")
    if cropped is None or int(cropped) == int(input_side):
        return False
    log.warning(
        "crop.size is %d but the images in %s were cropped at %d px (its %s): they are "
        "resampled to %d px for training; re-run the crop stage to cut them at %d",
        input_side, folder, cropped, PREPROCESS_CARD, input_side, input_side,
    )  # fmt: skip
    return True
