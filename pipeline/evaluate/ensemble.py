"""The soft-voting ensemble over members trained by their own stages, with no retraining: at
the single split it assembles their saved models (the `top_k` best on validation, if set) and is
scored like any model; in CV it averages their out-of-fold P(ALL) fold by fold."""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
from omegaconf import DictConfig

from pipeline import paths, tracking
from pipeline.evaluate import crossval
from pipeline.evaluate.holdout import evaluate_model, require_trained_on
from pipeline.inference import training_card
from pipeline.io import atomic_path, file_digest, folder_digest, read_json
from pipeline.models import EnsembleClassifier, load_model
from pipeline.preprocess.card import write_card

log = logging.getLogger(__name__)
NAME = "ensemble"


def member_selection(dataset: str, member: str) -> dict:
    """The member's validation scores from its own predictions (the train stage's)."""
    path = paths.model_dir(dataset, member) / paths.SELECTION
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no validation scores of {member}'s own predictions (trained by an older "
            f"version): run `dvc repro train@{member}`"
        )
    return read_json(path)


def single_split(cfg: DictConfig, members: list[str]) -> None:
    """Assemble `models/<dataset>/ensemble` from the trained members (the `top_k` best on
    validation, if set), log it as the MLflow run `ensemble` and score it on the test split."""
    dataset = cfg.dataset.name
    data_dir = paths.prepared(dataset)
    data_hash = file_digest(data_dir / "manifest.csv")
    card = training_card(data_dir, dataset, data_hash)
    for name in members:  # the ensemble is scored on today's split: so were its members
        require_trained_on(paths.model_dir(dataset, name), data_dir / "manifest.csv", data_hash)
    models = {name: load_model(paths.model_dir(dataset, name)) for name in members}
    kept_rows = {name: member_selection(dataset, name) for name in members}
    top_k = cfg.ensemble.top_k
    chosen = members
    if top_k is not None:
        order = crossval.rank_by_validation([kept_rows[name] for name in members])
        chosen = [members[i] for i in sorted(order[:top_k])]
    weights = None if cfg.ensemble.weights is None else list(cfg.ensemble.weights)
    ensemble = EnsembleClassifier.assemble(
        [models[name] for name in chosen], weights, image_size=int(cfg.crop.size)
    )
    started = time.perf_counter()
    history = [{"epoch": 1, **ensemble.score_split(data_dir, "val")}]
    final = paths.model_dir(dataset, NAME)
    with tracking.start_run(cfg, dataset=dataset, model=NAME, stage=NAME, dataset_hash=data_hash):
        with atomic_path(final) as staged:
            ensemble.save(staged)
            write_card(staged, card)
            (staged / "history.json").write_text(json.dumps(history, indent=1))
            (staged / paths.SELECTION).write_text(json.dumps(history[0], indent=1))
            digest = folder_digest(staged)
        tracking.set_tags(
            {
                tracking.MODEL_DIGEST_TAG: digest,
                "members": ",".join(chosen),
                "pool": ",".join(members),
            }
        )
        tracking.log_epoch(history[0], step=1)
        tracking.log_selected_epoch(history[0])
        tracking.log_durations({"assemble": time.perf_counter() - started})
        tracking.log_model(ensemble, final)
    log.info("ensemble of %s: validation %s", chosen, history[0])
    evaluate_model(cfg, NAME)


def cross_validated(cfg: DictConfig, members: list[str]) -> None:
    """Average the members' committed out-of-fold P(ALL) fold by fold (`top_k`: each fold's
    best on its validation part) and write the CV outputs under the name `ensemble`."""
    dataset = cfg.dataset.name
    predictions = {
        name: pd.read_csv(paths.cv_predictions(dataset, name), dtype={"id": str, "group": str})
        for name in members
    }
    empty = [name for name, table in predictions.items() if table.empty]
    if empty:
        raise FileNotFoundError(f"ensemble: no CV predictions for {empty}: run their cv stages")
    weights = None if cfg.ensemble.weights is None else list(cfg.ensemble.weights)
    summary, combined, record = crossval.ensemble_cv(predictions, weights, cfg.ensemble.top_k, cfg)
    with tracking.start_run(
        cfg, dataset=dataset, model=NAME, stage="ensemble_cv", run_name=f"cv {NAME}"
    ):
        tracking.set_tags({"selection": summary["selection"], "pool": ",".join(members)})
        tracking.log_cv_summary(summary)
    crossval.write_cv_outputs(
        dataset, NAME, summary, combined, crossval.subject_table(combined), record
    )
    log.info(
        "%s/ensemble CV (%s): accuracy %.3f (pooled %.3f [%.3f, %.3f]), weighted F1 %.3f",
        dataset,
        summary["selection"],
        summary["accuracy_mean"],
        summary["accuracy"],
        summary["accuracy_ci_low"],
        summary["accuracy_ci_high"],
        summary["f1_weighted"],
    )
