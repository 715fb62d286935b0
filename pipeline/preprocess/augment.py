"""Paper augmentation (flips, 90-degree rotations), by default on the training split only."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.io import read_image, write_image
from pipeline.labels import CLASSES
from pipeline.parallel import parallel_map

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

OPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hflip": lambda im: im[:, ::-1],
    "vflip": lambda im: im[::-1, :],
    "rot90": lambda im: np.rot90(im, 1),
    "rot180": lambda im: np.rot90(im, 2),
    "rot270": lambda im: np.rot90(im, 3),
}


def plan_augmentation(frame: pd.DataFrame, cfg: DictConfig, seed: int) -> pd.DataFrame:
    """Rows to add: (source id, op) so each augmented split grows to `multiplier` x its size.

    Sources are drawn without replacement (a seeded permutation, repeated only when the
    multiplier exceeds 2) and each image's ops rotate through `cfg.ops`, so no copy repeats.
    """
    if set(cfg.splits) - {"train"}:
        log.warning(
            "augmenting %s: near-copies of an image then sit in evaluation splits and make "
            "their scores optimistic (the paper did this; we default to train only)",
            sorted(set(cfg.splits) - {"train"}),
        )
    rng = np.random.default_rng(seed)
    ops = list(cfg.ops)
    planned = []
    for split in cfg.splits:
        part = frame[frame["split"] == split].reset_index(drop=True)
        extra = int(round(len(part) * cfg.multiplier)) - len(part)
        if extra <= 0 or part.empty:
            continue
        first_op = rng.integers(len(ops), size=len(part))  # per image, then cycle
        cycles = int(np.ceil(extra / len(part)))
        for cycle in range(cycles):
            for index in rng.permutation(len(part))[: extra - cycle * len(part)]:
                op = ops[(int(first_op[index]) + cycle) % len(ops)]
                planned.append({"source_id": part.at[index, "id"], "op": op})
    return pd.DataFrame(planned, columns=["source_id", "op"])


def apply_op(image: np.ndarray, op: str) -> np.ndarray:
    return np.ascontiguousarray(OPS[op](image))


def augmented_table(frame: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s rows plus one row per planned copy, named `<source id>__<op>` (`<op><n>` for
    the n-th repeat of an op; a hash suffix where an original already bears that id); copies
    keep their source's metadata. `augmented_from` and `op`
    are empty for originals."""
    sources = frame.set_index("id")
    copies = sources.loc[plan["source_id"]].reset_index()
    copies["augmented_from"] = plan["source_id"].values
    copies["op"] = plan["op"].values
    repeat = plan.groupby(["source_id", "op"]).cumcount()
    names = [
        f"{source}__{op}{'' if n == 0 else n}"
        for source, op, n in zip(plan["source_id"], plan["op"], repeat, strict=True)
    ]
    originals_ids = set(frame["id"])  # an image filed as `a/hflip.png` beside `a.png`
    copies["id"] = [
        f"{name}_{hashlib.sha1(name.encode()).hexdigest()[:8]}" if name in originals_ids else name
        for name in names
    ]
    originals = frame.assign(augmented_from="", op="")
    return pd.concat([originals, copies], ignore_index=True)


class StaleInputError(PipelineError):
    """A stage's input was made from an older version of an earlier stage's output."""


def require_split_of(prepared: pd.DataFrame, split_table: pd.DataFrame, where: str) -> None:
    """Refuse a prepared dataset whose original images do not sit in the splits `split_table`
    assigns: `split` re-run by hand without `augment` (DVC runs both), so training and testing
    would use the old split while `split.json` and the report describe the new one."""
    originals = prepared[prepared["augmented_from"].fillna("").astype(str) == ""]
    if dict(zip(originals["id"], originals["split"], strict=True)) != dict(
        zip(split_table["id"], split_table["split"], strict=True)
    ):
        raise StaleInputError(
            f"{where} was built from another split than today's split table (`split` ran "
            "since `augment`): run `python -m pipeline.stages.augment` first (`dvc repro` does)"
        )


def require_images_of(split_table: pd.DataFrame, cropped: pd.DataFrame, where: str) -> None:
    """Refuse a split table that does not list exactly today's crops: images added or removed
    since `split` ran would be silently left out, or missing."""
    listed, present = set(split_table["id"]), set(cropped["id"])
    if listed != present:
        raise StaleInputError(
            f"{where} lists {len(listed - present)} image(s) no longer cropped and misses "
            f"{len(present - listed)} new one(s): run `python -m pipeline.stages.split` first "
            "(`dvc repro` does)"
        )


def image_path(root: Path, split: str, label: str, image_id: str) -> Path:
    """Where an image lives in an image-folder dataset (torchvision/Ultralytics layout)."""
    return Path(root) / split / label / f"{image_id}.png"


def _write_row(row: dict, out_dir: Path) -> None:
    target = image_path(out_dir, row["split"], row["label"], row["id"])
    if row["augmented_from"]:
        write_image(target, apply_op(read_image(row["path"]), row["op"]))
    else:
        shutil.copyfile(row["path"], target)


def materialise(table: pd.DataFrame, out_dir: Path, desc: str) -> pd.DataFrame:
    """Write the image-folder dataset `<out_dir>/<split>/<label>/<id>.png` of an
    `augmented_table` (originals copied, copies transformed); return the table with `path`
    pointing at the written files. Every split's class folders exist, even when empty."""
    out_dir = Path(out_dir).absolute()  # joblib may reuse workers started elsewhere
    table = table.assign(path=[str(Path(p).absolute()) for p in table["path"]])
    for split in table["split"].unique():
        for label in CLASSES:
            (out_dir / split / label).mkdir(parents=True, exist_ok=True)
    parallel_map(partial(_write_row, out_dir=out_dir), table.to_dict("records"), desc)
    return relocate(table, out_dir)


def relocate(table: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The table with `path` pointing into the dataset folder `root` (e.g. its final place
    after an atomic rename)."""
    columns = zip(table["split"], table["label"], table["id"], strict=True)
    return table.assign(path=[str(image_path(root, *row)) for row in columns])
