"""How much does ignoring subjects inflate a model? The same k-fold CV twice, subject-grouped
and image-level (`python -m pipeline.stages.protocol <model> [<model> ...] [key=value ...]`).

Both runs share everything (folds count, seed, augmentation, training, model settings) except
`split.group_by`: `subject` keeps each subject (and byte-identical files) in one fold, `none`
is the paper's image-level protocol, which lets a subject's cells sit in train and test. Reads
the cropped images of the workspace (run `dvc repro` / `dvc exp run` first) and needs
`cv.folds >= 2`. Writes `reports/protocol/<dataset>.json` (both summaries per model, the
overrides) and `.csv` / `.md` (the comparison table); models run before are kept, so models can
be added one at a time. Not a DVC stage: a labelled comparison, like `compare_segmentation`.

The subject-grouped side is the `cv@<model>` stage's own output when the workspace's `dvc.lock`
proves it is the same run: the lock records exactly the params this comparison uses, its
metrics file is the one on disk, its selection was fixed and its out-of-fold predictions cover
this workspace's images. Then only the image-level CV trains (half the cost; a C-NMC CNN is
about an hour on 2 cores); otherwise both sides train here.

`ensemble` (named after its members, or once they have run) trains nothing: on each side it
averages the out-of-fold P(ALL) its members' comparisons kept, as `ensemble_cv` does with the
members' `cv` outputs (`ensemble.members`, `weights`, `top_k`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from pipeline import paths
from pipeline.config import ConfigError
from pipeline.evaluate.metrics import headline
from pipeline.io import (
    MalformedFileError,
    atomic_write_json,
    atomic_write_text,
    file_digest,
    locked_outs,
    read_json,
    read_yaml,
)
from pipeline.preprocess.split import IMAGE_LEVEL_WARNING
from pipeline.report.table import format_ci
from pipeline.tracking import code_and_machine

log = logging.getLogger("pipeline")
ENSEMBLE = "ensemble"
# split.group_by value -> the protocol's name in the table.
PROTOCOLS = {"subject": "subject-grouped", "none": "image-level (paper)"}
# What each protocol keeps of the CV summary (the rest stays in reports/cv of a cv run).
KEPT = (
    "folds",
    "repeats",
    "n",
    "accuracy_mean",
    "accuracy_std",
    "selection",
    "val_accuracy_mean",
    "source",
    "source_lock_entry",
    "predictions",
)


def protocol_path(dataset: str) -> Path:
    """`reports/protocol/<dataset>`: with `.json`, `.csv` and `.md` the comparison's outputs,
    as a folder the trained sides' predictions."""
    return paths.REPORTS / "protocol" / dataset


def predictions_path(dataset: str, model_name: str, group_by: str) -> Path:
    """A trained side's out-of-fold P(ALL), kept so that its figures can be recomputed and
    an ensemble's side averaged without retraining (a reused side's are the cv stage's)."""
    return protocol_path(dataset) / model_name / f"{group_by}.csv"


def lock_param(cfg: DictConfig, key: str) -> Any:
    """`key`'s value as `dvc.lock` records a param: plain containers, interpolations resolved."""
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def committed_grouped_cv(
    frame: pd.DataFrame, cfg: DictConfig, model_name: str, lock: Path = Path("dvc.lock")
) -> tuple[dict[str, Any] | None, str]:
    """The `cv@<model>` stage's summary if the lock proves it is this comparison's grouped run.

    Returns (summary or None, why): the reason names what differs, for the log.
    """
    stage_name = f"cv@{model_name}"
    if not lock.exists():
        return None, f"no {lock}"
    entry = (read_yaml(lock).get("stages") or {}).get(stage_name)
    if entry is None:
        return None, f"{lock} has no {stage_name}"
    declared = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["cv"]["params"]
    recorded = entry.get("params", {}).get("params.yaml", {})
    grouped = OmegaConf.merge(cfg, {"split": {"group_by": "subject"}})
    for key in (k.replace("${item.model}", model_name) for k in declared):
        if key not in recorded or recorded[key] != lock_param(grouped, key):
            return None, f"{stage_name} in {lock} ran with other {key!r}"
    metrics_file = paths.cv_metrics(cfg.dataset.name, model_name)
    recorded_md5 = locked_outs([entry]).get(metrics_file.as_posix())
    if not metrics_file.exists() or recorded_md5 != file_digest(metrics_file, "md5"):
        return None, f"{metrics_file} is not the output {lock} records for {stage_name}"
    summary = read_json(metrics_file)
    if summary.get("selection") != "fixed":
        return None, f"{metrics_file} chose inside the folds (nested); this comparison does not"
    predictions = paths.cv_predictions(cfg.dataset.name, model_name)
    tested = pd.read_csv(predictions)
    tested = tested.loc[tested["part"] == "test", "id"]
    if sorted(tested) != sorted(list(frame["id"]) * cfg.cv.repeats):
        return None, f"{stage_name}'s test folds hold other images than this workspace's"
    reused = {**summary, "source": stage_name, "source_lock_entry": entry}
    reused["predictions"] = predictions.as_posix()
    return reused, f"{stage_name} as recorded in {lock}"


def compare(frame: pd.DataFrame, cfg: DictConfig, model_name: str) -> dict[str, dict[str, Any]]:
    """{group_by: CV summary} of `model_name` under each protocol, everything else equal."""
    from pipeline.evaluate import crossval  # MLflow and the model libraries only when run

    results = {}
    for group_by, label in PROTOCOLS.items():
        summary = None
        if group_by == "subject":
            summary, why = committed_grouped_cv(frame, cfg, model_name)
            log.info("%s, %s: %s %s", model_name, label, "reused:" if summary else "trained:", why)
        if summary is None:
            protocol_cfg = OmegaConf.merge(cfg, {"split": {"group_by": group_by}})
            summary, predictions = crossval.cross_validate(
                frame, protocol_cfg, model_name, f"protocol {model_name} {group_by}"
            )
            saved = predictions_path(cfg.dataset.name, model_name, group_by)
            table = predictions.reindex(columns=crossval.WRITTEN_COLUMNS)  # the cv stage's
            atomic_write_text(saved, table.to_csv(index=False))
            summary = {**summary, "source": "trained", "predictions": saved.as_posix()}
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


def protocol_markdown(table: pd.DataFrame) -> str:
    """The table under the warning that its image-level rows are not a new patient's score."""
    return (
        f"**Warning:** {IMAGE_LEVEL_WARNING}. The image-level rows measure how much ignoring "
        "subjects inflates a model; the subject-grouped rows are its score on a patient it has "
        "not seen.\n\n" + table.to_markdown(index=False) + "\n"
    )


def ensemble_sides(
    cfg: DictConfig, models: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{group_by: CV summary} of the ensemble from its members' kept predictions (`models`:
    the comparisons recorded so far); a member without them is named with the command to run."""
    from pipeline.evaluate import crossval

    members = list(cfg.ensemble.members)
    weights = None if cfg.ensemble.weights is None else list(cfg.ensemble.weights)
    for member in members:
        settings = models.get(member, {}).get("settings", {})
        for key, value in (("cv.folds", cfg.cv.folds), ("cv.repeats", cfg.cv.repeats),
                           ("seed", cfg.seed)):  # fmt: skip
            if key in settings and settings[key] != value:
                raise ConfigError(
                    f"protocol ensemble: member {member!r} was compared with {key}="
                    f"{settings[key]}, this run has {value}: re-run its comparison"
                )
    results = {}
    for group_by, label in PROTOCOLS.items():
        tables = {}
        for member in members:
            kept = models.get(member, {}).get(group_by, {}).get("predictions")
            if not kept or not Path(kept).exists():
                raise ConfigError(
                    f"protocol ensemble: member {member!r} has no kept {label} predictions "
                    f"(no comparison yet, or one from before they were kept): run "
                    f"`python -m pipeline.stages.protocol {member}` first"
                )
            tables[member] = pd.read_csv(kept, dtype={"id": str, "group": str})
        side_cfg = OmegaConf.merge(cfg, {"split": {"group_by": group_by}})
        summary, predictions, _ = crossval.ensemble_cv(
            tables, weights, cfg.ensemble.top_k, side_cfg
        )
        saved = predictions_path(cfg.dataset.name, ENSEMBLE, group_by)
        atomic_write_text(saved, predictions.to_csv(index=False))
        results[group_by] = {
            **summary,
            "source": "members: " + ", ".join(members),
            "predictions": saved.as_posix(),
        }
        log.info("ensemble, %s: weighted F1 %.3f", label, summary["f1_weighted"])
    return results


def read_record(dataset: str) -> dict[str, Any]:
    """The comparisons recorded so far (models run before are kept), checked before hours of
    training."""
    path = protocol_path(dataset).with_suffix(".json")
    record = read_json(path) if path.exists() else {"dataset": dataset, "models": {}}
    if not isinstance(record.get("models"), dict):
        raise MalformedFileError(f"{path}: no 'models' table")
    return record


def compare_model(
    cfg: DictConfig,
    name: str,
    frame: pd.DataFrame | None,
    recorded: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """`name`'s record under both protocols: its settings, each side's summary, provenance.
    `frame`: the cropped manifest (None for the ensemble, which reads no images, only the
    predictions its members' comparisons in `recorded` kept)."""
    started = time.monotonic()
    if name == ENSEMBLE:
        sides = ensemble_sides(cfg, recorded)
        section = "ensemble"
    else:
        sides = compare(frame, cfg, name)
        section = f"models.{name}"
    return {
        "settings": {
            "cv.folds": cfg.cv.folds,
            "cv.repeats": cfg.cv.repeats,
            "seed": cfg.seed,
            "crop.size": cfg.crop.size,
            "train.threads": cfg.train.threads,
            section: OmegaConf.to_container(OmegaConf.select(cfg, section), resolve=True),
        },
        **{g: headline(s, KEPT) for g, s in sides.items()},
        "provenance": {
            **code_and_machine(),
            "wall_minutes": round((time.monotonic() - started) / 60, 2),  # trained sides
        },
    }


def write_record(dataset: str, record: Mapping[str, Any]) -> pd.DataFrame:
    """`reports/protocol/<dataset>.{json,csv,md}` from the record; returns the table."""
    out = protocol_path(dataset)
    table = protocol_table({m: {g: v[g] for g in PROTOCOLS} for m, v in record["models"].items()})
    atomic_write_json(out.with_suffix(".json"), record)
    atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))
    atomic_write_text(out.with_suffix(".md"), protocol_markdown(table))
    return table
