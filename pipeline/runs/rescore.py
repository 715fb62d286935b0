"""A published run's test, cross-dataset and CV metrics, recomputed from its committed
predictions with today's metrics code (`python -m pipeline.stages.rescore <snapshot>`).

For when the way metrics are computed changes (an interval rule, what selection reads) while
the run's models are not at hand to re-run `evaluate` or `cv`. The run's snapshot
(`reports/experiments/<name>/`, see `snapshot`) holds the metrics files as the run wrote
them, its params and its `dvc.lock`:
- each test split's `reports/plots/<ds>/<model>/predictions.csv` must have the md5 the lock
  records for it; each cross-dataset `predictions.csv` is the snapshot's own copy; each CV's
  `cv/<model>/` copy must have the folder md5 the lock records for `reports/cv/<ds>/<model>`,
  and its summary is recomputed fold by fold (test rows scored; validation rows give the kept
  model's validation scores);
- they are scored again with the run's own seed, bootstrap size, confidence and collapse share;
- `reports/metrics/<ds>/...` gets the result where it differs from what the run wrote, with a
  `rescored` record: the code revision, the predictions file and md5 it came from, and the
  values it replaced. Where `reports/metrics/` publishes another run's file, the result goes
  to the snapshot's `rescored/<ds>/...` instead. The snapshot's own files are left as the run
  wrote them (its lock still holds).

Not a DVC stage: it re-derives figures of a finished run; `dvc repro` re-runs `evaluate`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import config, paths, tracking
from pipeline.errors import PipelineError
from pipeline.evaluate.crossval import summary_from_predictions
from pipeline.evaluate.metrics import compute_metrics
from pipeline.io import (
    atomic_write_json,
    dvc_dir_md5,
    file_digest,
    locked_outs,
    read_json,
    read_yaml,
)
from pipeline.labels import y_true

log = logging.getLogger(__name__)
RESCORED = "rescored"  # in a snapshot: today's figures of a run whose files are not published


class RescoreError(PipelineError, ValueError):
    """A snapshot whose predictions cannot be proven to be the run's."""


@dataclass(frozen=True)
class Scored:
    """One metrics file of the run: where its scores come from and where it is published."""

    predictions: Path  # relative to the workspace root
    predictions_md5: str
    column: str | None  # the P(ALL) column of `predictions`; None: a CV's table, per fold
    as_written: Path  # the run's own metrics file, in the snapshot
    published: Path  # the workspace's copy, relative to the root


def run_params(snapshot: Path) -> dict[str, Any]:
    """What the run scored with, from its own params (not validated against today's schema:
    an older run's params may lack keys added since)."""
    params = read_yaml(snapshot / "params.yaml")
    wanted = {
        "dataset": ("dataset", "name"),
        "seed": ("seed",),
        "n_boot": ("evaluate", "bootstrap_samples"),
        "confidence": ("evaluate", "confidence"),
        "collapse_share": ("evaluate", "collapse_share"),
    }
    found = {}
    for name, keys in wanted.items():
        node = params
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise RescoreError(f"{snapshot / 'params.yaml'}: no key {'.'.join(keys)}")
            node = node[key]
        found[name] = node
    return found


def scored_files(snapshot: Path, root: Path) -> list[Scored]:
    """The run's test-split, cross-dataset and CV metrics files and the predictions behind
    them."""
    dataset = run_params(snapshot)["dataset"]
    lock = read_yaml(snapshot / "dvc.lock")
    locked = locked_outs((lock.get("stages") or {}).values(), ("outs", "metrics"))
    found = []
    for as_written in sorted((snapshot / "metrics").glob("*.json")):
        model = as_written.stem
        predictions = paths.plots(dataset, model) / "predictions.csv"
        if str(predictions) not in locked:
            continue  # not a test split's metrics (split, segmentation, shortcut)
        md5 = file_digest(root / predictions, "md5") if (root / predictions).exists() else None
        if md5 != locked[str(predictions)]:
            raise RescoreError(
                f"{predictions}: md5 {md5} is not the {locked[str(predictions)]} that "
                f"{snapshot / 'dvc.lock'} records: these are not the run's test predictions"
            )
        published = paths.metrics(dataset, model)
        found.append(Scored(predictions, md5, "p_all", as_written, published))
    for table in sorted((snapshot / "metrics" / "cross").glob("*/predictions.csv")):
        target, md5 = table.parent.name, file_digest(table, "md5")
        for as_written in sorted(table.parent.glob("*.json")):
            published = paths.cross_dir(dataset) / target / as_written.name
            scored = Scored(table.relative_to(root), md5, as_written.stem, as_written, published)
            found.append(scored)
    for as_written in sorted((snapshot / "metrics" / "cv").glob("*.json")):
        model = as_written.stem
        folder = paths.cv_dir(dataset, model).as_posix()  # the lock records it whole
        if folder not in locked or not read_json(as_written).get("enabled"):
            continue
        copy = snapshot / "cv" / model
        if not copy.is_dir() or dvc_dir_md5(copy) != locked[folder]:
            raise RescoreError(
                f"{copy}: not the {folder} that {snapshot / 'dvc.lock'} records "
                f"({locked[folder]}): these are not the run's CV predictions"
            )
        table = copy / "predictions.csv"
        scored = Scored(
            table.relative_to(root), file_digest(table, "md5"), None, as_written,
            paths.cv_metrics(dataset, model),
        )  # fmt: skip
        found.append(scored)
    if not found:
        raise RescoreError(
            f"{snapshot}: no test-split, cross-dataset or CV metrics whose predictions its "
            "dvc.lock records"
        )
    return found


def rescored_metrics(snapshot: Path, root: Path | None = None) -> dict[Path, dict[str, Any]]:
    """Where each of the run's metrics files goes under today's metrics code (relative to
    `root`, see `destination`) and its content; a `rescored` record says what changed from
    the run's own file. Files of another published run whose figures did not change are left
    out: the snapshot's as-written file already holds them."""
    root = root or config.workspace_root()
    run, results = _rescored(snapshot, root)
    out = {}
    for published, original, content in results:
        target = destination(run, published, original, root)
        if target == published or figures(content) != figures(original):
            out[target] = content
    return out


def destination(run: str, published: Path, original: dict, root: Path) -> Path:
    """The published file when it holds this run's figures (as written, or rescored from this
    run before); else (another run's, or none published) the snapshot's own `rescored/` copy,
    so published figures are never overwritten with another run's, and this run's are still
    recomputed where they are quoted."""
    target = root / published
    current = read_json(target) if target.exists() else None
    rescored_from = ((current or {}).get("rescored") or {}).get("run")
    if current is not None and (current == original or rescored_from == run):
        return published
    return Path(run).parent / RESCORED / published.relative_to(paths.METRICS)  # run: its lock


def rescore(snapshot: Path, root: Path | None = None) -> list[Path]:
    """Write each metrics file whose figures changed where `destination` says; returns those
    written."""
    root = root or config.workspace_root()
    written = []
    for target, content in rescored_metrics(snapshot, root).items():
        path = root / target
        if figures(read_json(path) if path.exists() else None) == figures(content):
            continue
        atomic_write_json(path, content)
        written.append(target)
        changed = (content.get("rescored") or {}).get("replaced", {})
        log.info("%s: rescored (%s)", target, ", ".join(sorted(changed)) or "as written")
    return written


def _rescored(snapshot: Path, root: Path) -> tuple[str, list[tuple[Path, dict, dict]]]:
    """The run's lock as a `rescored` record names it (relative to `root`), and (published
    path, the run's own content, today's content) of every scored file."""
    snapshot = (snapshot if snapshot.is_absolute() else root / snapshot).resolve()
    if not snapshot.is_relative_to(root.resolve()):
        raise RescoreError(
            f"{snapshot}: not in this workspace ({root}); rescore a snapshot of this clone's "
            f"{paths.REPORTS / 'experiments'}, whose predictions it reads"
        )
    if not snapshot.exists():
        raise RescoreError(f"{snapshot}: no such snapshot folder")
    if not all((snapshot / name).is_file() for name in ("params.yaml", "dvc.lock")):
        raise RescoreError(
            f"{snapshot}: not a snapshot folder (a folder with the run's params.yaml and "
            "dvc.lock, written by `python -m pipeline.stages.snapshot`)"
        )
    run = str(snapshot.relative_to(root.resolve()) / "dvc.lock")
    params = run_params(snapshot)
    revision = tracking.code_and_machine()["git_revision"]
    settings = {k: params[k] for k in ("n_boot", "confidence", "seed", "collapse_share")}
    results, tables = [], {}  # a cross-dataset table holds every model's column: read it once
    for item in scored_files(snapshot, root):
        if item.predictions not in tables:
            tables[item.predictions] = pd.read_csv(root / item.predictions)
        frame = tables[item.predictions]
        original = read_json(item.as_written)
        if item.column is None:  # a CV's table, summarised as the cv stage does
            fresh = summary_from_predictions(
                frame, original["folds"], original["repeats"], **settings
            )
        elif item.column not in frame:
            raise RescoreError(
                f"{item.predictions}: no column {item.column!r} for {item.published}"
            )
        else:
            fresh = compute_metrics(
                y_true(frame["label"]),
                frame[item.column].to_numpy(),
                groups=frame["group"].astype(str).to_numpy(),
                **settings,
            )
        replaced = {k: original.get(k) for k, v in fresh.items() if not same(original.get(k), v)}
        content = {**original, **{k: fresh[k] for k in replaced}}
        if replaced:
            content["rescored"] = {
                "git_revision": revision,
                "from": str(item.predictions),
                "from_md5": item.predictions_md5,
                "run": run,
                "replaced": replaced,
            }
        results.append((item.published, original, content))
    return run, results


def same(a: Any, b: Any) -> bool:
    """Equal, numbers to rounding (a mean summed in another order differs in its last bit)."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def figures(content: dict[str, Any] | None) -> dict[str, Any] | None:
    """A metrics file without the revision that rescored it (which says nothing of figures)."""
    if content is None or "rescored" not in content:
        return content
    record = {k: v for k, v in content["rescored"].items() if k != "git_revision"}
    return {**content, "rescored": record}
