"""Stage report: the paper's Table II for every dataset and model found, with our CIs beside
the paper's figures, and the best model per dataset registered in MLflow."""

import json
import sys

from pipeline import paths, tracking
from pipeline.evaluate.crossval import cross_table, cv_table
from pipeline.evaluate.probes import shortcut_table, warning_line
from pipeline.evaluate.tuning import tuning_table
from pipeline.report.table import build_table, write_report
from pipeline.stages.common import log, stage


def collect_metrics() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(paths.METRICS.glob("*/*.json")):
        if path.stem in ("segmentation", "shortcut") or path.stem.startswith(
            ("cv_", "cross_", "probe")
        ):
            continue
        found[(path.parent.name, path.stem)] = json.loads(path.read_text())
    return found


def _read(pattern: str) -> dict[tuple[str, ...], dict]:
    """Metrics files matching `pattern` under reports/metrics, keyed by their path parts."""
    return {
        path.relative_to(paths.METRICS).with_suffix("").parts: json.loads(path.read_text())
        for path in sorted(paths.METRICS.glob(pattern))
    }


def extra_sections() -> tuple[dict, list[str]]:
    """CV, cross-dataset and shortcut-audit sections (those with results), and warnings."""
    cv = {(d, m): v for (d, _, m), v in _read("*/cv/*.json").items()}
    cross = {(d, t, m): v for (d, _, t, m), v in _read("*/cross/*/*.json").items()}
    probes = {d: v for (d, _), v in _read("*/shortcut.json").items()}
    tuned = {(d, m): v for (d, _, m), v in _read("*/tuning/*.json").items()}
    sections = {
        "k-fold cross-validation": cv_table(cv),
        "Hyperparameter search (k-fold CV, selected on validation parts only)": tuning_table(tuned),
        "Cross-dataset (train → test)": cross_table(cross),
        "Shortcut audit (background vs cell)": shortcut_table(probes),
    }
    warnings = [
        f"**Warning (shortcut audit, {d}):** {warning_line(v)}."
        for d, v in sorted(probes.items())
        if v.get("shortcut_warning")
    ]
    return {title: table for title, table in sections.items() if not table.empty}, warnings


@stage
def run(cfg) -> None:
    metrics = collect_metrics()
    notes = (
        f"Test split of each dataset ({cfg.split.test:.0%} of images, grouped and stratified; "
        f"augmentation on {', '.join(cfg.augment.splits)} only). Image side {cfg.crop.size} px. "
        "Weights: see each model's `pretrained` in params.yaml. 95% bootstrap CIs in brackets."
    )
    sections, warnings = extra_sections()
    for line in warnings:
        log.warning(line)
    notes = "\n\n".join([notes, *warnings])
    write_report(build_table(metrics), paths.REPORTS, extra_sections=sections, notes=notes)
    if cfg.tracking.register_best:
        version = tracking.register_best(cfg, cfg.dataset.name, metric=cfg.tracking.register_metric)
        log.info("registered best %s model: %s", cfg.dataset.name, version)
    log.info("report written to %s", paths.REPORTS / "table2.md")


main = run
if __name__ == "__main__":
    sys.exit(main())
