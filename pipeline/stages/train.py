"""Stage train@<model>: fit one classifier on the prepared dataset, tracked in MLflow.

A killed run resumes from its last epoch checkpoint (artifacts/<dataset>/checkpoints/<model>,
kept by DVC across runs with `persist: true`) on the next `dvc repro`.
"""

import json
import shutil
import sys
import time

from omegaconf import DictConfig

from pipeline import manifest, paths, tracking
from pipeline.inference import training_card
from pipeline.io import atomic_path, file_digest, folder_digest
from pipeline.models.base import build_model
from pipeline.preprocess.augment import require_split_of
from pipeline.preprocess.card import warn_on_resize, write_card
from pipeline.stages.common import log, model_config, stage
from pipeline.train.context import TrainContext
from pipeline.train.device import pin_threads, resolve_device
from pipeline.train.history import selection_row


@stage
def run(cfg: DictConfig, model_name: str) -> None:
    dataset = cfg.dataset.name
    classifier = build_model(model_config(cfg, model_name))
    threads = pin_threads(cfg.train.threads)
    data_dir = paths.prepared(dataset)
    data_hash = file_digest(data_dir / "manifest.csv")
    card = training_card(data_dir, dataset, data_hash)
    warn_on_resize(card, cfg.crop.size, data_dir)
    prepared = manifest.read(data_dir / "manifest.csv")
    require_split_of(prepared, manifest.read(paths.split_table(dataset)), str(data_dir))
    tracking.check_reachable(cfg)
    tracking.close_stale_runs(cfg, dataset, model_name)
    with tracking.start_run(
        cfg,
        dataset=dataset,
        model=model_name,
        stage=f"train@{model_name}",
        dataset_hash=data_hash,
    ):
        tracking.set_tags({"device": resolve_device(cfg.train.device).device, "threads": threads})
        tracking.log_dataset(
            prepared,
            name=dataset,
            source=cfg.dataset.root,
            digest=data_hash,
            context="training",
        )
        ctx = TrainContext.from_config(
            cfg,
            data_dir,
            paths.checkpoints(dataset, model_name),
            on_epoch=lambda epoch, metrics: tracking.log_epoch(metrics, step=epoch),
        )
        started = time.perf_counter()
        history = classifier.fit(ctx)
        kept = selection_row(history, cfg.train.monitor, classifier.score_split(data_dir, "val"))
        final = paths.model_dir(dataset, model_name)
        with atomic_path(final) as staged:
            classifier.save(staged)
            write_card(staged, card)
            (staged / "history.json").write_text(json.dumps(history, indent=1))
            (staged / paths.SELECTION).write_text(json.dumps(kept, indent=1))
            digest = folder_digest(staged)
        tracking.set_tags({tracking.MODEL_DIGEST_TAG: digest})
        tracking.log_durations({"train": time.perf_counter() - started})
        tracking.log_selected_epoch(kept)
        tracking.log_model(classifier, final)
        # Byte-identical to the model the committed evaluate output measured (a deterministic
        # model retrained on a fresh clone): DVC will skip evaluate, so log its metrics here.
        if tracking.log_committed_test_metrics(
            paths.metrics(dataset, model_name),
            digest,
            data_hash,
            plots_dir=paths.plots(dataset, model_name),
        ):
            log.info(
                "%s/%s: same model as evaluated before; its test metrics logged",
                dataset,
                model_name,
            )
    # Training finished: drop the resume state but keep the (DVC-declared) folder.
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    ctx.work_dir.mkdir(parents=True)
    log.info(
        "%s/%s trained %d epochs; kept (best %s): %s",
        dataset, model_name, len(history), cfg.train.monitor, kept,
    )  # fmt: skip


main = run
if __name__ == "__main__":
    sys.exit(main())
