"""`python -m pipeline.stages.choose_upstream <name> <label>:<snapshot>[,<snapshot>] ...`: choose
an upstream setting (crop rule, segmentation) or a model inside each CV fold, with no training.

In every fold it keeps the setting (or, with `best`, the model) whose published predictions
score best on that fold's validation part, and only the kept one scores the test fold; the
rules and checks are `pipeline.runs.choice`'s. Writes `reports/upstream/<dataset>/<name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.config import ConfigError
from pipeline.runs.choice import ENSEMBLE_KEYS, choose_and_write


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.choose_upstream", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("name", help="output name under reports/upstream/<dataset>/")
    parser.add_argument(
        "settings", nargs="+", metavar="LABEL:SNAPSHOT[,SNAPSHOT]",
        help="a setting's label and its snapshot folders (under reports/experiments/ or a path)",
    )  # fmt: skip
    parser.add_argument(
        "--models", nargs="+", required=True, help="models (and `ensemble`, `best`)"
    )
    parser.add_argument(
        "--ensemble", nargs="+", default=[], metavar="KEY=VALUE",
        help=f"the ensemble's {', '.join(ENSEMBLE_KEYS)} instead of the first setting's",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        written = choose_and_write(args.name, args.settings, args.models, args.ensemble)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"choose_upstream: {exc}", file=sys.stderr)
        return 2
    print(f"choose_upstream: wrote {written} and {written.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
