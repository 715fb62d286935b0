"""`python -m pipeline.stages.snapshot <name> [--force]`: freeze a published experiment.

Copies the composed `params.yaml`, the `dvc.lock` that produced the outputs, the dataset's
metrics, CV and segmentation files, the report and a `provenance.json` into
`reports/experiments/<name>/`, after checking that every copied file is the locked run's
(`pipeline.runs.snapshot` says how). Run it in the workspace right after `dvc exp run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.runs.snapshot import snapshot


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.stages.snapshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("name", help="folder name under reports/experiments/")
    parser.add_argument("--force", action="store_true", help="replace an existing snapshot")
    parser.add_argument(
        "--stages", nargs="+", metavar="PATTERN", help="keep only these stages (fnmatch)"
    )
    parser.add_argument("--note", help="what the files cannot say (e.g. shared machine)")
    args = parser.parse_args(argv)
    try:
        out = snapshot(args.name, args.stages, args.note, args.force)
    except (OSError, ValueError) as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 2
    print(f"snapshot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
