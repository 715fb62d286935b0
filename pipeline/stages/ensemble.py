"""Stages ensemble and ensemble_cv: soft voting over members trained by their own stages, with
no retraining (`python -m pipeline.stages.ensemble split|cv`).

- Single split (`ensemble`): `models/<dataset>/ensemble` assembled from the members'
  `models/<dataset>/<member>` (every member, or with `ensemble.top_k` the k best on the
  validation split), evaluated on the test split like any model (`pipeline.evaluate.holdout`),
  logged to MLflow as run `ensemble`.
- CV (`ensemble_cv`; with `cv.folds` = 0 it writes {"enabled": false}): the members' own
  out-of-fold P(ALL) averaged fold by fold (`crossval.ensemble_cv`); with `top_k`, each fold
  takes its best members on its own validation part. Seconds, where retraining the members
  cost as much as their own CVs.

The `ensemble_member@<member>` (models) and `ensemble_cv_member@<member>` (CV outputs) stages
record each member's digest; they are checked here (`pipeline.members`), so a member retrained
since then is caught instead of silently mixed with stale records. The two parts are separate
stages so that a new CV does not re-evaluate the single-split ensemble, nor a retrained model
re-run the CV one.
"""

import sys

from omegaconf import DictConfig

from pipeline import members, tracking
from pipeline.evaluate import crossval, ensemble
from pipeline.stages.common import stage
from pipeline.train.device import pin_threads


@stage
def run(cfg: DictConfig, part: str = "split") -> None:
    dataset = cfg.dataset.name
    names = list(cfg.ensemble.members)
    members.recorded_folder(dataset, names[0], part)  # an unknown part fails here, naming it
    pin_threads(cfg.train.threads)
    members.check_records(dataset, names, part)
    tracking.check_reachable(cfg)
    if part == "split":
        ensemble.single_split(cfg, names)
    elif cfg.cv.folds == 0:
        crossval.write_cv_outputs(dataset, ensemble.NAME, {"enabled": False})
    else:
        ensemble.cross_validated(cfg, names)


main = run
if __name__ == "__main__":
    sys.exit(main())
