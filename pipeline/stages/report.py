"""Stage report: the paper's Table II for every dataset and model found, with our intervals
beside the paper's figures, the other result sections, loud warnings (collapsed models,
shortcuts, the image-level protocol), and the champion per dataset registered in MLflow (by
validation score)."""

import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from pipeline import paths, tracking
from pipeline.errors import PipelineError
from pipeline.evaluate.probes import warning_lines
from pipeline.io import file_digest, read_json_object
from pipeline.preprocess.split import IMAGE_LEVEL_WARNING
from pipeline.report import sections
from pipeline.report.table import build_table, write_report
from pipeline.stages.common import log, stage

SPLIT_SECTION = "Split (achieved shares per class)"  # how the data was cut: not a result
# Per-dataset metrics files that are not a model's test metrics.
DATASET_FILES = ("segmentation", "shortcut", "split")
ENSEMBLE = "ensemble"  # pipeline.stages.ensemble.NAME (importing that module loads torch)


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


def data_digest(dataset: str) -> str | None:
    """The prepared data's manifest digest (what train tags its run with), so the champion is
    chosen among models of this very split; None when the data is not prepared here."""
    manifest_path = paths.prepared(dataset) / "manifest.csv"
    return file_digest(manifest_path) if manifest_path.is_file() else None


def register_champion(cfg: DictConfig, dataset: str) -> None:
    """Register the dataset's champion; none to register is a warning, not a failure: the
    table is written, and a fresh store (models restored from the DVC cache) has no runs."""
    try:
        version = tracking.register_best(
            cfg, dataset, metric=cfg.tracking.register_metric, data_digest=data_digest(dataset)
        )
    except tracking.NoChampionError as exc:
        log.warning("%s; no champion registered", exc)
        return
    log.info("registered the champion %s model (by validation): %s", dataset, version)


@stage
def run(cfg: DictConfig) -> None:
    test_metrics = collect_metrics()
    found, warnings = extra_sections(test_metrics)
    if not test_metrics and set(found) <= {SPLIT_SECTION}:  # would look like a finished report
        raise PipelineError(
            f"no model metrics under {paths.METRICS} (test, CV, cross-dataset, tuning or "
            "shortcut): run the evaluate (or cv) stages first"
        )
    notes = (
        f"Test split of each dataset ({cfg.split.test:.0%} of images, stratified, grouped by "
        f"{cfg.split.group_by}; augmentation on {', '.join(cfg.augment.splits)} only). Image "
        f"side {cfg.crop.size} px. Weights: see each model's `pretrained` in params.yaml. "
        f"{cfg.evaluate.confidence:.0%} intervals in brackets: Clopper–Pearson for proportions "
        "(widened to the group bootstrap where cells cluster in subjects), group bootstrap for "
        "F1, weighted F1, balanced accuracy and ROC-AUC."
    )
    warnings += sections.leftover_lines(test_metrics, [*cfg.models, ENSEMBLE])
    for line in warnings:
        log.warning(line)
    notes = "\n\n".join([notes, *warnings])
    write_report(build_table(test_metrics), paths.REPORTS, extra_sections=found, notes=notes)
    if cfg.tracking.register_best:
        register_champion(cfg, cfg.dataset.name)
    log.info("report written to %s", paths.REPORTS / "table2.md")


main = run
if __name__ == "__main__":
    sys.exit(main())
