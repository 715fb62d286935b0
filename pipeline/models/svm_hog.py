"""HOG features + linear SVM (paper III.C.1)."""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
from skimage.feature import hog
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from pipeline.config import ConfigError
from pipeline.models import params
from pipeline.models.base import TrainContext, platt_scaled
from pipeline.models.feature_model import BACKGROUND_LEVEL, FeatureClassifier


def color_histogram(image: np.ndarray, bins: int) -> np.ndarray:
    """Per-channel histogram of the cell's (non-black) pixels, each channel summing to 1."""
    pixels = image.reshape(-1, 3)
    cell = pixels[pixels.max(axis=1) > BACKGROUND_LEVEL]
    cell = cell if len(cell) else pixels
    return np.concatenate(
        [np.histogram(cell[:, c], bins=bins, range=(0, 256))[0] / len(cell) for c in range(3)]
    )


def hog_features(image: np.ndarray, hog_config: dict[str, Any]) -> np.ndarray:
    """HOG of `image` resized to `image_side` (fixed feature length whatever the input size);
    `color: gray` on luminance, `rgb` per channel, concatenated. `color_hist_bins` > 0 appends
    a colour histogram of the cell: HOG sees gradients only, never the stain's colour."""
    side = int(hog_config["image_side"])
    resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    channels = (
        [cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)]
        if hog_config["color"] == "gray"
        else [resized[:, :, c] for c in range(3)]
    )
    cell, block = int(hog_config["pixels_per_cell"]), int(hog_config["cells_per_block"])
    bins = int(hog_config.get("color_hist_bins", 0))
    return np.concatenate(
        [
            hog(
                channel,
                orientations=int(hog_config["orientations"]),
                pixels_per_cell=(cell, cell),
                cells_per_block=(block, block),
                block_norm="L2-Hys",
                feature_vector=True,
            )
            for channel in channels
        ]
        + ([color_histogram(resized, bins)] if bins > 0 else [])
    ).astype(np.float32)


class HogSvmClassifier(FeatureClassifier):
    """StandardScaler -> LinearSVC on HOG features, with Platt-scaled probabilities.

    Probability choice: `CalibratedClassifierCV(LinearSVC, method='sigmoid', cv=5,
    ensemble=False)`, i.e. Platt scaling fitted on 5-fold out-of-fold decision values and one
    final SVM on all training data: the same recipe as `SVC(kernel='linear',
    probability=True)`, but liblinear scales linearly with the number of images where libsvm's
    kernel SVC grows quadratically (C-NMC has ~10k training cells).
    """

    kind: ClassVar[str] = "svm_hog"
    model_file: ClassVar[str] = "svm.joblib"
    feature_name: ClassVar[str] = "HOG"
    HOG_KEYS = ("orientations", "pixels_per_cell", "cells_per_block", "image_side", "color")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("C", "hog"))
        params.number(self.config, "C", 0, above_minimum=True)
        where = f"{self.config.get('name', self.kind)}.hog"
        params.require(self.config["hog"], self.HOG_KEYS, where)
        params.choice(self.config["hog"], "color", ("gray", "rgb"), where)
        self.config["hog"].setdefault("color_hist_bins", 0)
        if int(self.config["hog"]["color_hist_bins"]) < 0:
            raise ConfigError(
                f"{params.section_key(self.config, where)}.color_hist_bins: must be >= 0"
            )

    def features(self, image: np.ndarray) -> np.ndarray:
        return hog_features(image, self.config["hog"])

    def make_pipeline(self, ctx: TrainContext) -> Pipeline:
        svm = LinearSVC(C=float(self.config["C"]), dual="auto", random_state=ctx.seed)
        return make_pipeline(StandardScaler(), platt_scaled(svm))
