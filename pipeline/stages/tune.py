"""`python -m pipeline.stages.tune <model> [key=value ...]`: grid search by k-fold CV.

Runs every candidate of `tune.grids.<model>` through the `cv` protocol (cv.folds, cv.repeats;
5 when cv is off) on the cropped images, ranks them on the folds' validation parts only and
writes `reports/tuning/<dataset>/<model>.csv` (all candidates) and
`reports/metrics/<dataset>/tuning/<model>.json` (the winner, as the overrides to copy into
`conf/experiment/`; the report lists it). MLflow: one `tune <model>` run, one child run per
candidate, and the candidate's folds below it. Not a DVC stage: a search is an exploration,
its outcome is recorded in `conf/experiment/` and reproduced by `dvc exp run`.
"""

import json
import sys

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import manifest, paths
from pipeline.io import atomic_write_json
from pipeline.stages.common import log, model_config, stage

DEFAULT_FOLDS = 5


@stage
def run(cfg: DictConfig, model_name: str) -> None:
    from pipeline import tracking
    from pipeline.evaluate import crossval, tuning
    from pipeline.models import build_model

    model_config(cfg, model_name)
    grid = OmegaConf.to_container(cfg.tune.grids, resolve=True).get(model_name)
    candidates = tuning.expand_grid(grid or {}, model_name)
    if cfg.cv.folds == 0:
        cfg.cv.folds = DEFAULT_FOLDS
    dataset = cfg.dataset.name
    frame = manifest.read(paths.cropped(dataset) / "manifest.csv")
    configs = [tuning.apply_candidate(cfg, candidate) for candidate in candidates]
    for candidate_cfg in configs:  # a bad model value fails now, not hours into the search
        build_model(model_config(candidate_cfg, model_name))
    tracking.check_reachable(cfg)
    data_digest = tuning.data_digest(frame)
    fingerprints = [tuning.fingerprint(c, model_name, data_digest) for c in configs]
    table_path = paths.tuning_table(dataset, model_name)
    finished = tuning.finished_candidates(table_path) if cfg.tune.resume else {}
    rows: dict[int, dict] = {
        number: tuning.candidate_row(candidates[number], finished[fp], fp)
        for number, fp in enumerate(fingerprints)
        if fp in finished
    }
    if rows:
        log.info("tune %s: %d of %d candidates reused from %s (tune.resume=false to redo)",
                 model_name, len(rows), len(configs), table_path)  # fmt: skip
    with tracking.start_run(
        cfg, dataset=dataset, model=model_name, stage=f"tune@{model_name}",
        run_name=f"tune {model_name}", dataset_hash=data_digest,
    ) as parent:  # fmt: skip
        tracking.set_tags({"reused_candidates": len(rows)})
        for number, candidate_cfg in enumerate(configs):
            if number in rows:
                continue
            log.info("tune %s candidate %d/%d: %s", model_name, number + 1, len(configs),
                     candidates[number])  # fmt: skip
            summary, _ = crossval.cross_validate(
                frame, candidate_cfg, model_name, f"tune {model_name} #{number}",
                parent_run_id=parent.info.run_id,
            )  # fmt: skip
            rows[number] = tuning.candidate_row(candidates[number], summary, fingerprints[number])
            tuning.write_table(table_path, [rows[n] for n in sorted(rows)], selected=None)
        ordered = [rows[n] for n in sorted(rows)]
        best = tuning.select(pd.DataFrame(ordered))
        table = tuning.write_table(table_path, ordered, selected=best)
        winner = tuning.winner_record(cfg, model_name, candidates[best], table.iloc[best])
        winner_path = paths.tuning_winner(dataset, model_name)
        atomic_write_json(winner_path, {**winner, "candidates": len(table)})
        tracking.log_cv_summary({k: v for k, v in winner["metrics"].items() if v is not None})
        tracking.log_artifacts([table_path, winner_path], artifact_path="tuning")
    log.info(
        "tune %s: selected %s (validation %.3f; its test folds %.3f)\n%s",
        model_name,
        json.dumps(candidates[best]),
        table.iloc[best]["val_accuracy_mean"],
        table.iloc[best]["accuracy_mean"],
        table.to_string(index=False),
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
