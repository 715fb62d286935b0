"""Stage cross_eval: every model trained on this dataset, tested on each `cross.targets` dataset.

A target is read through its own adapter (conf/dataset/<target>.yaml, root overridable with
`cross.roots`), segmented if the target needs it, then cropped/resized as in training.
Target images byte-identical to a training-dataset image are left out (counted in each JSON).
"""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.config import ConfigError, workspace_root
from pipeline.data import build_manifest
from pipeline.evaluate import cross_dataset
from pipeline.evaluate.metrics import compute_metrics, metrics_args
from pipeline.io import atomic_path, atomic_write_json
from pipeline.labels import y_true
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg: DictConfig, *model_names: str) -> None:
    dataset = cfg.dataset.name
    stray_roots = sorted(set(cfg.cross.roots) - set(cfg.cross.targets))
    if stray_roots:  # a misspelt name: its target would silently read its default root
        raise ConfigError(
            f"cross.roots.{stray_roots[0]}: not one of cross.targets {list(cfg.cross.targets)}; "
            "a root is only read for a target (check the spelling, or add it to cross.targets)"
        )
    names = list(model_names) or list(cfg.models)
    for name in names:
        model_config(cfg, name)  # fails clearly on an unknown name
    model_dirs = {name: paths.model_dir(dataset, name) for name in names}
    training = manifest.read(paths.manifest(dataset))
    evaluated = []
    with atomic_path(paths.cross_dir(dataset)) as staged:
        staged.mkdir()
        for target_name in cfg.cross.targets:
            target = cross_dataset.target_dataset(target_name, cfg.cross.roots)
            root = cross_dataset.dataset_root(target, workspace_root())
            if not root.exists():
                problem = (
                    f"cross.targets: target {target_name!r}: dataset root {root} does not exist "
                    f"(set +cross.roots.{target_name}=<path>, or cross.on_missing=skip)"
                )
                if cfg.cross.on_missing == "error":
                    raise FileNotFoundError(problem)
                log.warning("skipped: %s", problem)
                continue
            frame, problems = build_manifest(target, workspace_root())
            if problems:
                log.warning("%s: %d bad files skipped", target_name, len(problems))
            frame, seen = cross_dataset.drop_training_images(frame, training)
            cross_dataset.require_unseen_classes(frame, seen, target_name, dataset)
            if seen:
                log.warning(
                    "%s: %d images byte-identical to %s's are left out (seen in training)",
                    target_name, seen, dataset,
                )  # fmt: skip
            predictions = cross_dataset.cross_predict(model_dirs, frame, target.segment)
            y = y_true(predictions["label"])
            out = staged / target_name
            out.mkdir()
            predictions.to_csv(out / "predictions.csv", index=False)
            evaluated.append(target_name)
            for name in names:
                metrics = compute_metrics(
                    y,
                    predictions[name],
                    groups=predictions["group"].to_numpy(),
                    **metrics_args(cfg),
                )
                metrics["n_left_out_seen_in_training"] = seen
                atomic_write_json(out / f"{name}.json", metrics)
                log.info(
                    "%s -> %s %s: accuracy %.3f, ROC-AUC %s on %d images",
                    dataset,
                    target_name,
                    name,
                    metrics["accuracy"],
                    metrics["roc_auc"],
                    metrics["n"],
                )
    if not evaluated:
        log.warning(
            "cross_eval: no target evaluated (cross.targets %s; a missing root is skipped "
            "under cross.on_missing=skip)",
            list(cfg.cross.targets),
        )


main = run
if __name__ == "__main__":
    sys.exit(main())
