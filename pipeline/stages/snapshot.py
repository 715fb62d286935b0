"""`python -m pipeline.stages.snapshot <name> [--dataset <name>]`: freeze a published experiment.

Copies what a reader needs to trust a figure into `reports/experiments/<name>/`: the composed
`params.yaml` and the `dvc.lock` that produced the outputs, the dataset's metrics, CV and
segmentation files and the report, plus `provenance.json` (git revision, DVC experiment name,
machine, torch threads, time). Run it in the workspace right after `dvc exp run` finished;
not a DVC stage (it records a finished run, it does not produce one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline import config, paths
from pipeline.io import atomic_path

EXPERIMENTS = paths.REPORTS / "experiments"


def _git(*args: str) -> str | None:
    done = subprocess.run(["git", *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def snapshot(name: str, dataset: str | None = None) -> Path:
    """Write `reports/experiments/<name>/` atomically; returns it."""
    root = config.workspace_root()
    params = root / config.PARAMS_FILE
    lock = root / "dvc.lock"
    for required in (params, lock):
        if not required.exists():
            raise FileNotFoundError(f"{required}: run `dvc exp run` / `dvc repro` first")
    cfg = config.load(params)
    dataset = dataset or cfg.dataset.name
    sources = {
        "metrics": root / paths.METRICS / dataset,
        "cv": root / paths.REPORTS / "cv" / dataset,
        "segmentation": root / paths.REPORTS / "segmentation",
    }
    if not sources["metrics"].is_dir():
        raise FileNotFoundError(f"{sources['metrics']}: no metrics for dataset {dataset!r}")
    with atomic_path(root / EXPERIMENTS / name) as staged:
        staged.mkdir(parents=True)
        shutil.copy2(params, staged / "params.yaml")
        shutil.copy2(lock, staged / "dvc.lock")
        for part, source in sources.items():
            if source.is_dir():
                shutil.copytree(source, staged / part)
        for report in ("table2.md", "table2.csv"):
            if (root / paths.REPORTS / report).exists():
                shutil.copy2(root / paths.REPORTS / report, staged / report)
        provenance = {
            "experiment": name,
            "dataset": dataset,
            "git_revision": _git("rev-parse", "HEAD"),
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
            "dataset_root": str(cfg.dataset.root),
            "train_device": str(cfg.train.device),
            "train_threads": cfg.train.threads,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staged / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return root / EXPERIMENTS / name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="folder name under reports/experiments/")
    parser.add_argument("--dataset", help="default: params.yaml's dataset.name")
    args = parser.parse_args(argv)
    try:
        out = snapshot(args.name, args.dataset)
    except FileNotFoundError as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 2
    print(f"snapshot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
