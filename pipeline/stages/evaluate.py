"""Stage evaluate@<model>: test-split metrics with intervals, DVC plots, MLflow logging."""

import sys

from omegaconf import DictConfig

from pipeline.evaluate.holdout import evaluate_model
from pipeline.stages.common import model_config, stage
from pipeline.train.device import pin_threads


@stage
def run(cfg: DictConfig, model_name: str) -> None:
    model_config(cfg, model_name)  # fails clearly on an unknown name
    pin_threads(cfg.train.threads)
    evaluate_model(cfg, model_name)


main = run
if __name__ == "__main__":
    sys.exit(main())
