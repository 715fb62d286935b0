"""What the report is built from: the metrics JSON files the stages wrote under
`reports/metrics/` and the per-subject CV tables, read into the sections of `sections` and the
warnings that go in the report's notes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.evaluate.probes import warning_lines
from pipeline.io import read_json_object
from pipeline.preprocess.split import IMAGE_LEVEL_WARNING
from pipeline.report import sections

SPLIT_SECTION = "Split (achieved shares per class)"  # how the data was cut: not a result
# Per-dataset metrics files that are not a model's test metrics.
DATASET_FILES = ("segmentation", "shortcut", "split")


def _read(pattern: str) -> dict[tuple[str, ...], dict]:
    """Metrics files matching `pattern` under reports/metrics, keyed by their path parts."""
    return {
        path.relative_to(paths.METRICS).with_suffix("").parts: _metrics_file(path)
        for path in sorted(paths.METRICS.glob(pattern))
    }


def _metrics_file(path: Path) -> dict:
    return read_json_object(path, "a JSON object of metrics")


def collect_metrics() -> dict[tuple[str, str], dict]:
    """(dataset, model) -> test metrics of every model with a metrics file."""
    return {key: m for key, m in _read("*/*.json").items() if key[1] not in DATASET_FILES}


def _subjects() -> dict[tuple[str, str], pd.DataFrame]:
    """Per-subject CV tables of datasets whose groups are subjects (C-NMC)."""
    found = {}
    for path in sorted(Path(paths.REPORTS / "cv").glob("*/*/subjects.csv")):
        if path.stat().st_size < 2:
            continue
        table = pd.read_csv(path, dtype={"group": str})
        if not table.empty and table["group"].str.startswith("subject:").all():
            found[(path.parent.parent.name, path.parent.name)] = table
    return found


def extra_sections(
    test_metrics: dict[tuple[str, str], dict],
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The sections with results, and the warnings for the notes (`test_metrics`:
    `collect_metrics()`, read once by the caller)."""
    cv = {(d, m): v for (d, _, m), v in _read("*/cv/*.json").items()}
    cross = {(d, t, m): v for (d, _, t, m), v in _read("*/cross/*/*.json").items()}
    probes = {d: v for (d, _), v in _read("*/shortcut.json").items()}
    tuned = {(d, m): v for (d, _, m), v in _read("*/tuning/*.json").items()}
    splits = {d: v for (d, _), v in _read("*/split.json").items()}
    found = {
        SPLIT_SECTION: sections.split_table(splits),
        "k-fold cross-validation": sections.cv_table(cv),
        "Per subject (CV test folds: share of the subject's cells called ALL; ✗ = wrong "
        "subject-level call)": sections.subjects_table(_subjects()),
        "Hyperparameter search (k-fold CV, selected on validation parts only)": (
            sections.tuning_table(tuned)
        ),
        "Cross-dataset (train → test)": sections.cross_table(cross),
        "Shortcut audit (background vs cell)": sections.shortcut_table(probes),
    }
    warnings = sections.data_version_lines(test_metrics) + sections.collapse_lines(test_metrics)
    warnings += sections.collapse_lines({(f"{d} → {t}", m): v for (d, t, m), v in cross.items()})
    warnings += [
        f"**Warning (shortcut audit, {d}):** {line}."
        for d, v in sorted(probes.items())
        for line in warning_lines(v)
    ]
    warnings += [
        f"**Warning (split, {d}):** {IMAGE_LEVEL_WARNING}."
        for d, v in sorted(splits.items())
        if v.get("group_by", "subject") != "subject"
    ]
    return {title: table for title, table in found.items() if not table.empty}, warnings
