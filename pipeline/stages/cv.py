"""Stage cv@<model>: repeated grouped stratified k-fold CV on all images (off when cv.folds=0).

MLflow: one parent run per model with the summary, one nested child run per fold. Off, the
stage only writes `{"enabled": false}` (and an empty predictions table), without importing
MLflow or any model library, so the default `dvc repro` stays fast.
"""

import sys
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import manifest, paths
from pipeline.io import atomic_path, atomic_write_json
from pipeline.stages.common import log, model_config, stage

PREDICTION_COLUMNS = ["id", "label", "group", "repeat", "fold", "p_all"]


def _write(dataset: str, model_name: str, summary: dict, predictions: pd.DataFrame) -> None:
    with atomic_path(paths.cv_predictions(dataset, model_name)) as staged:
        predictions.to_csv(staged, index=False)
    atomic_write_json(paths.cv_metrics(dataset, model_name), summary)


@stage
def run(cfg, model_name: str) -> None:
    dataset = cfg.dataset.name
    config = model_config(cfg, model_name)
    if cfg.cv.folds == 0:
        _write(dataset, model_name, {"enabled": False}, pd.DataFrame(columns=PREDICTION_COLUMNS))
        log.info("cv.folds=0: cross-validation off (dvc exp run -S cv.folds=5 turns it on)")
        return
    from pipeline import tracking
    from pipeline.evaluate import crossval
    from pipeline.evaluate.metrics import compute_metrics

    frame = manifest.read(paths.cropped(dataset) / "manifest.csv")
    val_fraction = cfg.split.val / (cfg.split.train + cfg.split.val)
    folds = crossval.make_folds(frame, cfg.cv.folds, cfg.cv.repeats, cfg.seed, val_fraction)
    tracking.check_reachable(cfg)
    bootstrap = {
        "n_boot": cfg.evaluate.bootstrap_samples,
        "confidence": cfg.evaluate.confidence,
        "seed": cfg.seed,
    }
    parts, per_fold = [], []
    stage_name = f"cv@{model_name}"
    with tracking.start_run(
        cfg, dataset=dataset, model=model_name, stage=stage_name, run_name=f"cv {model_name}"
    ) as parent:
        for fold in folds:
            with (
                tracking.start_run(
                    cfg,
                    dataset=dataset,
                    model=model_name,
                    stage=stage_name,
                    nested=True,
                    parent_run_id=parent.info.run_id,
                    run_name=f"cv {model_name} {fold.name}",
                ),
                tempfile.TemporaryDirectory(prefix=f"cv-{model_name}-") as work,
            ):
                p_all = crossval.fit_predict_fold(
                    frame,
                    fold,
                    config,
                    cfg,
                    Path(work),
                    on_epoch=lambda epoch, metrics: tracking.log_epoch(metrics, step=epoch),
                )
                part = crossval.fold_predictions(frame, fold, p_all)
                metrics = compute_metrics(crossval.y_true(part["label"]), p_all, **bootstrap)
                tracking.log_test_metrics(metrics)
            parts.append(part)
            per_fold.append(metrics)
            log.info("%s %s done", stage_name, fold.name)
        predictions = pd.concat(parts, ignore_index=True)
        summary = crossval.summarise_cv(
            predictions, per_fold, cfg.cv.folds, cfg.cv.repeats, **bootstrap
        )
        tracking.log_test_metrics({k: v for k, v in summary.items() if not isinstance(v, bool)})
        _write(dataset, model_name, summary, predictions[PREDICTION_COLUMNS])
        tracking.log_artifacts([paths.cv_predictions(dataset, model_name)], artifact_path="cv")
    log.info(
        "%s/%s %d-fold x %d CV: accuracy %.3f ± %.3f (pooled %.3f [%.3f, %.3f])",
        dataset,
        model_name,
        cfg.cv.folds,
        cfg.cv.repeats,
        summary["accuracy_mean"],
        summary["accuracy_std"] or 0.0,
        summary["accuracy"],
        summary["accuracy_ci_low"],
        summary["accuracy_ci_high"],
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
