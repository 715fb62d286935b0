"""Colour, shape and texture of the cell and its nucleus + a random forest (beyond the paper).

What a haematologist reads off a lymphoblast: a large cell, a large nucleus with little
cytoplasm (high nucleus/cell ratio), fine chromatin, the stain's hue. Every measure is
relative to the crop (areas as shares of it, lengths over its side), so it does not depend on
the crop's pixel size; under `crop.rule: fraction` (one scale for every cell) the areas keep
the cell's real size, under `bbox` (every cell scaled to fill the crop) they do not. The
texture (grey-level co-occurrence at 1 px) does depend on the pixel size: `image_side`
measures every crop at one side (null: the crop's own), which a nested CV can choose.

`feature_set: extended` adds what the basic 43 leave out of a haematologist's reading: the
cytoplasm on its own (its colour: a blast's scant cytoplasm is deeply basophilic), every
region in CIE Lab (a perceptual space, less tied to one scanner's RGB), the chromatin's
grey-level distribution and its local binary patterns (fine, even chromatin vs the clumped
chromatin of a mature lymphocyte), co-occurrence at 2 and 4 px too, and the nuclear
outline's irregularity (clefts, lobes).
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
from scipy.stats import kurtosis, skew
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline, make_pipeline

from pipeline.config import ConfigError
from pipeline.models import params
from pipeline.models.base import TrainContext
from pipeline.models.feature_model import BACKGROUND_LEVEL, FeatureClassifier

SHAPE = ("area", "perimeter", "eccentricity", "solidity", "extent", "circularity", "axis_ratio")
COLOUR = tuple(
    f"{space}_{channel}_{stat}" for space in ("rgb", "hsv") for channel in "012"
    for stat in ("mean", "std")
)  # fmt: skip
TEXTURE = ("contrast", "homogeneity", "energy", "correlation")
GRAY_LEVELS = 32  # grey levels of the co-occurrence matrix (fewer = less sparse on small crops)
FEATURE_NAMES = (
    *(f"cell_{n}" for n in SHAPE + COLOUR),
    *(f"nucleus_{n}" for n in SHAPE + COLOUR + TEXTURE),
    "nucleus_to_cell_area",
)

LAB = tuple(f"lab_{channel}_{stat}" for channel in "Lab" for stat in ("mean", "std"))
CHROMATIN = ("gray_p10", "gray_p50", "gray_p90", "gray_skew", "gray_kurtosis", "gray_entropy")
FAR_DISTANCES = (2, 4)  # co-occurrence distances (px) beyond the basic set's 1
LBP_RINGS = ((8, 1), (16, 2))  # (points, radius): uniform rotation-invariant LBP, P + 2 codes
OUTLINE = ("lobes", "convex_perimeter_ratio")
EXTENDED_NAMES = (
    *FEATURE_NAMES,
    *(f"cytoplasm_{n}" for n in COLOUR + LAB),
    *(f"cell_{n}" for n in LAB),
    *(f"nucleus_{n}" for n in LAB + CHROMATIN),
    *(f"nucleus_{n}_{d}px" for d in FAR_DISTANCES for n in TEXTURE),
    *(f"nucleus_lbp{p}r{r}_{code}" for p, r in LBP_RINGS for code in range(p + 2)),
    *(f"nucleus_{n}" for n in OUTLINE),
)
FEATURE_SETS = {"basic": FEATURE_NAMES, "extended": EXTENDED_NAMES}


def _largest_region(mask: np.ndarray) -> np.ndarray:
    labelled = label(mask)
    if labelled.max() <= 1:
        return labelled > 0
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == 1 + int(sizes.argmax())


def _dark(gray: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """The cell's pixels at or below Otsu's threshold of its grey levels: stained chromatin
    is the darkest part of a white cell."""
    levels = gray[cell]
    return cell & (gray <= (threshold_otsu(levels) if np.ptp(levels) else levels.max()))


def _cell_dark_nucleus(
    image: np.ndarray, gray: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell: the largest non-black region of `image` (the whole crop when segmentation
    left none). Its `_dark` mask (for `_outline`'s lobes). The nucleus: the largest `_dark`
    region of the cell (the whole cell when there is none)."""
    cell = _largest_region(image.max(axis=2) > BACKGROUND_LEVEL)
    if cell.sum() < 2:
        cell = np.ones(image.shape[:2], bool)
    dark = _dark(gray, cell)
    nucleus = _largest_region(dark)
    return cell, dark, nucleus if nucleus.any() else cell


def _shape(mask: np.ndarray) -> list[float]:
    side = float(max(mask.shape))
    region = regionprops(mask.astype(np.uint8))[0]
    perimeter = float(region.perimeter) or 1.0
    return [
        region.area / mask.size,
        perimeter / side,
        float(region.eccentricity),
        float(region.solidity),
        float(region.extent),
        float(min(1.0, 4 * np.pi * region.area / perimeter**2)),
        float(region.axis_minor_length / region.axis_major_length)
        if region.axis_major_length
        else 1.0,
    ]


def _channel_stats(*images: np.ndarray, mask: np.ndarray) -> list[float]:
    """Mean and standard deviation of each channel of each uint8 image over `mask`, in 0-1."""
    values = []
    for image in images:
        pixels = image[mask].astype(np.float64) / 255.0
        for channel in range(3):
            values += [float(pixels[:, channel].mean()), float(pixels[:, channel].std())]
    return values


def _texture(gray: np.ndarray, mask: np.ndarray, distances: tuple[int, ...] = (1,)) -> list[float]:
    """Grey-level co-occurrence of the region's bounding box (four directions), the region's
    own grey range stretched over GRAY_LEVELS levels: TEXTURE per distance, distance slowest."""
    rows, cols = np.nonzero(mask)
    box = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float64)
    low, high = box.min(), box.max()
    quantised = ((box - low) / (high - low + 1e-9) * (GRAY_LEVELS - 1)).round().astype(np.uint8)
    matrix = graycomatrix(
        quantised, list(distances), [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], GRAY_LEVELS,
        symmetric=True, normed=True,
    )  # fmt: skip
    by_prop = {
        prop: np.nan_to_num(graycoprops(matrix, prop).mean(axis=1), nan=1.0) for prop in TEXTURE
    }
    return [float(by_prop[prop][i]) for i in range(len(distances)) for prop in TEXTURE]


def _chromatin(gray: np.ndarray, mask: np.ndarray) -> list[float]:
    """The nucleus's grey-level distribution: where it lies, how it leans, how spread it is."""
    levels = gray[mask].astype(np.float64) / 255.0
    counts = np.bincount((levels * (GRAY_LEVELS - 1)).round().astype(int), minlength=GRAY_LEVELS)
    shares = counts[counts > 0] / counts.sum()
    flat = np.ptp(levels) == 0  # skewness and kurtosis of a constant are undefined
    return [
        *(float(v) for v in np.percentile(levels, (10, 50, 90))),
        0.0 if flat else float(skew(levels)),
        0.0 if flat else float(kurtosis(levels)),
        float(-(shares * np.log2(shares)).sum()),
    ]


def _local_binary_patterns(gray: np.ndarray, mask: np.ndarray) -> list[float]:
    """Shares of the uniform rotation-invariant LBP codes over the region, per LBP_RINGS ring."""
    pad = max(radius for _, radius in LBP_RINGS)
    rows, cols = np.nonzero(mask)
    box = np.s_[
        max(rows.min() - pad, 0) : rows.max() + pad + 1,
        max(cols.min() - pad, 0) : cols.max() + pad + 1,
    ]
    values: list[float] = []
    for points, radius in LBP_RINGS:
        codes = local_binary_pattern(gray[box], points, radius, method="uniform")[mask[box]]
        codes = codes.astype(int)
        values += (np.bincount(codes, minlength=points + 2) / codes.size).tolist()
    return values


def _outline(dark: np.ndarray, nucleus: np.ndarray) -> list[float]:
    """Regions of the cell's `dark` mask at least a tenth of the nucleus (lobes), and the
    nuclear outline's length over its convex hull's (1 for a smooth convex nucleus, more when
    cleft)."""
    sizes = np.bincount(label(dark).ravel())[1:]
    region = regionprops(nucleus.astype(np.uint8))[0]
    hull = regionprops(region.image_convex.astype(np.uint8))[0]
    return [
        float(max(1, (sizes >= 0.1 * nucleus.sum()).sum())),
        float(region.perimeter / hull.perimeter) if hull.perimeter else 1.0,
    ]


def cell_features(image: np.ndarray, feature_set: str = "basic") -> np.ndarray:
    """FEATURE_SETS[feature_set], in that order, of one RGB uint8 crop."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cell, dark, nucleus = _cell_dark_nucleus(image, gray)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)  # hue over 0-255, like the other channels
    values = [
        *_shape(cell),
        *_channel_stats(image, hsv, mask=cell),
        *_shape(nucleus),
        *_channel_stats(image, hsv, mask=nucleus),
        *_texture(gray, nucleus),
        nucleus.sum() / cell.sum(),
    ]
    if feature_set == "extended":
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        cytoplasm = cell & ~nucleus
        if not cytoplasm.any():  # the nucleus fills the cell: measure the cell instead
            cytoplasm = cell
        values += [
            *_channel_stats(image, hsv, mask=cytoplasm),
            *_channel_stats(lab, mask=cytoplasm),
            *_channel_stats(lab, mask=cell),
            *_channel_stats(lab, mask=nucleus),
            *_chromatin(gray, nucleus),
            *_texture(gray, nucleus, FAR_DISTANCES),
            *_local_binary_patterns(gray, nucleus),
            *_outline(dark, nucleus),
        ]
    return np.asarray(values, dtype=np.float32)


class CellFeaturesClassifier(FeatureClassifier):
    """`cell_features` of each crop (`feature_set`, measured at `image_side`) + a tree model:
    trees need no scaling, and the measures' units differ."""

    feature_name: ClassVar[str] = "cell features"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.optional_int(self.config, "image_side", 16)
        # Absent in models saved before the extended set existed: those measured the basic one.
        self.config.setdefault("feature_set", "basic")
        params.choice(self.config, "feature_set", FEATURE_SETS)

    def _require_counts(self, minimums: dict[str, int]) -> None:
        """Each key an integer >= its minimum (present, not null)."""
        params.require(self.config, minimums)
        for key, minimum in minimums.items():
            if params.optional_int(self.config, key, minimum) is None:
                raise ConfigError(
                    f"{params.section_key(self.config)}.{key}: an integer >= {minimum}, not null"
                )

    def features(self, image: np.ndarray) -> np.ndarray:
        side = self.config.get("image_side")
        if side is not None and image.shape[:2] != (side, side):
            interpolation = cv2.INTER_AREA if side < max(image.shape[:2]) else cv2.INTER_LINEAR
            image = cv2.resize(image, (side, side), interpolation=interpolation)
        return cell_features(image, self.config["feature_set"])


class CellFeaturesForestClassifier(CellFeaturesClassifier):
    """A random forest (scikit-learn) on `cell_features`: no iterations; probabilities are the
    trees' vote shares."""

    kind: ClassVar[str] = "cell_features_rf"
    model_file: ClassVar[str] = "forest.joblib"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._require_counts({"n_estimators": 1, "min_samples_leaf": 1})
        params.require(self.config, ("max_features",))
        share = self.config["max_features"]
        if share not in ("sqrt", "log2") and not (isinstance(share, float) and 0 < share <= 1):
            raise ConfigError(
                f"{params.section_key(self.config)}.max_features: {share!r} is not sqrt, log2 "
                "or a fraction in (0, 1]"
            )

    def make_pipeline(self, ctx: TrainContext) -> Pipeline:
        forest = RandomForestClassifier(
            n_estimators=int(self.config["n_estimators"]),
            min_samples_leaf=int(self.config["min_samples_leaf"]),
            max_features=self.config["max_features"],
            n_jobs=ctx.threads,  # train.threads; null: scikit-learn's default, one core
            random_state=ctx.seed,
        )
        return make_pipeline(forest)


class CellFeaturesBoostingClassifier(CellFeaturesClassifier):
    """Histogram gradient boosting (scikit-learn) on `cell_features`: trees fitted in sequence,
    each to the last ones' errors. A fixed number of iterations: scikit-learn's early stopping
    would hold out a random share of the training cells, subjects mixed across it."""

    kind: ClassVar[str] = "cell_features_gb"
    model_file: ClassVar[str] = "boosting.joblib"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._require_counts({"max_iter": 1, "max_leaf_nodes": 2, "min_samples_leaf": 1})
        params.require(self.config, ("learning_rate", "l2_regularization"))
        params.number(self.config, "learning_rate", 0.0, 1.0, above_minimum=True)
        params.number(self.config, "l2_regularization", 0.0)

    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        from threadpoolctl import threadpool_limits

        # Boosting's threads are OpenMP's: held to train.threads like every other model's.
        with threadpool_limits(limits=ctx.threads, user_api="openmp"):
            return super()._fit(ctx)

    def make_pipeline(self, ctx: TrainContext) -> Pipeline:
        boosting = HistGradientBoostingClassifier(
            max_iter=int(self.config["max_iter"]),
            learning_rate=float(self.config["learning_rate"]),
            max_leaf_nodes=int(self.config["max_leaf_nodes"]),
            min_samples_leaf=int(self.config["min_samples_leaf"]),
            l2_regularization=float(self.config["l2_regularization"]),
            early_stopping=False,
            random_state=ctx.seed,
        )
        return make_pipeline(boosting)
