"""Stage probe: shortcut audit — can the background alone predict the label? (datasets with
`segment: true`; the others have no background to audit and get `{"applicable": false}`)."""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.evaluate.metrics import metrics_args
from pipeline.evaluate.probes import audit
from pipeline.io import atomic_write_json
from pipeline.stages.common import log, stage


@stage
def run(cfg: DictConfig) -> None:
    name = cfg.dataset.name
    if not cfg.dataset.segment or cfg.segment.method == "none":
        atomic_write_json(paths.shortcut(name), {"applicable": False})
        log.info("%s: segment=false, no background to audit", name)
        return
    raw = manifest.read(paths.manifest(name)).set_index("id")
    masks = manifest.read(paths.segmented(name) / "manifest.csv").set_index("id")["mask"]
    inputs = manifest.read(paths.cropped(name) / "manifest.csv").set_index("id")["path"]
    frame = raw.assign(raw=raw["path"], mask=masks, input=inputs).reset_index()
    unmatched = frame.loc[frame[["mask", "input"]].isna().any(axis=1), "id"].tolist()
    if unmatched:
        raise FileNotFoundError(
            f"{name}: no segmentation mask or cropped image for {unmatched[:10]}; "
            "re-run the segment and crop stages"
        )
    result = audit(frame, cfg.probe, cfg.crop, **metrics_args(cfg))
    atomic_write_json(paths.shortcut(name), result)
    log.info(
        "%s shortcut audit ROC-AUC: %s",
        name,
        {p: result[f"{p}_roc_auc"] for p in ("background", "cell", "model_input")},
    )


main = run
if __name__ == "__main__":
    sys.exit(main())
