"""ResNet50 features + SVM (paper III.C.3, the hybrid model)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import torch
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from pipeline.models import params
from pipeline.models.base import TrainContext, fit_pipeline, platt_scaled
from pipeline.models.torchvision_cnn import TorchvisionClassifier, head_attr
from pipeline.train.data import eval_transform, image_folder, make_loader

SVM_FILE = "svm.joblib"


class CnnSvmClassifier(TorchvisionClassifier):
    """Fine-tune the CNN exactly as the `torchvision` kind does, then replace its head by an SVM.

    The paper only says the classification layer was removed and the features fed to an SVM.
    We read that as: (1) train the CNN with its new head (same loop, hyperparameters, best
    checkpoint selection as ResNet50), (2) take the pooled penultimate features (the head's
    input, 2048-d for ResNet50) of the *train* split with the eval transform (no flips),
    (3) fit StandardScaler -> SVC(`svm_kernel`, `C`) on them, with Platt scaling fitted on
    5-fold out-of-fold decision values (`CalibratedClassifierCV(..., ensemble=False)`, what
    `SVC(probability=True)` did before scikit-learn deprecated it) for P(ALL). The val split
    selects the CNN epoch; predictions come from the SVM alone, and so do the validation
    scores that rank it against other candidates (`Classifier.score_split`). Grad-CAM (inherited
    `cam_target`) explains the fine-tuned CNN's own head, not the SVM's decision.
    """

    kind: ClassVar[str] = "cnn_svm"
    OPTIONAL = (*TorchvisionClassifier.OPTIONAL, "svm_kernel", "C")

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("svm_kernel", "C"))
        params.number(self.config, "C", 0, above_minimum=True)
        params.choice(self.config, "svm_kernel", ("linear", "rbf"))
        self.svm: Pipeline | None = None

    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        history = super()._fit(ctx)
        train_set = image_folder(ctx.data_dir, "train", eval_transform(self.image_size))
        loader = make_loader(
            train_set, int(self.config["batch_size"]), shuffle=False, seed=ctx.seed,
            num_workers=ctx.num_workers,
        )  # fmt: skip
        features = self._features(images for images, _ in loader)
        svm = SVC(kernel=self.config["svm_kernel"], C=float(self.config["C"]))
        self.svm = make_pipeline(StandardScaler(), platt_scaled(svm))
        targets = np.asarray(train_set.targets)
        # the loader keeps ImageFolder's order: one group per sample
        groups = ctx.subject_groups([path for path, _ in train_set.samples])
        where = self.config.get("name", self.kind)
        fit_pipeline(self.svm, features, targets, ctx.class_balance, groups, where)
        return history

    def _features(self, batches: Iterable[torch.Tensor]) -> np.ndarray:
        """The head's input: what the CNN's classifier saw, captured by a forward pre-hook."""
        network = self._require_network()
        captured: list[torch.Tensor] = []
        head = getattr(network, head_attr(network))
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self._infer(batches, network)
        finally:
            handle.remove()
        return torch.cat([f.float().cpu() for f in captured]).numpy()

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if self.svm is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained or loaded")
        features = self._features(self._image_batches(images))
        column = list(self.svm.classes_).index(0)  # class index 0 = 'all'
        return self.svm.predict_proba(features)[:, column].astype(np.float64)

    def _save_weights(self, directory: Path) -> None:
        super()._save_weights(directory)
        joblib.dump(self.svm, directory / SVM_FILE)

    def _load_weights(self, directory: Path) -> None:
        super()._load_weights(directory)
        self.svm = joblib.load(directory / SVM_FILE)
