"""Stage cross_eval: every model trained on this dataset, tested on each `cross.targets` dataset.

A target is read through its own adapter (conf/dataset/<target>.yaml, root overridable with
`cross.roots`), segmented if the target needs it, then cropped/resized as in training.
Target images byte-identical to a training-dataset image are left out (counted in each JSON).
"""

import sys

from omegaconf import DictConfig

from pipeline import manifest, paths
from pipeline.evaluate import cross_dataset
from pipeline.io import atomic_path
from pipeline.stages.common import log, model_config, stage


@stage
def run(cfg: DictConfig, *model_names: str) -> None:
    cross_dataset.check_roots(cfg)
    names = list(model_names) or list(cfg.models)
    for name in names:
        model_config(cfg, name)  # fails clearly on an unknown name
    dataset = cfg.dataset.name
    model_dirs = {name: paths.model_dir(dataset, name) for name in names}
    cross_dataset.check_models(model_dirs)
    training = manifest.read(paths.manifest(dataset))
    with atomic_path(paths.cross_dir(dataset)) as staged:
        staged.mkdir()
        evaluated = [
            target
            for target in cfg.cross.targets
            if cross_dataset.evaluate_target(cfg, target, model_dirs, training, staged / target)
        ]
    if not evaluated:
        log.warning(
            "cross_eval: no target evaluated (cross.targets %s; a missing root is skipped "
            "under cross.on_missing=skip)",
            list(cfg.cross.targets),
        )


main = run
if __name__ == "__main__":
    sys.exit(main())
