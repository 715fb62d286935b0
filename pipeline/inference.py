"""Inference with a trained model: the model plus the preprocessing it was trained with.

A model folder carries `preprocess.json` (how the data stages segmented and cropped its
training images), so prediction prepares a raw image exactly as they were prepared. The
predict CLI, cross-dataset evaluation and the MLflow model all go through `Predictor`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.errors import PipelineError
from pipeline.io import ImageReadError, read_cell_image
from pipeline.labels import label_of
from pipeline.models.base import Classifier, load_model
from pipeline.paths import PREPROCESS_CARD
from pipeline.preprocess.card import read_card
from pipeline.preprocess.crop import crop_and_resize
from pipeline.preprocess.segment import apply_mask_and_crop, segment_cell


def training_card(data_dir: Path, dataset: str, data_digest: str) -> dict:
    """The card a model trained on `data_dir` carries: how its images were prepared (the card
    the data stages wrote beside them, not today's params) and the digest of the manifest it
    trained on (evaluate refuses another split). Read before training, so a dataset without
    one fails first."""
    return {**read_card(data_dir), "dataset": dataset, "data_digest": data_digest}


class NoCellFoundError(PipelineError):
    """Segmentation found no cell in an image given to `predict`."""


class Predictor:
    """A model plus the preprocessing it was trained with."""

    def __init__(self, model: Classifier, card: dict) -> None:
        self.model = model
        self.segment = card["segment"]
        self.segment_cfg = OmegaConf.create(card["segment_config"])
        self.crop_cfg = OmegaConf.create(card["crop_config"])

    @classmethod
    def load(cls, source: str | Path) -> Predictor:
        """From a model folder, or from the registry (`models:/<name>/<version|alias>`) through
        a temporary copy that is deleted once the model is in memory."""
        if str(source).startswith("models:/"):
            with tempfile.TemporaryDirectory(prefix="all-detect-model-") as download:
                directory = registry_model_dir(str(source), Path(download))
                return cls(load_model(directory), read_card(directory))
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(f"{source}: model folder not found")
        return cls(load_model(directory), read_card(directory))

    def prepare(self, image: np.ndarray, require_cell: bool = False) -> np.ndarray:
        """The image as the model's training images were prepared. The segment stage keeps an
        image whole when it finds no cell (so does this, for dataset-wide scoring); with
        `require_cell` that is a `NoCellFoundError` instead."""
        if self.segment:
            segmentation = segment_cell(image, self.segment_cfg)
            if require_cell and not segmentation.found:
                raise NoCellFoundError(
                    "segmentation found no cell (is it an image of one white cell?)"
                )
            image, _ = apply_mask_and_crop(image, segmentation)
        return crop_and_resize(image, self.crop_cfg)

    def predict_files(self, files: Sequence[Path]) -> pd.DataFrame:
        """One row per file; a file that cannot be read, or in which a segmenting model finds
        no cell, gets an `error` instead of a confident-looking P(ALL)."""
        rows, prepared = [], []
        for path in files:
            try:
                prepared.append(self.prepare(read_cell_image(path), require_cell=True))
                rows.append({"path": str(path), "error": ""})
            except (ImageReadError, NoCellFoundError) as exc:
                prefix = "" if isinstance(exc, ImageReadError) else f"{path}: "
                rows.append({"path": str(path), "error": f"{prefix}{exc}"})
        p_all = self.model.predict_proba(prepared) if prepared else np.array([])
        good = iter(p_all)
        for row in rows:
            p = float(next(good)) if not row["error"] else float("nan")
            row["p_all"] = p
            row["prediction"] = "" if row["error"] else label_of(p)
            row["probability"] = max(p, 1 - p) if not row["error"] else float("nan")
        return pd.DataFrame(rows, columns=["path", "prediction", "probability", "p_all", "error"])


def registry_model_dir(uri: str, download: Path) -> Path:
    """The model folder of a registry URI, fetched into `download` from MLflow: the store of
    the workspace's params, or of `MLFLOW_TRACKING_URI` (conf/'s defaults outside a
    workspace)."""
    from pipeline.config import PARAMS_FILE, compose, load, workspace_root
    from pipeline.tracking import download_model

    in_workspace = (workspace_root() / PARAMS_FILE).exists()
    local = download_model(load() if in_workspace else compose(), uri, download)
    cards = list(local.rglob(PREPROCESS_CARD))
    if not cards:
        raise FileNotFoundError(f"{uri}: registered model has no {PREPROCESS_CARD}")
    return cards[0].parent
