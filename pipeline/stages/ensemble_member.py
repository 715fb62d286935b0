"""Stage ensemble_member@<model>: record the digests of one ensemble member's trained model
folder and CV outputs, so that DVC reruns the `ensemble` stage, and only it, when a member of
`ensemble.members` changes (a stage cannot depend on a list of folders read from params)."""

import sys

from pipeline import paths
from pipeline.io import atomic_write_json, folder_digest
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg, model_name: str) -> None:
    dataset = cfg.dataset.name
    model_config(cfg, model_name)
    record = {
        "member": model_name,
        "model_digest": folder_digest(paths.model_dir(dataset, model_name)),
        "cv_digest": folder_digest(paths.cv_dir(dataset, model_name)),
    }
    atomic_write_json(paths.ensemble_members(dataset) / f"{model_name}.json", record)
    log.info("ensemble member %s recorded", model_name)


main = run
if __name__ == "__main__":
    sys.exit(main())
