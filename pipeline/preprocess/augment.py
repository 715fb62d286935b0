"""Paper augmentation (flips, 90-degree rotations), by default on the training split only."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

OPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hflip": lambda im: im[:, ::-1],
    "vflip": lambda im: im[::-1, :],
    "rot90": lambda im: np.rot90(im, 1),
    "rot180": lambda im: np.rot90(im, 2),
    "rot270": lambda im: np.rot90(im, 3),
}


def plan_augmentation(frame: pd.DataFrame, cfg, seed: int) -> pd.DataFrame:
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
