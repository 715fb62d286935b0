"""Hand-made features of each image + a scikit-learn estimator: the shared half of HOG + SVM
and the cell-features forest, so each of them only says what it measures and what it fits."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import Pipeline

from pipeline.io import read_image
from pipeline.models.base import Classifier, TrainContext, fit_pipeline
from pipeline.parallel import parallel_map
from pipeline.train.data import check_images, image_folder

# Segmented crops sit on black: pixels at or below this level (max over channels) are background.
BACKGROUND_LEVEL = 10


def _file_features(path: str, model: FeatureClassifier) -> np.ndarray:
    return model.features(read_image(path))


class FeatureClassifier(Classifier):
    """Features of every train/val file on all cores, one `Pipeline` fitted on the training
    features (sample weights balancing the classes and, with `train.subject_balance`, the
    subjects within each class), P(ALL) from its `predict_proba`. Not iterative: `fit`
    reports one "epoch" (train and val loss, accuracy)."""

    weighs_subjects = True
    model_file: ClassVar[str]  # the fitted pipeline's file in the model folder
    feature_name: ClassVar[str]  # names the feature extraction in the progress bar

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.pipeline: Pipeline | None = None

    @abstractmethod
    def features(self, image: np.ndarray) -> np.ndarray:
        """A fixed-length float vector for one RGB uint8 image."""

    @abstractmethod
    def make_pipeline(self, ctx: TrainContext) -> Pipeline:
        """The unfitted estimator (its last step takes `sample_weight`)."""

    def _folder_features(
        self, ctx: TrainContext, split: str, with_groups: bool = False
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """Features, targets and (`with_groups` and `train.subject_balance`, looked up before
        the slow part) the group of every file of one split."""
        dataset = image_folder(ctx.data_dir, split, transform=None)
        paths = [path for path, _ in dataset.samples]
        groups = ctx.subject_groups(paths) if with_groups else None
        extract = partial(_file_features, model=self)
        features = parallel_map(extract, paths, desc=f"{self.feature_name} {split}")
        return np.stack(features), np.asarray(dataset.targets), groups

    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        self.image_size = ctx.image_size
        x_train, y_train, groups = self._folder_features(ctx, "train", with_groups=True)
        x_val, y_val, _ = self._folder_features(ctx, "val")
        self.pipeline = self.make_pipeline(ctx)
        where = self.config.get("name", self.kind)
        fit_pipeline(self.pipeline, x_train, y_train, ctx.class_balance, groups, where)
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
        features = np.stack([self.features(image) for image in images])
        column = list(self.pipeline.classes_).index(0)  # class index 0 = 'all'
        return self.pipeline.predict_proba(features)[:, column].astype(np.float64)

    def _save_weights(self, directory: Path) -> None:
        joblib.dump(self.pipeline, directory / self.model_file)

    def _load_weights(self, directory: Path) -> None:
        self.pipeline = joblib.load(directory / self.model_file)
