"""Stage cv@<model>: repeated grouped stratified k-fold CV on all images (off when cv.folds=0).

With `cv.nested: true` the model's `tune.grids.<model>` candidates are chosen inside each fold
on its validation part, and the test fold scores the chosen one only (`"selection": "nested"`).
Outputs, in `reports/cv/<dataset>/<model>/`: `predictions.csv` (validation and test rows of
every fold), `subjects.csv` (per subject of the test folds: accuracy, share called ALL, the
subject-level call) and `selection.json` (the candidates and each fold's choice), plus the
summary `reports/metrics/<dataset>/cv/<model>.json`. MLflow: one parent run per model, one
child run per fold (and candidate). Off, the stage only writes `{"enabled": false}`, without
importing MLflow or any model library, so the default `dvc repro` stays fast.

`python -m pipeline.stages.cv <model> 0 3 [key=value ...]` trains only outer folds 0 and 3
into the fold store and writes nothing else (a shard: folds on several machines, sharing
`ALL_DETECT_CV_STORE`); the `cv` stage then resumes every stored fold and only selects and
scores (docs/scaling.md).
"""

import sys

from omegaconf import DictConfig, OmegaConf

from pipeline import manifest, paths
from pipeline.config import ConfigError
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg: DictConfig, model_name: str, *fold_numbers: str) -> None:
    dataset = cfg.dataset.name
    model_config(cfg, model_name)  # a clear error for an unknown model name
    shard = parse_fold_numbers(fold_numbers)
    if cfg.cv.folds == 0:
        if shard:
            raise ConfigError("cv fold numbers given but cv.folds=0: set cv.folds (e.g. 5)")
        from pipeline.evaluate.crossval import write_cv_outputs  # light: no model library

        write_cv_outputs(dataset, model_name, {"enabled": False})
        log.info("cv.folds=0: cross-validation off (dvc exp run -S cv.folds=5 turns it on)")
        return
    from pipeline import tracking
    from pipeline.evaluate import crossval, tuning
    from pipeline.train.device import pin_threads

    pin_threads(cfg.train.threads)
    grid = OmegaConf.to_container(cfg.tune.grids, resolve=True).get(model_name)
    candidates = tuning.expand_grid(grid, model_name) if cfg.cv.nested and grid else [{}]
    if cfg.cv.nested and not grid:
        log.info("cv.nested: no tune.grids.%s, so nothing to choose: fixed settings", model_name)
    from pipeline.preprocess.card import read_card, warn_on_resize

    cropped = paths.cropped(dataset)
    warn_on_resize(read_card(cropped), cfg.crop.size, cropped)
    frame = manifest.read(cropped / "manifest.csv")
    tracking.check_reachable(cfg)
    tracking.close_stale_runs(cfg, dataset, model_name)  # a killed attempt's parent and fold
    if shard:
        store = crossval.train_fold_shard(frame, cfg, model_name, shard, candidates)
        log.info(
            "%s/%s: folds %s of the %d-fold CV stored in %s; once every fold is stored, "
            "`dvc exp run cv@%s` (same ALL_DETECT_CV_STORE) selects and scores",
            dataset,
            model_name,
            ", ".join(map(str, shard)),
            cfg.cv.folds,
            store,
            model_name,
        )
        return
    summary, predictions = crossval.cross_validate(
        frame, cfg, model_name, f"cv {model_name}", candidates=candidates
    )
    selection = crossval.selection_record(summary, candidates, predictions)
    crossval.write_cv_outputs(
        dataset, model_name, summary, predictions, crossval.subject_table(predictions), selection
    )
    log.info(
        "%s/%s %d-fold x %d CV (%s selection): accuracy %.3f ± %.3f (pooled %.3f [%.3f, %.3f]), "
        "weighted F1 %.3f; validation parts %.3f",
        dataset,
        model_name,
        cfg.cv.folds,
        cfg.cv.repeats,
        summary["selection"],
        summary["accuracy_mean"],
        summary["accuracy_std"] or 0.0,
        summary["accuracy"],
        summary["accuracy_ci_low"],
        summary["accuracy_ci_high"],
        summary["f1_weighted"],
        summary["val_accuracy_mean"],
    )


def parse_fold_numbers(words: tuple[str, ...]) -> list[int]:
    """The outer fold numbers of a shard run, or a clear error naming the word."""
    numbers = []
    for word in words:
        if not word.isdigit():
            raise ConfigError(f"cv: {word!r} is not a fold number (0, 1, ...) or key=value")
        numbers.append(int(word))
    return numbers


main = run
if __name__ == "__main__":
    sys.exit(main())
