"""Stage generate_demo: write the embedded synthetic datasets (both styles) deterministically."""

import sys

from omegaconf import DictConfig

from pipeline import paths
from pipeline.data.synthetic import generate_demo
from pipeline.stages.common import log, stage


@stage
def run(cfg: DictConfig) -> None:
    generate_demo(cfg.demo, cfg.seed, paths.DEMO)  # replaces the folder atomically
    log.info("demo datasets written to %s", paths.DEMO)


main = run
if __name__ == "__main__":
    sys.exit(main())
