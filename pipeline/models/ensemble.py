"""Soft-voting ensemble of other classifiers (beyond the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.models import params
from pipeline.models.base import Classifier, build_model, load_model
from pipeline.train.context import TrainContext


class EnsembleClassifier(Classifier):
    """P(ALL) = the weighted mean of its members' P(ALL).

    Members are whole model sections, kept in the model card, and each member is saved as a
    model folder of its own inside the ensemble's, so the folder predicts on its own. It is
    never trained: it is assembled from the members' already trained models (`assemble`,
    stage `ensemble`). No Grad-CAM: a mean of different networks has no single feature map
    (explain a member).
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("members",))
        where = "ensemble"  # its own config section (conf/ensemble/)
        members = self.config["members"]
        if not isinstance(members, list) or len(members) < 2:
            raise ConfigError(f"{where}.members: need a list of at least two model sections")
        names = [m.get("name") if isinstance(m, dict) else None for m in members]
        if None in names or len(set(names)) != len(names):
            raise ConfigError(f"{where}.members: each must be a model section with its own name")
        weights = self.config.get("weights")
        if weights is not None and (
            not isinstance(weights, list)
            or len(weights) != len(members)
            or not all(isinstance(w, int | float) and w > 0 for w in weights)
        ):
            raise ConfigError(f"{where}.weights: null or one positive number per member")
        self.weights = np.asarray(weights or [1.0] * len(members), float)
        self.weights /= self.weights.sum()
        self.members = [build_model(member) for member in members]

    @classmethod
    def assemble(
        cls, members: Sequence[Classifier], weights: Sequence[float] | None, image_size: int
    ) -> EnsembleClassifier:
        """An ensemble of already trained members (their saved configs and weights, no
        retraining): what the `ensemble` stage builds from `models/<dataset>/<member>`."""
        config = {
            "name": "ensemble",
            "kind": cls.kind,
            "members": [dict(member.config) for member in members],
            "weights": None if weights is None else list(weights),
        }
        ensemble = cls(config)
        ensemble.members = list(members)
        ensemble.image_size = image_size
        return ensemble

    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        raise PipelineError(
            "an ensemble is assembled from its members' trained models (stage `ensemble`), "
            "not trained: train the members (dvc repro train@<member>)"
        )

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        votes = np.stack([member.predict_proba(images) for member in self.members])
        return self.weights @ votes

    def _save_weights(self, directory: Path) -> None:
        for member in self.members:
            member.save(directory / member.config["name"])

    def _load_weights(self, directory: Path) -> None:
        self.members = [load_model(directory / member.config["name"]) for member in self.members]
