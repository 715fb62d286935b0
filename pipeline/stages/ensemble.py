"""Stages ensemble and ensemble_cv: soft voting over members trained by their own stages, with
no retraining (`python -m pipeline.stages.ensemble split|cv`).

- Single split (`ensemble`): `models/<dataset>/ensemble` assembled from the members'
  `models/<dataset>/<member>` (every member, or with `ensemble.top_k` the k best on the
  validation split), evaluated on the test split like any model (`pipeline.evaluate.holdout`),
  logged to MLflow as run `ensemble`.
- CV (`ensemble_cv`; with `cv.folds` = 0 it writes {"enabled": false}): the members' own
  out-of-fold P(ALL) averaged fold by fold (`crossval.ensemble_cv`); with `top_k`, each fold
  takes its best members on its own validation part. Seconds, where retraining the members
  cost as much as their own CVs.

The `ensemble_member@<member>` (models) and `ensemble_cv_member@<member>` (CV outputs) stages
record each member's digest; they are checked here, so a member retrained since then is caught
instead of silently mixed with stale records. The two parts are separate stages so that a new
CV does not re-evaluate the single-split ensemble, nor a retrained model re-run the CV one.
"""

import json
import sys
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
from pipeline.stages.common import log, stage
from pipeline.stages.ensemble_member import recorded_folder
from pipeline.train.device import pin_threads

NAME = "ensemble"


def check_records(dataset: str, members: list[str], part: str) -> None:
    """Each member's recorded digest matches its current outputs (else re-run the stages)."""
    stale = []
    for member in members:
        record_path = paths.ensemble_record(dataset, part, member)
        if not record_path.exists():
            stale.append(f"{member}: no record {record_path}")
            continue
        record = read_json(record_path)
        if record["digest"] != folder_digest(recorded_folder(dataset, member, part)):
            stale.append(f"{member}: its outputs changed since {record_path} was written")
    if stale:
        stage_name = "ensemble" if part == "split" else "ensemble_cv"
        raise FileNotFoundError(
            f"ensemble members out of date (run `dvc repro {stage_name}`):\n  " + "\n  ".join(stale)
        )


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


@stage
def run(cfg: DictConfig, part: str = "split") -> None:
    dataset = cfg.dataset.name
    members = list(cfg.ensemble.members)
    recorded_folder(dataset, members[0], part)  # an unknown part fails here, naming it
    pin_threads(cfg.train.threads)
    check_records(dataset, members, part)
    tracking.check_reachable(cfg)
    if part == "split":
        single_split(cfg, members)
    elif cfg.cv.folds == 0:
        crossval.write_cv_outputs(dataset, NAME, {"enabled": False})
    else:
        cross_validated(cfg, members)


main = run
if __name__ == "__main__":
    sys.exit(main())
