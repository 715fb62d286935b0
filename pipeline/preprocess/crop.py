"""C-NMC-style cropping (paper III.A.1): cut the black border around the cell, then resize."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from omegaconf import DictConfig


def crop_box(image: np.ndarray, cfg: DictConfig) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the region to keep, by `cfg.rule`.

    `bbox` keeps the tight box around pixels brighter than `threshold` plus a `margin`, which
    adapts to every cell; `fraction` reproduces the paper's fixed "20-80%" central crop.
    """
    h, w = image.shape[:2]
    if cfg.rule == "fraction":
        lo, hi = cfg.fraction
        top, left = int(h * lo), int(w * lo)  # at least one row and column, however narrow
        return top, max(int(h * hi), top + 1), left, max(int(w * hi), left + 1)
    foreground = image.max(axis=2) > cfg.threshold if image.ndim == 3 else image > cfg.threshold
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0:
        return 0, h, 0, w
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad_y, pad_x = int(round((bottom - top) * cfg.margin)), int(round((right - left) * cfg.margin))
    return max(top - pad_y, 0), min(bottom + pad_y, h), max(left - pad_x, 0), min(right + pad_x, w)


def crop_and_resize(image: np.ndarray, cfg: DictConfig) -> np.ndarray:
    """Crop by `cfg.rule`, optionally pad to a square with black, resize to `cfg.size`."""
    return _reshape(image, crop_box(image, cfg), cfg)


def crop_footprint(image: np.ndarray, mask: np.ndarray, cfg: DictConfig) -> np.ndarray:
    """The pixels of `image`'s crop that any pixel of `mask` (of `image`'s size) contributes
    to: the mask taken through the same crop, padding and resize, with the image's own
    interpolation. Outside it the crop's pixels come from outside the mask alone; a
    nearest-neighbour mask would call the resize's blend of the cell's edge "outside"."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    reshaped = _reshape(mask.astype(np.float32), crop_box(image, cfg), cfg)
    return np.abs(reshaped) > 1e-6


def _reshape(image: np.ndarray, box: tuple[int, int, int, int], cfg) -> np.ndarray:
    top, bottom, left, right = box
    region = image[top:bottom, left:right]
    if cfg.pad_to_square:
        h, w = region.shape[:2]
        side = max(h, w)
        pad_y, pad_x = side - h, side - w
        region = cv2.copyMakeBorder(
            region,
            pad_y // 2,
            pad_y - pad_y // 2,
            pad_x // 2,
            pad_x - pad_x // 2,
            cv2.BORDER_CONSTANT,
            value=0,
        )
    shrinking = region.shape[0] > cfg.size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(region, (cfg.size, cfg.size), interpolation=interpolation)
