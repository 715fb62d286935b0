"""Test-split evaluation of a saved model: metrics with intervals, DVC plot data, MLflow.

The evaluate stage and the ensemble stage both end here, so every model's figures are
computed, written and logged the same way.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline import manifest, paths, tracking
from pipeline.errors import PipelineError
from pipeline.evaluate.explain import write_overlays
from pipeline.evaluate.metrics import collapse_warning, compute_metrics, metrics_args
from pipeline.evaluate.plots import write_plot_data
from pipeline.io import (
    atomic_path,
    atomic_write_json,
    file_digest,
    folder_digest,
    read_image,
    read_json,
)
from pipeline.labels import y_true
from pipeline.models.base import Classifier, load_model
from pipeline.preprocess.augment import require_split_of
from pipeline.preprocess.card import read_card

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["id", "path", "label", "group", "split", "augmented_from"]


def predict_split(model: Classifier, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba([read_image(p) for p in frame["path"]])


def log_gradcam(model: Classifier, frame: pd.DataFrame, n: int, seed: int) -> None:
    """Grad-CAM overlays of a seeded sample of `frame` as artifacts `gradcam/<label>_<id>.png`
    of the active run; nothing is kept on disk."""
    if n == 0 or model.cam_target() is None:
        log.info("no Grad-CAM overlays for %s (%s)", model.config.get("name"), model.kind)
        return
    sample = frame.sample(n=min(n, len(frame)), random_state=seed)
    images = [read_image(p) for p in sample["path"]]
    names = [f"{row.label}_{row.id}" for row in sample.itertuples()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gradcam"
        write_overlays(model, images, names, folder)
        tracking.log_artifacts([folder])


def require_trained_on(model_dir: Path, manifest_path: Path, data_digest: str) -> None:
    """Refuse to score a model on a dataset re-split or re-augmented since it trained (today's
    `manifest_path` has `data_digest`): its test split may hold the model's own training
    images. (`dvc repro` retrains it first; a stage run by hand does not.)"""
    trained_on = read_card(model_dir, needs=()).get("data_digest")
    if trained_on is not None and trained_on != data_digest:
        raise PipelineError(
            f"{model_dir} was trained on another version of {manifest_path} (digest "
            f"{trained_on[:12]}, now {data_digest[:12]}): its test split may hold "
            "the model's training images; retrain it (`dvc repro` does)"
        )


def evaluate_model(cfg: DictConfig, model_name: str) -> dict[str, Any]:
    """Score `models/<dataset>/<model_name>` on the test split; write its metrics and plot data
    and log them to the MLflow run that trained the model (the newest run tagged with the model
    folder's digest; a new run when the store has none). The metrics file names the model and
    data digests it was measured on, so a byte-identical retraining can reuse it
    (`tracking.log_committed_test_metrics`). Returns the metrics."""
    dataset = cfg.dataset.name
    started = time.perf_counter()
    model_dir = paths.model_dir(dataset, model_name)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"{model_dir}: no trained model; run `dvc repro train@{model_name}`"
        )
    manifest_path = paths.prepared(dataset) / "manifest.csv"
    data_digest = file_digest(manifest_path)
    require_trained_on(model_dir, manifest_path, data_digest)
    model = load_model(model_dir)
    table = manifest.read(manifest_path)
    require_split_of(table, manifest.read(paths.split_table(dataset)), str(manifest_path.parent))
    # Before scoring, once the model and split are known good, as train does: MLflow's own
    # client retries an unreachable store for minutes, then a traceback after the metrics.
    tracking.check_reachable(cfg)
    test = table[table["split"] == "test"].reset_index(drop=True)
    labels = y_true(test["label"])
    p_all = predict_split(model, test)
    metrics = compute_metrics(
        labels,
        p_all,
        groups=test["group"].to_numpy(),
        **metrics_args(cfg),
    )
    history = read_json(model_dir / "history.json")
    plot_dir = paths.plots(dataset, model_name)
    with atomic_path(plot_dir) as staged:
        written = write_plot_data(staged, labels, p_all, history)
        # no `source`: absolute paths would make this committed file differ between clones
        test[PREDICTION_COLUMNS].assign(p_all=p_all).to_csv(staged / "predictions.csv", index=False)
    digest = folder_digest(model_dir)
    metrics.update(model_digest=digest, data_digest=data_digest)
    atomic_write_json(paths.metrics(dataset, model_name), metrics)
    if metrics["collapsed"]:
        log.warning(collapse_warning(model_name, metrics))
    run_id = tracking.find_run(cfg, dataset, {tracking.MODEL_DIGEST_TAG: digest})
    if run_id is None:
        log.warning(
            "no MLflow run trained %s (model digest %s) in %s: its test metrics go to a new run",
            model_dir,
            digest[:12],
            tracking.tracking_uri(cfg),
        )
    with tracking.start_run(
        cfg, dataset=dataset, model=model_name, stage=f"evaluate@{model_name}", run_id=run_id
    ):
        if run_id is None:
            tracking.set_tags({tracking.MODEL_DIGEST_TAG: digest})
        tracking.log_test_metrics(metrics)
        if metrics["collapsed"]:
            tracking.set_tags({"warning": collapse_warning(model_name, metrics)})
        tracking.log_artifacts(
            [plot_dir / p.name for p in written] + [plot_dir / "predictions.csv"]
        )
        log_gradcam(model, test, cfg.evaluate.explain_samples, cfg.seed)
        tracking.log_durations({"evaluate": time.perf_counter() - started})
    log.info(
        "%s/%s test accuracy %.3f [%.3f, %.3f], weighted F1 %.3f on %d images",
        dataset,
        model_name,
        metrics["accuracy"],
        metrics["accuracy_ci_low"],
        metrics["accuracy_ci_high"],
        metrics["f1_weighted"],
        len(test),
    )
    return metrics
