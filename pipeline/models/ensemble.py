"""Soft-voting ensemble of other classifiers (beyond the paper)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import accuracy_score, log_loss

from pipeline.config import ConfigError
from pipeline.io import read_image
from pipeline.models import params
from pipeline.models.base import (
    POSITIVE,
    Classifier,
    EpochCallback,
    TrainContext,
    build_model,
    load_model,
)
from pipeline.train.data import image_folder


class EnsembleClassifier(Classifier):
    """P(ALL) = the weighted mean of its members' P(ALL).

    Members are whole model sections (`conf/model/ensemble.yaml` interpolates
    `${models.<name>}`), so each trains exactly as its own train stage would: same context, seed
    and data give the same weights. Their settings are part of the ensemble's config, hence of
    its model card and of the DVC params its stages depend on. Fitting scores the mean on the
    validation split; that is the ensemble's one history row, what selection looks at. Members'
    epochs reach `ctx.on_epoch` as `<member>/<metric>`. No Grad-CAM: a mean of different
    networks has no single feature map (explain a member instead).
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, ("members",))
        where = params.section_key(self.config)
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

    def fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        self.image_size = ctx.image_size
        for member in self.members:
            name = member.config["name"]
            member.fit(
                dataclasses.replace(
                    ctx, work_dir=ctx.work_dir / name, on_epoch=_prefixed(ctx.on_epoch, name)
                )
            )
        val = image_folder(ctx.data_dir, "val", transform=None)
        p_all = self.predict_proba([read_image(path) for path, _ in val.samples])
        is_all = np.asarray(val.targets) == val.class_to_idx[POSITIVE]
        row = {"epoch": 1}
        if len(is_all):
            row["val_accuracy"] = float(accuracy_score(is_all, p_all >= 0.5))
            row["val_loss"] = float(log_loss(is_all, p_all, labels=[False, True]))
        if ctx.on_epoch is not None:
            ctx.on_epoch(1, row)
        return [row]

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        votes = np.stack([member.predict_proba(images) for member in self.members])
        return self.weights @ votes

    def _save_weights(self, directory: Path) -> None:
        for member in self.members:
            member.save(directory / member.config["name"])

    def _load_weights(self, directory: Path) -> None:
        self.members = [load_model(directory / member.config["name"]) for member in self.members]


def _prefixed(on_epoch: EpochCallback | None, name: str) -> EpochCallback | None:
    if on_epoch is None:
        return None
    return lambda epoch, row: on_epoch(epoch, {f"{name}/{key}": v for key, v in row.items()})
