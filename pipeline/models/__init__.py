"""The classifiers behind `pipeline.models.base.Classifier` (importing fills the registry)."""

from pipeline.models.base import Classifier, TrainContext, build_model, load_model
from pipeline.models.cell_features import (
    CellFeaturesBoostingClassifier,
    CellFeaturesForestClassifier,
)
from pipeline.models.cnn_svm import CnnSvmClassifier
from pipeline.models.ensemble import EnsembleClassifier
from pipeline.models.svm_hog import HogSvmClassifier
from pipeline.models.torchvision_cnn import TorchvisionClassifier
from pipeline.models.weights import MissingWeightsError
from pipeline.models.yolo import YoloClassifier

__all__ = [
    "CellFeaturesBoostingClassifier",
    "CellFeaturesForestClassifier",
    "Classifier",
    "CnnSvmClassifier",
    "EnsembleClassifier",
    "HogSvmClassifier",
    "MissingWeightsError",
    "TorchvisionClassifier",
    "TrainContext",
    "YoloClassifier",
    "build_model",
    "load_model",
]
