"""Single-cell segmentation (paper III.A.2): threshold -> the centred component -> mask -> crop.

The paper thresholds grayscale with Otsu, keeps connected components of at least 100 px
(at the original 257 px side), takes the cell and refines it with an active contour. Grayscale
cannot tell a white cell from the red cells touching it (both are darker than the
background), so `channel` may instead pick the Lab b* axis ("lab_b"): Giemsa/Wright stains
white-cell nucleus and cytoplasm blue-purple (azure/methylene blue) while red cells (eosin,
pink) and background (yellowish white) sit on the yellow side of b*. On the ALL-IDB2 dev masks
b* separates cell from background pixels with a mean per-image ROC-AUC of 0.99 against 0.95
for grayscale, and cytoplasm from background with 0.98 against 0.84. Healthy cells often have a
faint cytoplasm that plain Otsu lumps with the background; `otsu_classes: 3` (multi-Otsu)
gives it a class of its own and keeps the two bluer classes (whole-cell Dice on the 130 dev
masks, `reports/segmentation/all_idb2.json`: gray/2 classes 0.86, b*/3 classes 0.95).

Every pixel-size parameter is given at `reference_side` and scaled to the image, so the same
config works on 0.4-scale ALL-IDB2 (103 px), the original (257 px) and C-NMC (450 px).
Foreground polarity is chosen per image (the Otsu class covering less of the border), so
cells on a light smear and on C-NMC's black background both work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.filters import gaussian, threshold_multiotsu, threshold_otsu
from skimage.measure import find_contours
from skimage.morphology import convex_hull_image, disk
from skimage.segmentation import active_contour

from pipeline.config import SEGMENT_CHANNELS, ConfigError

# A union of classes reaching this share of the image border holds background, not just the
# centred cell (the nucleus + cytoplasm classes reach at most 0.25 on all 260 ALL-IDB2 images).
_MAX_BORDER_SHARE = 1 / 3


@dataclass
class Segmentation:
    """Boolean masks of the whole cell and its nucleus; `found` is False for a fallback."""

    cell: np.ndarray
    nucleus: np.ndarray
    found: bool


def channel_image(image: np.ndarray, channel: str) -> np.ndarray:
    """The single channel Otsu thresholds, as float32 (polarity is decided later)."""
    if channel == "gray":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if channel == "lab_b":
        return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 2].astype(np.float32)
    if channel == "saturation":
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[:, :, 1].astype(np.float32)
    raise ConfigError(f"segment.channel: {channel!r} not in {SEGMENT_CHANNELS}")


def _scale(image: np.ndarray, cfg: Any) -> float:
    """Linear factor from the reference image side to this image's side."""
    return max(image.shape[:2]) / float(cfg.reference_side)


def otsu_foreground(values: np.ndarray, classes: int = 2) -> np.ndarray:
    """(Multi-)Otsu classes of `values` on the cell's side, as far as the background.

    Polarity: the cell end is the extreme class (lowest or highest) that covers less of the
    image border, whether the background is a light smear (cell darker, bluer) or C-NMC
    black (cell brighter). From that end, classes are added while their union covers less
    than a third of the border: with 3 classes a faint cytoplasm joins the nucleus, while a
    background class that differs from the red cells stays out.
    """
    classes = min(classes, np.unique(values).size)  # a flat or two-tone image has fewer
    if classes < 2:
        return np.zeros(values.shape, dtype=bool)
    thresholds = threshold_multiotsu(values, classes=classes)
    border = np.zeros(values.shape, dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    from_low = [values <= t for t in thresholds]
    from_high = [values > t for t in thresholds[::-1]]
    unions = from_low if from_low[0][border].mean() <= from_high[0][border].mean() else from_high
    foreground = unions[0]
    for union in unions[1:]:
        if union[border].mean() >= _MAX_BORDER_SHARE:
            break
        foreground = union
    return foreground


def select_cell(foreground: np.ndarray, min_area: float) -> np.ndarray:
    """The connected component of at least `min_area` px with the pixel nearest the centre."""
    labels, n_labels = ndi.label(foreground)
    if n_labels == 0:
        return np.zeros(foreground.shape, dtype=bool)
    index = np.arange(1, n_labels + 1)
    areas = ndi.sum_labels(foreground, labels, index)
    index = index[areas >= min_area]
    if index.size == 0:
        return np.zeros(foreground.shape, dtype=bool)
    rows, cols = np.indices(labels.shape)
    centre_r, centre_c = (labels.shape[0] - 1) / 2, (labels.shape[1] - 1) / 2
    dist = (rows - centre_r) ** 2 + (cols - centre_c) ** 2
    nearest = ndi.minimum(dist, labels, index)
    return labels == index[int(np.argmin(nearest))]


def _otsu_cell(image: np.ndarray, cfg: Any) -> np.ndarray:
    scale = _scale(image, cfg)
    foreground = otsu_foreground(channel_image(image, cfg.channel), cfg.otsu_classes)
    radius = round(cfg.opening_radius_px * scale)
    if radius > 0:
        foreground = ndi.binary_opening(foreground, structure=disk(radius))
    cell = select_cell(foreground, cfg.min_area_px * scale**2)
    if cfg.convex_hull and cell.any():
        cell = convex_hull_image(cell)
    if cfg.fill_holes:
        cell = ndi.binary_fill_holes(cell)
    return cell


def _refine_active_contour(image: np.ndarray, cell: np.ndarray, cfg: Any) -> np.ndarray:
    """Snake started on the Otsu boundary, pulled to edges of the smoothed channel image."""
    ac = cfg.active_contour
    contours = find_contours(np.pad(cell, 1).astype(float), 0.5)
    if not contours:
        return cell
    contour = max(contours, key=len) - 1
    # Resample the closed boundary to n_points evenly spaced points.
    closed = np.vstack([contour, contour[:1]])
    arc = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    samples = np.linspace(0, arc[-1], ac.n_points, endpoint=False)
    init = np.column_stack([np.interp(samples, arc, closed[:, i]) for i in (0, 1)])
    values = channel_image(image, cfg.channel)
    smooth = gaussian(values / 255.0, sigma=ac.smoothing_sigma * _scale(image, cfg))
    snake = active_contour(
        smooth,
        init,
        alpha=ac.alpha,
        beta=ac.beta,
        gamma=ac.gamma,
        w_edge=ac.w_edge,
        w_line=0.0,
        max_num_iter=ac.max_num_iter,
        boundary_condition="periodic",
    )
    refined = np.zeros(cell.shape, dtype=bool)
    rr, cc = draw_polygon(snake[:, 0], snake[:, 1], shape=cell.shape)
    refined[rr, cc] = True
    return refined if refined.any() else cell


def nucleus_in(image: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Nucleus = the darker Otsu class of grayscale inside the cell (it stains darkest)."""
    if cell.sum() < 2:
        return np.zeros(cell.shape, dtype=bool)
    gray = channel_image(image, "gray")
    inside = gray[cell]
    if np.ptp(inside) == 0:
        return cell.copy()
    nucleus = cell & (gray <= threshold_otsu(inside))
    return ndi.binary_fill_holes(nucleus)


def segment_cell(image: np.ndarray, cfg: Any) -> Segmentation:
    """Segment the centred white cell of an RGB uint8 image with `cfg.method`.

    Falls back to the whole image with `found=False` when no component is large enough,
    so a stage can keep the image and report it.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"segment_cell needs an RGB uint8 (H, W, 3) image, got {image.shape}")
    whole = np.ones(image.shape[:2], dtype=bool)
    if cfg.method == "none":
        return Segmentation(cell=whole, nucleus=nucleus_in(image, whole), found=True)
    if cfg.method not in ("otsu", "otsu_active_contour"):
        raise ValueError(f"segment.method: unknown method {cfg.method!r}")
    cell = _otsu_cell(image, cfg)
    if not cell.any():
        return Segmentation(cell=whole, nucleus=np.zeros_like(whole), found=False)
    if cfg.method == "otsu_active_contour":
        cell = _refine_active_contour(image, cell, cfg)
    return Segmentation(cell=cell, nucleus=nucleus_in(image, cell), found=True)


def apply_mask_and_crop(image: np.ndarray, seg: Segmentation) -> tuple[np.ndarray, np.ndarray]:
    """Black out everything outside the cell and crop to the cell's bounding box."""
    mask = seg.cell
    if not mask.any():
        return image.copy(), mask.copy()
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    masked = np.where(mask[:, :, None], image, 0).astype(image.dtype)
    return masked[window], mask[window].copy()
