"""Stage evaluate@<model>: test-split metrics with bootstrap CIs, DVC plots, MLflow logging."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import manifest, paths, tracking
from pipeline.evaluate.explain import write_overlays
from pipeline.evaluate.metrics import compute_metrics
from pipeline.evaluate.plots import write_plot_data
from pipeline.io import atomic_path, atomic_write_json, read_image
from pipeline.models.base import POSITIVE, load_model
from pipeline.stages.common import log, model_config, stage


def predict_split(model, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba([read_image(p) for p in frame["path"]])


def log_gradcam(model, frame: pd.DataFrame, n: int, seed: int) -> None:
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


@stage
def run(cfg, model_name: str) -> None:
    dataset = cfg.dataset.name
    model_config(cfg, model_name)  # fails clearly on an unknown name
    model_dir = paths.model_dir(dataset, model_name)
    model = load_model(model_dir)
    table = manifest.read(paths.prepared(dataset) / "manifest.csv")
    test = table[table["split"] == "test"].reset_index(drop=True)
    y_true = (test["label"] == POSITIVE).astype(int).to_numpy()
    p_all = predict_split(model, test)
    metrics = compute_metrics(
        y_true,
        p_all,
        n_boot=cfg.evaluate.bootstrap_samples,
        confidence=cfg.evaluate.confidence,
        seed=cfg.seed,
    )
    history = json.loads((model_dir / "history.json").read_text())
    plot_dir = paths.plots(dataset, model_name)
    with atomic_path(plot_dir) as staged:
        written = write_plot_data(staged, y_true, p_all, history)
        # no `source`: absolute paths would make this committed file differ between clones
        columns = ["id", "path", "label", "group", "split", "augmented_from"]
        test[columns].assign(p_all=p_all).to_csv(staged / "predictions.csv", index=False)
    atomic_write_json(paths.metrics(dataset, model_name), metrics)
    run_id = json.loads((model_dir / "mlflow_run.json").read_text())["run_id"]
    with tracking.start_run(
        cfg, dataset=dataset, model=model_name, stage=f"evaluate@{model_name}", run_id=run_id
    ):
        tracking.log_test_metrics(metrics)
        tracking.log_artifacts(
            [plot_dir / p.name for p in written] + [plot_dir / "predictions.csv"]
        )
        log_gradcam(model, test, cfg.evaluate.explain_samples, cfg.seed)
    log.info(
        "%s/%s test accuracy %.3f [%.3f, %.3f] on %d images",
        dataset,
        model_name,
        metrics["accuracy"],
        metrics["accuracy_ci_low"],
        metrics["accuracy_ci_high"],
        len(test),
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
