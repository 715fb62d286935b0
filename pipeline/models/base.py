"""The one classifier interface: every model, one training/evaluation/tracking path.

Training, evaluation, tracking and reporting only ever talk to `Classifier`; they never branch
on a model's name. A model is trained from an image-folder dataset
(`<data_dir>/{train,val,test}/{all,hem}/*.png`, readable by torchvision and Ultralytics alike)
and predicts P(ALL) for RGB uint8 arrays that went through the same preprocessing.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.io import MalformedFileError, read_json_object
from pipeline.labels import CLASSES
from pipeline.paths import MODEL_CARD
from pipeline.train.context import TrainContext

if TYPE_CHECKING:  # base stays importable without torch (HOG+SVM, tracking)
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamTarget:
    """What Grad-CAM needs from a CNN, so explanations never branch on the model's kind."""

    network: torch.nn.Module  # returns class logits (N, n_classes) for a tensor batch
    layers: list[torch.nn.Module]  # the feature map(s) the heatmap is computed on
    to_tensor: Callable[[Sequence[np.ndarray]], torch.Tensor]  # the model's own preprocessing
    positive_index: int  # the network's output index of POSITIVE


class Classifier(ABC):
    """Binary ALL-vs-hem classifier. Subclasses register themselves under `kind`."""

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Classifier]]] = {}
    # `_fit` honours train.subject_balance (weighs each training subject of a class the same);
    # a kind that leaves this False is refused the option instead of training unweighted.
    weighs_subjects: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "kind", None):
            Classifier.registry[cls.kind] = cls

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.image_size: int | None = None

    def input_side(self, ctx: TrainContext) -> int:
        """Side the network sees: `input_size` when set, else the crop's. Upsampling a small
        crop is not new detail, but a deep CNN's last feature map grows with it (a 64 px
        input leaves ResNet50 and YOLOv8 a 2x2 map)."""
        return int(self.config.get("input_size") or ctx.image_size)

    def fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        """Train on ctx.data_dir/train (select on ctx.data_dir/val); return per-epoch history.

        Refuses `train.subject_balance` unless the kind `weighs_subjects`, so a model added
        later cannot silently train without the weighting the config asked for."""
        if ctx.subject_balance and not self.weighs_subjects:
            able = sorted(kind for kind, cls in self.registry.items() if cls.weighs_subjects)
            raise ConfigError(
                f"train.subject_balance: not supported by model {self.config.get('name')!r} "
                f"(kind {self.kind}), which cannot weigh its training subjects; kinds that "
                f"can: {able}"
            )
        return self._fit(ctx)

    @abstractmethod
    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        """The model's own training, called by `fit` once the context is checked."""

    @abstractmethod
    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """P(ALL) for each RGB uint8 image, shape (N,)."""

    def score_split(self, data_dir: Path, split: str) -> dict[str, float]:
        """Accuracy (at the decision threshold) and log loss of this model's own P(ALL) on a
        split of the image folder: what selection reads, whatever the training history logged
        (resnet50_svm's history scores its CNN head, not the SVM that predicts)."""
        from pipeline.io import read_image
        from pipeline.labels import POSITIVE, call_scores
        from pipeline.train.data import image_folder

        folder = image_folder(data_dir, split, transform=None)
        if not folder.samples:
            return {}
        p_all = self.predict_proba([read_image(path) for path, _ in folder.samples])
        return call_scores(
            np.asarray(folder.targets) == folder.class_to_idx[POSITIVE], p_all, split
        )

    def cam_target(self) -> CamTarget | None:
        """Grad-CAM hook; None for models without a convolutional feature map (HOG+SVM)."""
        return None

    @abstractmethod
    def _save_weights(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_weights(self, directory: Path) -> None: ...

    def save(self, directory: Path) -> Path:
        """Write weights plus a model card carrying the config, so `load` needs nothing else."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_weights(directory)
        card = {"kind": self.kind, "config": self.config, "image_size": self.image_size}
        (directory / MODEL_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        return directory


def build_model(config: dict[str, Any]) -> Classifier:
    """Instantiate the classifier for a `conf/model/*.yaml` section (dispatch on `kind`).

    The registry is complete: importing this module runs `pipeline/models/__init__.py` first,
    which imports every implementation."""
    kind = config.get("kind")
    if kind not in Classifier.registry:
        raise ConfigError(
            f"unknown model kind {kind!r} (model {config.get('name')!r}); "
            f"known: {sorted(Classifier.registry)} (a new kind is known once its module is "
            "imported in pipeline/models/__init__.py)"
        )
    cls = Classifier.registry[kind]
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:  # else Python's "Can't instantiate abstract class" traceback from the stage
        raise PipelineError(
            f"model kind {kind!r} ({cls.__module__}.{cls.__qualname__}) does not implement "
            f"{', '.join(missing)}: see README, Add a model"
        )
    return cls(config)


def load_model(directory: Path | str) -> Classifier:
    """The model saved in `directory` by `Classifier.save`, rebuilt from its own card (kind,
    config, input side), so it predicts as it was trained whatever params.yaml says now.
    Unloadable weights are a `MalformedFileError` naming the folder and how to restore it."""
    directory = Path(directory)
    card_path = directory / MODEL_CARD
    if not card_path.exists():
        raise FileNotFoundError(f"{directory}: no {MODEL_CARD}; not a saved model folder")
    card = read_json_object(card_path, "a model card")
    if not isinstance(card.get("config"), dict):
        raise MalformedFileError(f"{card_path}: not a model card (no 'config' section)")
    model = build_model(card["config"])
    model.image_size = card.get("image_size")
    try:
        model._load_weights(directory)
    except PipelineError:
        raise
    except Exception as exc:  # torch, joblib and pickle each fail their own way on a bad file
        raise MalformedFileError(
            f"{directory}: its weights cannot be loaded ({type(exc).__name__}: {exc}); "
            "retrain it (`dvc repro`) or fetch it again (`dvc pull`)"
        ) from exc
    return model


def training_weights(
    targets: np.ndarray, groups: Sequence[str] | None, class_balance: bool
) -> np.ndarray | None:
    """Per-cell fit weights: with `groups`, every group (subject) of a class weighs the same,
    so one 404-cell subject does not outweigh an 18-cell one; with `class_balance`, every
    class weighs the same as well (N / (classes * groups in the class * cells of the group)),
    else each class keeps its share of the cells. None when neither applies."""
    targets = np.asarray(targets)
    if groups is None:
        if not class_balance:
            return None
        from sklearn.utils.class_weight import compute_sample_weight

        return compute_sample_weight("balanced", targets)
    frame = pd.DataFrame({"target": targets, "group": np.asarray(groups, dtype=str)})
    cells_of_group = frame.groupby(["target", "group"])["group"].transform("size")
    groups_of_class = frame.groupby("target")["group"].transform("nunique")
    if class_balance:
        weight_of_class = len(frame) / frame["target"].nunique()
    else:  # each class keeps its share of the cells
        weight_of_class = frame.groupby("target")["target"].transform("size")
    return (weight_of_class / (groups_of_class * cells_of_group)).to_numpy(dtype=np.float64)


PLATT_FOLDS = 5


def platt_scaled(svm: Any) -> Any:
    """An SVM whose P(ALL) is Platt-scaled on out-of-fold decision values, with one final SVM
    on all training data: what `SVC(probability=True)` did before scikit-learn deprecated it."""
    from sklearn.calibration import CalibratedClassifierCV

    return CalibratedClassifierCV(svm, method="sigmoid", cv=PLATT_FOLDS, ensemble=False)


def fit_pipeline(
    pipeline: Any,
    features: np.ndarray,
    targets: np.ndarray,
    balance: bool,
    groups: Sequence[str] | None,
    where: str,
) -> None:
    """Fit a scikit-learn pipeline whose last step takes `sample_weight`: the
    `training_weights` reach the estimator *and* an SVM's Platt scaling (class_weight on the
    SVM alone would be undone by a calibration fitted to the majority's prior). Platt scaling
    takes fewer folds when a class has fewer training images than `PLATT_FOLDS` (a tiny
    dataset), and a class with one image is named (`where`: the model) instead of
    scikit-learn's traceback."""
    from sklearn.calibration import CalibratedClassifierCV

    last_name, last = pipeline.steps[-1]
    if isinstance(last, CalibratedClassifierCV):
        counts = np.bincount(np.asarray(targets, dtype=int), minlength=len(CLASSES))
        fewest = int(counts.min())
        if fewest < 2:
            raise PipelineError(
                f"{where}: the training split has {fewest} '{CLASSES[int(counts.argmin())]}' "
                "image(s); its Platt-scaled SVM needs at least 2 per class"
            )
        last.cv = min(PLATT_FOLDS, fewest)
    weights = training_weights(targets, groups, balance)
    fit_args = {} if weights is None else {f"{last_name}__sample_weight": weights}
    pipeline.fit(features, targets, **fit_args)
    if isinstance(last, CalibratedClassifierCV) and _platt_slope(last) >= 0:
        log.warning(
            "%s: Platt scaling found the SVM's out-of-fold decisions unrelated or opposite to "
            "the labels (%d training images): its P(ALL) stays near 0.5 and may contradict "
            "the SVM's own calls; it needs more images or other features",
            where,
            len(targets),
        )


def _platt_slope(calibrated: Any) -> float:
    """The fitted sigmoid's `a` in P = 1 / (1 + exp(a * decision + b)): negative when a higher
    decision value means a likelier positive, as it should."""
    return float(calibrated.calibrated_classifiers_[0].calibrators[0].a_)
