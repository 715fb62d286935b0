"""Stage report: the paper's Table II for every dataset and model found, with our intervals
beside the paper's figures, the other result sections, loud warnings (collapsed models,
shortcuts, the image-level protocol), and the champion per dataset registered in MLflow (by
validation score)."""

import sys

from omegaconf import DictConfig

from pipeline import paths, tracking
from pipeline.errors import PipelineError
from pipeline.io import file_digest
from pipeline.report import sections
from pipeline.report.collect import SPLIT_SECTION, collect_metrics, extra_sections
from pipeline.report.table import build_table, write_report
from pipeline.stages.common import log, stage

ENSEMBLE = "ensemble"  # pipeline.evaluate.ensemble.NAME (importing that module loads torch)


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
        tracking.check_reachable(cfg)  # a clear error, not minutes of retries and a traceback
        register_champion(cfg, cfg.dataset.name)
    log.info("report written to %s", paths.REPORTS / "table2.md")


main = run
if __name__ == "__main__":
    sys.exit(main())
