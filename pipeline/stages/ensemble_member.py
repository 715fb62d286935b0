"""Stage ensemble_member@<model> / ensemble_cv_member@<model>: record the digest of one ensemble
member's trained model folder (part `split`) or CV outputs (part `cv`), so that DVC reruns the
`ensemble` or `ensemble_cv` stage, and only it, when a member of `ensemble.members` changes (a
stage cannot depend on a list of folders read from params)."""

import sys

from omegaconf import DictConfig

from pipeline import members
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg: DictConfig, model_name: str, part: str) -> None:
    model_config(cfg, model_name)
    members.write_record(cfg.dataset.name, model_name, part)
    log.info("ensemble member %s recorded (%s)", model_name, part)


main = run
if __name__ == "__main__":
    sys.exit(main())
