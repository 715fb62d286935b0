"""Stage train@<model>: fit one classifier on the prepared dataset, tracked in MLflow.

A killed run resumes from its last epoch checkpoint (artifacts/<dataset>/checkpoints/<model>,
kept by DVC across runs with `persist: true`) on the next `dvc repro`.
"""

import json
import shutil
import sys

from omegaconf import OmegaConf

from pipeline import paths, tracking
from pipeline.io import atomic_path, atomic_write_json, file_sha256
from pipeline.models.base import TrainContext, build_model
from pipeline.predict import save_preprocessing
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg, model_name: str) -> None:
    dataset = cfg.dataset.name
    classifier = build_model(model_config(cfg, model_name))
    data_dir = paths.prepared(dataset)
    tracking.check_reachable(cfg)
    tracking.close_stale_runs(cfg, dataset, model_name)
    with tracking.start_run(
        cfg,
        dataset=dataset,
        model=model_name,
        stage=f"train@{model_name}",
        dataset_hash=file_sha256(data_dir / "manifest.csv"),
    ) as run:
        ctx = TrainContext(
            data_dir=data_dir,
            work_dir=paths.checkpoints(dataset, model_name),
            image_size=cfg.crop.size,
            seed=cfg.seed,
            on_epoch=lambda epoch, metrics: tracking.log_epoch(metrics, step=epoch),
            **OmegaConf.to_container(cfg.train),
        )
        history = classifier.fit(ctx)
        final = paths.model_dir(dataset, model_name)
        with atomic_path(final) as staged:
            classifier.save(staged)
            save_preprocessing(staged, cfg)
            (staged / "history.json").write_text(json.dumps(history, indent=1))
            atomic_write_json(staged / "mlflow_run.json", {"run_id": run.info.run_id})
        tracking.log_model(classifier, final)
    # Training finished: drop the resume state but keep the (DVC-declared) folder.
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    ctx.work_dir.mkdir(parents=True)
    log.info("%s/%s trained: %s", dataset, model_name, history[-1] if history else {})


main = run
if __name__ == "__main__":
    sys.exit(main())
