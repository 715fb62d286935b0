"""Freeze a published experiment (`python -m pipeline.stages.snapshot <name> [--force]`).

Copies what a reader needs to trust a figure into `reports/experiments/<name>/`: the composed
`params.yaml` and the `dvc.lock` that produced the outputs, the dataset's metrics, CV and
segmentation files and the report, plus `provenance.json` (git revision, DVC experiment name,
machine, torch threads, time, each stage's wall minutes from its MLflow run, and `--note`:
what the files cannot say, e.g. that other work shared the machine). Run it in the workspace
right after `dvc exp run` finished; not a DVC stage (it records a finished run, it does not
produce one).

`--stages ingest crop 'cv@*'` freezes a run of some stages only (`dvc exp run ... cv@resnet50`):
the lock keeps just those stages, and only the report files they wrote are copied, so files
of an earlier run of other stages cannot pass for this run's. An existing snapshot is a
published record: it is replaced only with `--force`.

A snapshot must not pair a lock with figures it did not produce: every copied file the lock
records must have its md5, and `params.yaml` must hold the params the lock's (kept) stages ran
with; otherwise nothing is written and `dvc status` / `dvc repro` is the way on. Files no stage
of the lock records (another dataset's segmentation report) are copied as they are.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline import config, paths, tracking
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, dvc_dir_md5, file_digest, locked_outs, read_yaml

EXPERIMENTS = paths.REPORTS / "experiments"
log = logging.getLogger("pipeline")
MISSING = object()  # a param the lock records that params.yaml lacks


class SnapshotError(PipelineError, ValueError):
    """The workspace is not what its dvc.lock records: a snapshot would publish figures or
    params that the lock beside them did not produce."""


def _kept_stages(lock: dict, patterns: Sequence[str]) -> dict:
    """The lock's stages matching any of `patterns` (fnmatch); a pattern matching none is an
    error naming it."""
    stages = lock.get("stages") or {}
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(stage, pattern) for stage in stages):
            raise ValueError(f"dvc.lock: no stage matches {pattern!r} (has: {sorted(stages)})")
    return {
        name: entry
        for name, entry in stages.items()
        if any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }


def _written(root: Path, stages: dict) -> set[Path]:
    """Files the stages' outs, metrics and plots hold, relative to `root`."""
    found = set()
    for entry in stages.values():
        for out in entry.get("outs") or []:
            path = root / out["path"]
            files = path.rglob("*") if path.is_dir() else [path]
            found |= {f.relative_to(root) for f in files if f.is_file()}
    return found


def _md5(path: Path) -> str:
    """What dvc.lock records for `path`: a file's md5, or a folder's `.dir` hash."""
    return dvc_dir_md5(path) if path.is_dir() else file_digest(path, "md5")


def _check_outs(root: Path, stages: dict, copied: Sequence[Path]) -> None:
    """Each copied file (relative to `root`) that an out of `stages` holds must have the md5
    the lock records for that out (a folder out is checked as a whole)."""
    outs = locked_outs(stages.values(), ("outs", "metrics", "plots"))
    locked = {Path(path): md5 for path, md5 in outs.items()}
    checked = set()
    for file in copied:
        out = next((o for o in (file, *file.parents) if o in locked), None)
        if out is None or out in checked:
            continue
        checked.add(out)
        if (found := _md5(root / out)) != locked[out]:
            raise SnapshotError(
                f"{out}: md5 {found} is not the {locked[out]} dvc.lock records: it is not "
                "the locked run's output; run `dvc repro` (see `dvc status`) first"
            )


def _check_params(root: Path, stages: dict) -> None:
    """The params files must hold every param the lock records for `stages`, at its value."""
    files: dict[str, dict] = {}
    for stage, entry in stages.items():
        for name, params in (entry.get("params") or {}).items():
            if name not in files:
                files[name] = read_yaml(root / name) if (root / name).is_file() else {}
            for key, locked in params.items():
                value = files[name]
                for part in str(key).split("."):
                    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                        value = value[int(part)]
                    else:
                        value = value.get(part, MISSING) if isinstance(value, dict) else MISSING
                if value != locked:
                    now = "missing" if value is MISSING else _short(value)
                    raise SnapshotError(
                        f"{name}: {key} is {now}, but dvc.lock's {stage} ran with "
                        f"{_short(locked)}; run `dvc repro` (see `dvc status`) first"
                    )


def _short(value: object, width: int = 60) -> str:
    """A param's value for an error line: a whole model section would drown the message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def snapshot(
    name: str,
    stages: Sequence[str] | None = None,
    note: str | None = None,
    force: bool = False,
) -> Path:
    """Write `reports/experiments/<name>/` atomically; returns it. `stages`: fnmatch patterns
    of the lock's stages to keep (default: all, and the dataset's whole report folders)."""
    root = config.workspace_root()
    target = root / EXPERIMENTS / config.plain_name(name, "snapshot name")
    if target.exists() and not force:
        raise FileExistsError(f"{target}: a published snapshot exists; --force replaces it")
    params = root / config.PARAMS_FILE
    lock = root / "dvc.lock"
    for required in (params, lock):
        if not required.exists():
            raise FileNotFoundError(f"{required}: run `dvc exp run` / `dvc repro` first")
    cfg = config.load(params)
    dataset = cfg.dataset.name
    sources = {
        "metrics": root / paths.METRICS / dataset,
        "cv": root / paths.REPORTS / "cv" / dataset,
        "segmentation": root / paths.REPORTS / "segmentation",
    }
    if not sources["metrics"].is_dir():
        raise FileNotFoundError(f"{sources['metrics']}: no metrics for dataset {dataset!r}")
    reports = [paths.REPORTS / "table2.md", paths.REPORTS / "table2.csv"]
    locked = read_yaml(lock)
    kept = None
    if stages:
        kept = {**locked, "stages": _kept_stages(locked, stages)}
        written = _written(root, kept["stages"])
        reports = [r for r in reports if r in written]
        folders = [source.relative_to(root) for source in sources.values()]
        copied = [f for f in sorted(written) if any(f.is_relative_to(d) for d in folders)]
    else:
        copied = [
            f.relative_to(root)
            for source in sources.values()
            if source.is_dir()
            for f in sorted(source.rglob("*"))
            if f.is_file()
        ]
    copied += [r for r in reports if (root / r).exists()]
    _check_params(root, (kept or locked).get("stages") or {})
    _check_outs(root, (kept or locked).get("stages") or {}, copied)
    try:
        tracking.check_reachable(cfg)  # MLflow's client would retry for minutes
        wall_minutes = tracking.stage_wall_minutes(
            cfg, dataset, (kept or locked).get("stages") or {}
        )
    except tracking.TrackingUnavailableError as exc:
        log.warning("no stage wall times in provenance.json: %s", exc)
        wall_minutes = None
    with atomic_path(target) as staged:
        staged.mkdir(parents=True)
        shutil.copy2(params, staged / "params.yaml")
        if kept is None:
            shutil.copy2(lock, staged / "dvc.lock")
            for part, source in sources.items():
                if source.is_dir():
                    shutil.copytree(source, staged / part)
        else:
            (staged / "dvc.lock").write_text(yaml.safe_dump(kept, sort_keys=False))
            for part, source in sources.items():
                folder = source.relative_to(root)
                for file in sorted(f for f in written if f.is_relative_to(folder)):
                    dest = staged / part / file.relative_to(folder)  # `target` is returned
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(root / file, dest)
        for report in reports:
            if (root / report).exists():
                shutil.copy2(root / report, staged / report.name)
        provenance = {
            "experiment": name,
            "dataset": dataset,
            **tracking.code_and_machine(),
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
            "stages": sorted(kept["stages"]) if kept is not None else "all",
            "dataset_root": str(cfg.dataset.root),
            "train_device": str(cfg.train.device),
            "train_threads": cfg.train.threads,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_minutes": wall_minutes,  # the newest finished MLflow run of each stage
            "note": note,
        }
        (staged / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return target
