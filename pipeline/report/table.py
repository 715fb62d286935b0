"""The paper's Table II, reproduced: our test metrics (with 95% CI) beside the published figures.

The paper reports accuracy, precision, recall and F1 in whole percent per model and dataset
(Table II). Datasets without published figures (e.g. `synthetic`) show "—" in the paper columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.io import atomic_write_text

MISSING = "—"
# (dataset, model) -> (accuracy, precision, recall, F1) in %, from Table II of the paper.
PAPER_TABLE2: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("cnmc", "svm_hog"): (84, 77, 75, 76),
    ("cnmc", "resnet50"): (84, 84, 61, 71),
    ("cnmc", "resnet50_svm"): (89, 89, 77, 82),
    ("cnmc", "densenet121"): (85, 76, 63, 69),
    ("cnmc", "yolov8"): (95, 96, 90, 93),
    ("all_idb2", "svm_hog"): (88, 100, 79, 88),
    ("all_idb2", "resnet50"): (91, 88, 96, 92),
    ("all_idb2", "resnet50_svm"): (95, 100, 90, 95),
    ("all_idb2", "densenet121"): (89, 90, 90, 90),
    ("all_idb2", "yolov8"): (94, 83, 97, 89),
}
PAPER_METRICS = (("accuracy", "Ac"), ("precision", "P"), ("recall", "R"), ("f1", "F1"))
PAPER_MODEL_NAMES = {
    "svm_hog": "SVM",
    "resnet50": "ResNet50",
    "resnet50_svm": "Hybrid",
    "densenet121": "DenseNet121",
    "yolov8": "YOLOv8",
}
DATASET_ORDER = ("cnmc", "all_idb2")
# (metric key, column label, scale): AUC stays a 0..1 fraction, rates are shown in %.
EXTRA_METRICS = (
    ("f1_weighted", "F1 weighted", 100),
    ("specificity", "Specificity", 100),
    ("balanced_accuracy", "Bal. acc.", 100),
    ("roc_auc", "ROC-AUC", 1),
)


def undefined(value: object) -> bool:
    """None or NaN (a JSON metrics file may hold either for a score that cannot be computed):
    both render as MISSING, never as 'nan'."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_ci(metrics: Mapping[str, object], name: str, scale: float = 100) -> str:
    """'91.2 [85.0–96.1]' (in % for scale=100, 3 decimals for scale=1); '—' if undefined."""
    value = metrics.get(name)
    if undefined(value):
        return MISSING
    digits = 1 if scale == 100 else 3
    text = f"{value * scale:.{digits}f}"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if not undefined(low) and not undefined(high):
        text += f" [{low * scale:.{digits}f}–{high * scale:.{digits}f}]"
    return text


def build_table(metrics: Mapping[tuple[str, str], Mapping[str, object]]) -> pd.DataFrame:
    """One row per (dataset, model): ours (95% CI) and the paper's figure for Ac/P/R/F1, etc.

    `metrics` maps (dataset, model) to a `compute_metrics` dict. Rows are ordered as in the
    paper: C-NMC, then ALL-IDB2, then other datasets; models in the paper's column order.
    """
    model_order = list(PAPER_MODEL_NAMES)

    def sort_key(key: tuple[str, str]) -> tuple:
        dataset, model = key
        d = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
        m = model_order.index(model) if model in model_order else len(model_order)
        return d, dataset, m, model

    rows = []
    for dataset, model in sorted(metrics, key=sort_key):
        ours = metrics[(dataset, model)]
        paper = PAPER_TABLE2.get((dataset, model))
        row: dict[str, object] = {
            "dataset": dataset,
            "model": model,
            "paper name": PAPER_MODEL_NAMES.get(model, MISSING),
        }
        for i, (name, label) in enumerate(PAPER_METRICS):
            row[f"{label} ours"] = format_ci(ours, name)
            row[f"{label} paper"] = str(paper[i]) if paper else MISSING
        for name, label, scale in EXTRA_METRICS:
            row[label] = format_ci(ours, name, scale)
        row["n_test"] = ours.get("n")
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(
    table: pd.DataFrame,
    out_dir: Path | str,
    extra_sections: Mapping[str, pd.DataFrame] | None = None,
    notes: str = "",
) -> list[Path]:
    """Write `table2.md` (Table II plus any extra sections) and `table2.csv`, atomically.

    `notes` should say what the numbers were measured on (data, resolution, weights, device);
    `extra_sections` maps a section title to a table (cross-dataset, CV, shortcut probe, ...).
    """
    out_dir = Path(out_dir)
    parts = [
        "# Table II — reproduction vs. paper",
        notes.strip(),
        "Ours: test-set value in %, with its 95% interval in brackets "
        "(ROC-AUC as a fraction). Paper: Table II, whole percent; "
        f"{MISSING} = not reported. Positive class: ALL.",
        table.to_markdown(index=False),
    ]
    for title, section in (extra_sections or {}).items():
        named_index = not isinstance(section.index, pd.RangeIndex)
        parts += [f"## {title}", section.to_markdown(index=named_index)]
    markdown = "\n\n".join(part for part in parts if part) + "\n"
    return [
        atomic_write_text(out_dir / "table2.md", markdown),
        atomic_write_text(out_dir / "table2.csv", table.to_csv(index=False)),
    ]
