"""What every stage entry point shares: config loading, logging, and clean failure."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from pipeline.config import ConfigError, load
from pipeline.io import BadInputError, ImageReadError

log = logging.getLogger("pipeline")

# Errors whose message already says what is wrong and where: no traceback for the user.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    BadInputError,
    ImageReadError,
    FileNotFoundError,
)


def stage(func: Callable[[DictConfig], None]) -> Callable[[list[str] | None], int]:
    """Wrap `func(cfg)` as a CLI: `python -m pipeline.stages.X [key=value ...]`.

    Overrides on the command line are for ad-hoc runs; under DVC the stage reads params.yaml.
    """

    @functools.wraps(func)
    def main(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        name = func.__module__.rsplit(".", 1)[-1]
        try:
            cfg = load(overrides=sys.argv[1:] if argv is None else argv)
            func(cfg)
        except EXPECTED_ERRORS + _extra_expected() as exc:
            print(f"error in stage {name}: {exc}", file=sys.stderr)
            return 1
        return 0

    return main


def _extra_expected() -> tuple[type[BaseException], ...]:
    """Model/tracking errors that are user-facing (imported lazily: heavy modules)."""
    found: list[type[BaseException]] = []
    for module, names in (
        ("pipeline.models.weights", ("MissingWeightsError",)),
        ("pipeline.tracking", ("TrackingUnavailableError",)),
    ):
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(found)
