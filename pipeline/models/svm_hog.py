"""HOG features + linear SVM (paper III.C.1)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import cv2
import joblib
import numpy as np
from skimage.feature import hog
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from pipeline.config import ConfigError
from pipeline.io import read_image
from pipeline.models import params
from pipeline.models.base import Classifier, TrainContext, balanced_fit_args
from pipeline.parallel import parallel_map
from pipeline.train.data import check_images, image_folder

MODEL_FILE = "svm.joblib"


# Segmented crops sit on black: pixels at or below this level (max over channels) are background.
BACKGROUND_LEVEL = 10


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


def _file_features(path: str, hog_config: dict[str, Any]) -> np.ndarray:
    return hog_features(read_image(path), hog_config)


class HogSvmClassifier(Classifier):
    """StandardScaler -> LinearSVC on HOG features, with Platt-scaled probabilities.

    Probability choice: `CalibratedClassifierCV(LinearSVC, method='sigmoid', cv=5,
    ensemble=False)`, i.e. Platt scaling fitted on 5-fold out-of-fold decision values and one
    final SVM on all training data: the same recipe as `SVC(kernel='linear',
    probability=True)`, but liblinear scales linearly with the number of images where libsvm's
    kernel SVC grows quadratically (C-NMC has ~10k training cells). Not iterative: `fit`
    reports one "epoch".
    """

    kind: ClassVar[str] = "svm_hog"
    HOG_KEYS = ("orientations", "pixels_per_cell", "cells_per_block", "image_side", "color")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("C", "hog"))
        where = f"{self.config.get('name', self.kind)}.hog"
        params.require(self.config["hog"], self.HOG_KEYS, where)
        params.choice(self.config["hog"], "color", ("gray", "rgb"), where)
        self.config["hog"].setdefault("color_hist_bins", 0)
        if int(self.config["hog"]["color_hist_bins"]) < 0:
            raise ConfigError(
                f"{params.section_key(self.config, where)}.color_hist_bins: must be >= 0"
            )
        self.pipeline: Pipeline | None = None

    def _folder_features(self, data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = image_folder(data_dir, split, transform=None)
        paths = [path for path, _ in dataset.samples]
        extract = partial(_file_features, hog_config=self.config["hog"])
        features = parallel_map(extract, paths, desc=f"HOG {split}")
        return np.stack(features), np.asarray(dataset.targets)

    def fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        self.image_size = ctx.image_size
        x_train, y_train = self._folder_features(ctx.data_dir, "train")
        x_val, y_val = self._folder_features(ctx.data_dir, "val")
        svm = LinearSVC(C=float(self.config["C"]), dual="auto", random_state=ctx.seed)
        self.pipeline = make_pipeline(
            StandardScaler(),
            CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False),
        )
        self.pipeline.fit(
            x_train, y_train, **balanced_fit_args(self.pipeline, y_train, ctx.class_balance)
        )
        row = {"epoch": 1}
        for split, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
            proba = self.pipeline.predict_proba(x)
            row[f"{split}_loss"] = float(log_loss(y, proba, labels=[0, 1]))
            row[f"{split}_accuracy"] = float(accuracy_score(y, proba.argmax(1)))
        if ctx.on_epoch is not None:
            ctx.on_epoch(1, row)
        return [row]

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self.pipeline is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained or loaded")
        check_images(images)
        if not len(images):
            return np.zeros(0)
        features = np.stack([hog_features(image, self.config["hog"]) for image in images])
        column = list(self.pipeline.classes_).index(0)  # class index 0 = 'all'
        return self.pipeline.predict_proba(features)[:, column].astype(np.float64)

    def _save_weights(self, directory: Path) -> None:
        joblib.dump(self.pipeline, directory / MODEL_FILE)

    def _load_weights(self, directory: Path) -> None:
        self.pipeline = joblib.load(directory / MODEL_FILE)
