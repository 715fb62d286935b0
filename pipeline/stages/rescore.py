"""`python -m pipeline.stages.rescore <snapshot>`: a published run's test, cross-dataset and
CV metrics, recomputed from its committed predictions with today's metrics code.

For when the way metrics are computed changes while the run's models are not at hand to re-run
`evaluate` or `cv`; `pipeline.runs.rescore` says what is checked and where results go.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runs.rescore import rescore


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.rescore", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("snapshot", type=Path, help="reports/experiments/<name>")
    args = parser.parse_args(argv)
    try:
        written = rescore(args.snapshot)
    except (FileNotFoundError, PipelineError) as exc:
        print(f"rescore: {exc}", file=sys.stderr)
        return 2
    listing = "".join(f"\n  {path}" for path in written)
    print(f"rescore: {len(written)} metrics file(s) rewritten{listing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
