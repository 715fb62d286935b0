"""`python -m pipeline.stages.protocol <model> [<model> ...] [key=value ...]`: how much does
ignoring subjects inflate a model? The same k-fold CV twice, subject-grouped and image-level.

Both runs share everything (folds count, seed, augmentation, training, model settings) except
`split.group_by`: `subject` keeps each subject (and byte-identical files) in one fold, `none`
is the paper's image-level protocol, which lets a subject's cells sit in train and test. Reads
the cropped images of the workspace (run `dvc repro` / `dvc exp run` first) and needs
`cv.folds >= 2`. Writes `reports/protocol/<dataset>.json` (both summaries per model, the
overrides) and `.csv` / `.md` (the comparison table); models run before are kept, so models can
be added one at a time. Not a DVC stage: a labelled comparison, like `compare_segmentation`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline import manifest, paths
from pipeline.config import ConfigError
from pipeline.io import atomic_write_json, atomic_write_text
from pipeline.report.table import format_ci
from pipeline.stages.common import log, model_config, stage

# split.group_by value -> the protocol's name in the table.
PROTOCOLS = {"subject": "subject-grouped", "none": "image-level (paper)"}
# What each protocol keeps of the CV summary (the rest stays in reports/cv of a cv run).
KEPT = ("folds", "repeats", "n", "accuracy_mean", "accuracy_std", "selection", "val_accuracy_mean")
POOLED = ("accuracy", "f1_weighted", "balanced_accuracy", "roc_auc")


def protocol_path(dataset: str) -> Any:
    return paths.REPORTS / "protocol" / dataset


def compare(frame: pd.DataFrame, cfg: DictConfig, model_name: str) -> dict[str, dict[str, Any]]:
    """{group_by: CV summary} of `model_name` under each protocol, everything else equal."""
    from pipeline.evaluate import crossval  # MLflow and the model libraries only when run

    results = {}
    for group_by, label in PROTOCOLS.items():
        protocol_cfg = OmegaConf.merge(cfg, {"split": {"group_by": group_by}})
        summary, _ = crossval.cross_validate(
            frame, protocol_cfg, model_name, f"protocol {model_name} {group_by}"
        )
        log.info(
            "%s, %s: accuracy %.3f ± %.3f over folds, weighted F1 %.3f",
            model_name,
            label,
            summary["accuracy_mean"],
            summary["accuracy_std"] or 0.0,
            summary["f1_weighted"],
        )
        results[group_by] = summary
    return results


def protocol_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per (model, protocol), and the image-level minus subject-grouped accuracy."""
    rows = []
    for model, by_protocol in sorted(results.items()):
        grouped = by_protocol["subject"]["accuracy_mean"]
        for group_by, label in PROTOCOLS.items():
            m = by_protocol[group_by]
            rows.append(
                {
                    "model": model,
                    "protocol": label,
                    "folds": m["folds"],
                    "Ac mean ± std": f"{m['accuracy_mean'] * 100:.1f} ± "
                    f"{(m['accuracy_std'] or 0.0) * 100:.1f}",
                    "Ac pooled": format_ci(m, "accuracy"),
                    "F1w pooled": format_ci(m, "f1_weighted"),
                    "Bal. acc. pooled": format_ci(m, "balanced_accuracy"),
                    "ROC-AUC pooled": format_ci(m, "roc_auc", 1),
                    "inflation (Ac points)": (
                        f"{(m['accuracy_mean'] - grouped) * 100:+.1f}"
                        if group_by != "subject"
                        else ""
                    ),
                    "n": m["n"],
                }
            )
    return pd.DataFrame(rows)


def _kept(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = [*KEPT, *(f"{m}{s}" for m in POOLED for s in ("", "_ci_low", "_ci_high"))]
    return {key: summary.get(key) for key in keys}


@stage
def run(cfg: DictConfig, *model_names: str) -> None:
    if not model_names:
        raise ConfigError("name at least one model: python -m pipeline.stages.protocol svm_hog")
    if cfg.cv.folds < 2:
        raise ConfigError(f"cv.folds: the comparison is k-fold CV, set >= 2 (got {cfg.cv.folds})")
    for name in model_names:
        model_config(cfg, name)  # a clear error for an unknown model before any training
    from pipeline.train.device import pin_threads

    pin_threads(cfg.train.threads)
    dataset = cfg.dataset.name
    frame = manifest.read(paths.cropped(dataset) / "manifest.csv")
    out = protocol_path(dataset)
    record = (
        json.loads(out.with_suffix(".json").read_text())
        if out.with_suffix(".json").exists()
        else {"dataset": dataset, "models": {}}
    )
    for name in model_names:
        record["models"][name] = {
            "settings": {
                "cv.folds": cfg.cv.folds,
                "cv.repeats": cfg.cv.repeats,
                "seed": cfg.seed,
                "crop.size": cfg.crop.size,
                "train.threads": cfg.train.threads,
                f"models.{name}": OmegaConf.to_container(cfg.models[name], resolve=True),
            },
            **{g: _kept(s) for g, s in compare(frame, cfg, name).items()},
        }
        table = protocol_table(
            {m: {g: v[g] for g in PROTOCOLS} for m, v in record["models"].items()}
        )
        atomic_write_json(out.with_suffix(".json"), record)  # after each model: none is lost
        atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))
        atomic_write_text(out.with_suffix(".md"), table.to_markdown(index=False) + "\n")
    log.info("protocol comparison written to %s.{json,csv,md}:\n%s", out, table.to_string())


main = run
if __name__ == "__main__":
    sys.exit(main())
