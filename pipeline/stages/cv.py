"""Stage cv@<model>: repeated grouped stratified k-fold CV on all images (off when cv.folds=0).

MLflow: one parent run per model with the summary, one nested child run per fold. Off, the
stage only writes `{"enabled": false}` (and an empty predictions table), without importing
MLflow or any model library, so the default `dvc repro` stays fast.
"""

import sys

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
    model_config(cfg, model_name)  # a clear error for an unknown model name
    if cfg.cv.folds == 0:
        _write(dataset, model_name, {"enabled": False}, pd.DataFrame(columns=PREDICTION_COLUMNS))
        log.info("cv.folds=0: cross-validation off (dvc exp run -S cv.folds=5 turns it on)")
        return
    from pipeline import tracking
    from pipeline.evaluate import crossval

    frame = manifest.read(paths.cropped(dataset) / "manifest.csv")
    tracking.check_reachable(cfg)
    summary, predictions = crossval.cross_validate(frame, cfg, model_name, f"cv {model_name}")
    _write(dataset, model_name, summary, predictions[PREDICTION_COLUMNS])
    log.info(
        "%s/%s %d-fold x %d CV: accuracy %.3f ± %.3f (pooled %.3f [%.3f, %.3f]); "
        "validation parts %.3f",
        dataset,
        model_name,
        cfg.cv.folds,
        cfg.cv.repeats,
        summary["accuracy_mean"],
        summary["accuracy_std"] or 0.0,
        summary["accuracy"],
        summary["accuracy_ci_low"],
        summary["accuracy_ci_high"],
        summary["val_accuracy_mean"],
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
