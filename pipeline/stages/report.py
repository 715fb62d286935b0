"""Stage report: the paper's Table II for every dataset and model found, with our CIs beside
the paper's figures, and the best model per dataset registered in MLflow."""

import json
import sys

from pipeline import paths, tracking
from pipeline.report.table import build_table, write_report
from pipeline.stages.common import log, stage


def collect_metrics() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(paths.METRICS.glob("*/*.json")):
        if path.stem in ("segmentation",) or path.stem.startswith(("cv_", "cross_", "probe")):
            continue
        found[(path.parent.name, path.stem)] = json.loads(path.read_text())
    return found


@stage
def run(cfg) -> None:
    metrics = collect_metrics()
    notes = (
        f"Test split of each dataset ({cfg.split.test:.0%} of images, grouped and stratified; "
        f"augmentation on {', '.join(cfg.augment.splits)} only). Image side {cfg.crop.size} px. "
        "Weights: see each model's `pretrained` in params.yaml. 95% bootstrap CIs in brackets."
    )
    write_report(build_table(metrics), paths.REPORTS, notes=notes)
    if cfg.tracking.register_best:
        version = tracking.register_best(cfg, cfg.dataset.name, metric=cfg.tracking.register_metric)
        log.info("registered best %s model: %s", cfg.dataset.name, version)
    log.info("report written to %s", paths.REPORTS / "table2.md")


main = run
if __name__ == "__main__":
    sys.exit(main())
