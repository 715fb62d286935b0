"""The report's sections beyond Table II: one table builder per result kind (CV, tuning,
cross-dataset, shortcut audit, split shares, subjects), each reading the metrics JSON that a
stage wrote. Numbers are formatted here and nowhere else."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pandas as pd

from pipeline import paths
from pipeline.evaluate.probes import PROBES
from pipeline.labels import THRESHOLD
from pipeline.report.table import MISSING, format_ci, undefined


def cv_table(results: Mapping[tuple[str, str], Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: fold mean ± std and the pooled value with its CI, per (dataset, model)."""

    def mean_std(m: Mapping[str, Any], name: str, scale: float) -> str:
        mean, std = m.get(f"{name}_mean"), m.get(f"{name}_std")
        if undefined(mean):
            return MISSING
        digits = 1 if scale == 100 else 3
        return f"{mean * scale:.{digits}f}" + (
            f" ± {std * scale:.{digits}f}" if not undefined(std) else ""
        )

    rows = [
        {
            "dataset": dataset,
            "model": model,
            "folds × repeats": f"{m['folds']} × {m['repeats']}",
            "selection": m.get("selection", "fixed"),
            "Ac mean ± std": mean_std(m, "accuracy", 100),
            "F1w mean ± std": mean_std(m, "f1_weighted", 100),
            "ROC-AUC mean ± std": mean_std(m, "roc_auc", 1),
            "Ac pooled": format_ci(m, "accuracy"),
            "F1w pooled": format_ci(m, "f1_weighted"),
            "ROC-AUC pooled": format_ci(m, "roc_auc", 1),
            "Ac val parts": mean_std(m, "val_accuracy", 100),
            "n": m.get("n"),
        }
        for (dataset, model), m in sorted(results.items())
        if m.get("enabled")
    ]
    return pd.DataFrame(rows)


def tuning_table(winners: Mapping[tuple[str, str], Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: per (dataset, model), the selected setting and how it was chosen."""
    rows = []
    for (dataset, model), w in sorted(winners.items()):
        m = w["metrics"]
        settings = ", ".join(
            f"{key.removeprefix(f'models.{model}.')}={value}"
            for key, value in w["overrides"].items()
        )
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "candidates": w.get("candidates"),
                "selected (by validation parts)": settings,
                "Ac val parts": format_ci(m, "val_accuracy_mean"),
                "Ac test folds mean ± std": (
                    MISSING
                    if undefined(m["accuracy_mean"])
                    else f"{m['accuracy_mean'] * 100:.1f} ± "
                    f"{(0 if undefined(m['accuracy_std']) else m['accuracy_std']) * 100:.1f}"
                ),
                "Ac pooled": format_ci(m, "accuracy"),
            }
        )
    return pd.DataFrame(rows)


def cross_table(results: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: one row per (trained on, tested on, model)."""
    rows = [
        {
            "trained on": train,
            "tested on": target,
            "model": model,
            "Ac": format_ci(m, "accuracy"),
            "F1": format_ci(m, "f1"),
            "Bal. acc.": format_ci(m, "balanced_accuracy"),
            "ROC-AUC": format_ci(m, "roc_auc", 1),
            "n": m.get("n"),
        }
        for (train, target, model), m in sorted(results.items())
    ]
    return pd.DataFrame(rows)


def shortcut_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: one row per (dataset, probe) with accuracy and ROC-AUC (95% CI)."""
    rows = []
    for dataset, result in sorted(results.items()):
        if not result.get("applicable"):
            continue
        for probe in PROBES:
            scores = {k.removeprefix(f"{probe}_"): v for k, v in result.items()}
            rows.append(
                {
                    "dataset": dataset,
                    "probe": probe,
                    "Ac": format_ci(scores, "accuracy"),
                    "ROC-AUC": format_ci(scores, "roc_auc", 1),
                    "n": result["n"],
                }
            )
    return pd.DataFrame(rows)


def split_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Report section: the achieved split per dataset and class (images, groups, share) beside
    the configured fractions."""
    rows = []
    for dataset, result in sorted(results.items()):
        labels = sorted({key.split("_")[1] for key in result if key.endswith("_images")})
        for label in labels:
            row: dict[str, Any] = {"dataset": dataset, "class": label}
            for split in ("train", "val", "test"):
                share = result.get(f"{split}_{label}_share")
                target = result.get(f"{split}_target_share")
                row[split] = (
                    f"{result.get(f'{split}_{label}_images')} cells, "
                    f"{result.get(f'{split}_{label}_groups')} groups "
                    f"({MISSING if share is None else f'{share:.1%}'} of "
                    f"{MISSING if target is None else f'{target:.0%}'})"
                )
            row["grouped by"] = result.get("group_by", "subject")
            rows.append(row)
    return pd.DataFrame(rows)


def subjects_table(results: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """Report section: per subject of the CV test folds, the share of its cells each model
    calls ALL (the subject-level call is ALL at >= 50%), with the true label."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (dataset, model), table in sorted(results.items()):
        for subject in table.itertuples():
            row = rows.setdefault(
                (dataset, subject.group),
                {
                    "dataset": dataset,
                    "subject": subject.group.removeprefix("subject:"),
                    "label": subject.label,
                    "cells": subject.cells,
                },
            )
            mark = "" if subject.subject_correct else " ✗"
            row[model] = f"{subject.share_called_all:.0%}{mark}"
    return pd.DataFrame(list(rows.values()))


def data_version_lines(metrics: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[str]:
    """One warning per dataset whose models' test metrics come from different versions of its
    prepared data (`data_digest`: another split or augmentation): not one test set, so their
    rows must not be compared. A stage run by hand after a re-split leaves such a mix."""
    versions: dict[str, dict[str, list[str]]] = {}
    for (dataset, model), m in sorted(metrics.items()):
        digest = str(m.get("data_digest") or "not recorded")[:12]
        versions.setdefault(dataset, {}).setdefault(digest, []).append(model)
    return [
        f"**Warning (data versions, {dataset}):** its test metrics come from "
        f"{len(by_digest)} versions of the prepared data, so they are not one test set: "
        + "; ".join(f"{digest}: {', '.join(models)}" for digest, models in by_digest.items())
        + " (`dvc repro` retrains and re-scores them on one)."
        for dataset, by_digest in versions.items()
        if len(by_digest) > 1
    ]


def collapse_lines(metrics: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[str]:
    """One warning per (dataset, model) whose test predictions are (almost) all one class."""
    lines = []
    for (dataset, model), m in sorted(metrics.items()):
        if m.get("collapsed"):
            share = float(m["predicted_all_share"])
            called = "ALL" if share >= THRESHOLD else "healthy"
            lines.append(
                f"**Warning (collapsed model, {dataset}/{model}):** it calls "
                f"{max(share, 1 - share):.1%} of the test cells {called} (balanced accuracy "
                f"{m['balanced_accuracy']:.3f}): its accuracy is the class share, not skill."
            )
    return lines


def leftover_lines(
    metrics: Mapping[tuple[str, str], Mapping[str, Any]], configured: Collection[str]
) -> list[str]:
    """One warning naming the test metrics of models the config no longer has: files left by
    an earlier configuration (DVC does not delete an output whose stage is gone), whose rows
    were not measured by this pipeline."""
    leftovers = [
        f"{dataset}/{model}" for dataset, model in sorted(metrics) if model not in configured
    ]
    if not leftovers:
        return []
    return [
        f"**Warning (leftover metrics):** {paths.METRICS} holds test metrics of models not in "
        f"the config's `models`: {', '.join(leftovers)}. Their rows come from an earlier "
        "configuration: delete those files, or add the models back."
    ]
