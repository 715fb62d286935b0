"""CI metric-regression gate: fail when a gated metric moves the wrong way by more than its
tolerance, when a new model or metric lands below its floor, or when a warning flag flips on.

`dvc metrics diff` shows changes but has no tolerance and never fails, so CI could merge a
silently worse model. This compares the metrics JSON files under `reports/metrics/` (one flat
object per file) with a baseline and exits 1 on any regression. Each gated metric has a
direction (`higher` is better, or `lower` for loss-like metrics), a tolerance (0 <= t < 0.5)
and a floor that a metric absent from the baseline (a new model or metric) must reach. Flags
(`shortcut_warning`, `model_input_warning`, `collapsed`) must not turn true. A gated metric
or flag that no metrics file holds (of either side, or of the workspace's `reports/metrics/`)
is refused as a typo: the check would otherwise vanish silently.

Sampling noise: a model trained from random initialisation is bit-for-bit reproducible only on
the same CPU and library build; on another machine it lands elsewhere within the noise of its
test set (30 demo images: one image is 0.033). So the allowed change of a metric is the larger
of its tolerance and `ci_scale` times the baseline's own 95% CI half-width (`<metric>_ci_low`
/ `_ci_high` in the same file; 2 by default: the difference of two independent estimates,
sqrt(2), widened for the retrained model's own spread and the number of metrics gated at
once, conf/gate/default.yaml). A drop the test set cannot resolve is not called a
regression; a collapse, a label inversion or a broken stage still is. `ci_scale: 0` gates
on the tolerances alone.
Files matching `flags_only` (default: cross-dataset results) are gated on their flags alone and
their metrics are listed as "reported": how a model transfers to another dataset swings with
its random initialisation far beyond the test set's sampling noise (docs/evaluation.md). A
baseline flagged `collapsed` sets no standard for the metrics of its hard calls either: a model
that called every cell ALL has a recall of ~1 and an accuracy of the class share, so a model
that learns to tell the classes apart would "regress" on them; they are reported, while its
threshold-free metrics (`THRESHOLD_FREE`: ROC-AUC ranks P(ALL), a loss or Dice never reads
the call) and `collapsed` itself are still gated.

Baseline (default: `--baseline-ref HEAD`, like `dvc metrics diff`): the same files committed at a
git ref (`origin/main` in a pull request), or `--baseline-dir`, a folder laid out like
`reports/metrics/`. Rules come from the `gate` section of params.yaml (conf/gate/).

Exit codes: 0 no regression, 1 regression (a gated metric moved too far, became null, went
missing, landed below its floor, or a flag flipped), 2 the gate could not run (bad ref,
unreadable file, no metrics, bad rule).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError

METRICS_DIR = "reports/metrics"
DEFAULT_KEY = "default"
# Float noise must not turn a drop of exactly the tolerance into a failure.
EPS = 1e-9

DIRECTIONS = ("higher", "lower")
MAX_TOLERANCE = 0.5  # a tolerance this wide would let any rate through: the gate would be off
MAX_CI_SCALE = 3.0  # beyond ~3 half-widths the allowance no longer means "sampling noise"

# Not computed from the 0.5-threshold calls, so still a standard when the calls collapsed.
THRESHOLD_FREE = frozenset({"roc_auc", "val_loss_mean", "cell_dice_mean", "nucleus_dice_mean"})

Metrics = dict[str, dict[str, object]]
Status = Literal[
    "ok", "regressed", "missing", "new", "n/a", "below floor", "flipped", "reported", "unheld"
]
VERDICTS: dict[str, str] = {
    "ok": "✅",
    "reported": "➖ reported (flags only)",
    "unheld": "➖ reported (baseline collapsed)",
    "new": "✅ new",
    "n/a": "✅ n/a",
    "regressed": "❌ regressed",
    "missing": "❌ missing",
    "below floor": "❌ new, below floor",
    "flipped": "❌ warning raised",
}


@dataclass(frozen=True)
class Rule:
    """How one metric is gated: which way is better, how far it may move (at least
    `tolerance`, at least `ci_scale` CI half-widths of the baseline), and the floor (for
    `lower`: the ceiling) a new value must respect."""

    direction: str = "higher"
    tolerance: float = 0.02
    floor: float | None = None
    ci_scale: float = 0.0

    def allowance(
        self, baseline: float | None, ci_low: float | None, ci_high: float | None
    ) -> float:
        """The change allowed from `baseline`: the tolerance, or the baseline's sampling noise
        on the worse side when that is wider."""
        bound = ci_high if self.direction == "lower" else ci_low
        if baseline is None or bound is None or not self.ci_scale:
            return self.tolerance
        return max(self.tolerance, self.ci_scale * abs(baseline - bound))


class GateError(PipelineError):
    """The gate cannot run (bad ref, unreadable file, bad tolerance); the message says why."""


@dataclass(frozen=True)
class Row:
    """One gated metric of one metrics file (`file` is relative to the metrics folder);
    `allowed` is the change it was allowed (its tolerance, or the baseline's noise if wider)."""

    file: str
    metric: str
    baseline: float | None
    current: float | None
    allowed: float
    status: Status

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "missing", "below floor", "flipped")


def _number(value: object, where: str) -> float | None:
    """JSON null and NaN (json.dump writes NaN for an undefined ROC-AUC) both mean "no value"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateError(f"{where}: expected a number or null, got {value!r}")
    if math.isinf(value):
        raise GateError(f"{where}: {value!r} is not a measurement")
    return None if math.isnan(value) else float(value)


def _flag(value: object, where: str) -> bool:
    """A flag is JSON true/false (or null/absent = false): the string "false" is not false."""
    if value is not None and not isinstance(value, bool):
        raise GateError(f"{where}: expected true, false or null, got {value!r}")
    return bool(value)


def parse_metrics(text: str, where: str) -> dict[str, object]:
    """Parse one flat metrics JSON; values are checked only for the metrics that are gated."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GateError(f"{where}: expected a JSON object of metric -> value")
    return data


def _read_text(path: Path) -> str:
    """A metrics file's text. A folder named `*.json`, an unreadable or non-UTF-8 file is the
    gate's error naming it: a traceback exits 1, which CI reads as a regression."""
    if path.is_dir():
        raise GateError(f"{path}: a folder, not a metrics file (rename it: no *.json folders)")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise GateError(f"{path}: cannot be read ({exc.strerror})") from None


def read_metrics_dir(folder: Path | str) -> Metrics:
    """Every `*.json` under `folder`, keyed by its relative path (`synthetic/svm_hog.json`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GateError(f"metrics folder {folder} does not exist")
    return {
        path.relative_to(folder).as_posix(): parse_metrics(_read_text(path), str(path))
        for path in sorted(folder.rglob("*.json"))
    }


def _git(args: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8"
        )
    except FileNotFoundError:
        raise GateError("git is not installed; use --baseline-dir instead") from None
    except UnicodeDecodeError as exc:  # a committed metrics file that is not UTF-8
        raise GateError(f"`git {' '.join(args)}`: not UTF-8 text ({exc.reason})") from None
    if done.returncode:
        raise GateError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def read_metrics_at_ref(ref: str, folder: Path | str = METRICS_DIR) -> Metrics:
    """The metrics files committed under `folder` at git `ref` (what `dvc metrics diff` reads).

    Returns {} when the ref exists but has no metrics yet, so the first commit that adds them
    reports every metric as new instead of failing.
    """
    folder = Path(folder).resolve()
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], folder.parent).strip())
    except GateError as exc:
        raise GateError(f"{folder.parent} is not inside a git repository: {exc}") from None
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top)
    except GateError:
        raise GateError(
            f"baseline ref {ref!r} is not a commit in this repository "
            "(in CI: fetch it first, e.g. `git fetch origin main` or checkout with fetch-depth: 0)"
        ) from None
    if not folder.is_relative_to(top.resolve()):
        raise GateError(f"{folder} is outside the git repository {top}")
    prefix = folder.relative_to(top.resolve()).as_posix()
    names = _git(["ls-tree", "-r", "--name-only", ref, "--", prefix], top).splitlines()
    return {
        name[len(prefix) + 1 :]: parse_metrics(
            _git(["show", f"{ref}:{name}"], top), f"{ref}:{name}"
        )
        for name in sorted(names)
        if name.endswith(".json")
    }


def resolve_tolerances(
    metrics: Sequence[str], tolerances: Mapping[str, float], overrides: Sequence[str] = ()
) -> dict[str, float]:
    """Tolerance of every gated metric, after `metric=value` overrides (`default=` included).

    A key that is neither gated nor `default` is refused (a typo would otherwise silently keep
    the old tolerance), and so is a tolerance outside [0, 0.5): one that wide switches the
    gate off.
    """
    merged = {str(k): v for k, v in tolerances.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            merged[key.strip()] = float(value)
        except ValueError:
            raise GateError(f"--tolerance {item!r} is not of the form metric=number") from None
    allowed = {*metrics, DEFAULT_KEY}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise GateError(f"tolerance for {unknown} but the gated metrics are {list(metrics)}")
    result = {}
    for metric in metrics:
        value = merged.get(metric, merged.get(DEFAULT_KEY))
        if value is None:
            raise GateError(
                f"no tolerance for gated metric {metric!r} and no gate.tolerances.default"
            )
        if not (isinstance(value, int | float) and 0 <= value < MAX_TOLERANCE):
            raise GateError(
                f"gate.tolerances.{metric} must be a number in [0, {MAX_TOLERANCE}), got {value!r}"
            )
        result[metric] = float(value)
    return result


def resolve_rules(gate: Mapping[str, object], overrides: Sequence[str] = ()) -> dict[str, Rule]:
    """The `gate` config (metrics: name -> direction, tolerances, floors) as one rule per
    gated metric, every value checked."""
    directions = dict(gate.get("metrics") or {})
    bad = {m: d for m, d in directions.items() if d not in DIRECTIONS}
    if bad:
        raise GateError(f"gate.metrics: directions must be one of {DIRECTIONS}, got {bad}")
    tolerances = resolve_tolerances(list(directions), dict(gate.get("tolerances") or {}), overrides)
    ci_scale = gate.get("ci_scale", 0.0)
    if isinstance(ci_scale, bool) or not (
        isinstance(ci_scale, int | float) and 0 <= ci_scale <= MAX_CI_SCALE
    ):
        raise GateError(f"gate.ci_scale must be a number in [0, {MAX_CI_SCALE}], got {ci_scale!r}")
    floors = {str(k): v for k, v in dict(gate.get("floors") or {}).items()}
    unknown = sorted(set(floors) - {*directions, DEFAULT_KEY})
    if unknown:
        raise GateError(f"gate.floors for {unknown} but the gated metrics are {list(directions)}")
    rules = {}
    for metric, direction in directions.items():
        floor = floors.get(metric, floors.get(DEFAULT_KEY))
        if floor is not None and not isinstance(floor, int | float):
            raise GateError(f"gate.floors.{metric} must be a number or null, got {floor!r}")
        rules[metric] = Rule(
            direction,
            tolerances[metric],
            None if floor is None else float(floor),
            float(ci_scale),
        )
    return rules


def check_names(metrics: Sequence[str], flags: Sequence[str], *sides: Metrics) -> None:
    """Refuse a gated metric or flag that no metrics file of `sides` holds: `compare` skips
    what a file lacks, so a typo (`acuracy`, `colapsed`) would drop its check silently."""
    present = {key for side in sides for data in side.values() for key in data}
    for section, names in (("gate.metrics", metrics), ("gate.flags", flags)):
        for name in names:
            if name not in present:
                raise GateError(
                    f"{section}: {name!r} is in no metrics file: a typo, or a metric "
                    "this pipeline does not write (remove it from the gate)"
                )


def _workspace_metrics(current: Path) -> list[Metrics]:
    """The workspace's own `reports/metrics/` when the current side is another folder (a
    snapshot's): it says what this pipeline writes, so a metric that one dataset's runs lack
    (C-NMC has no segmentation masks, hence no Dice) is not taken for a typo."""
    from pipeline import config

    folder = config.workspace_root() / METRICS_DIR
    if not folder.is_dir() or folder.resolve() == current.resolve():
        return []
    return [read_metrics_dir(folder)]


def _status(
    baseline: float | None, current: float | None, rule: Rule, allowed: float, new: bool = False
) -> Status:
    """`new`: the baseline lacks the metric (a new model or metric), which must then reach
    its floor: NaN or null does not (a null that was null before is "n/a")."""
    if baseline is None:
        if current is None:
            return "below floor" if new and rule.floor is not None else "n/a"
        return "below floor" if _beyond(current, rule.floor, rule.direction, 0.0) else "new"
    if current is None:
        return "missing"
    return "regressed" if _beyond(current, baseline, rule.direction, allowed) else "ok"


def _beyond(value: float, reference: float | None, direction: str, tolerance: float) -> bool:
    """`value` is worse than `reference` by more than `tolerance`, in the metric's direction."""
    if reference is None:
        return False
    if direction == "lower":
        return value > reference + tolerance + EPS
    return value < reference - tolerance - EPS


def compare(
    baseline: Metrics,
    current: Metrics,
    rules: Mapping[str, Rule | float],
    flags: Sequence[str] = (),
    flags_only: Sequence[str] = (),
) -> list[Row]:
    """One row per gated metric (the keys of `rules`; a bare number is a higher-is-better
    tolerance) and per flag present in either side's file.

    The allowed change is the rule's tolerance, or its `ci_scale` times the baseline's CI
    half-width (from `<metric>_ci_low` / `_ci_high` of the baseline file) when that is wider.
    Present in the baseline but absent or null now -> "missing" (a model or metric vanished);
    absent from the baseline -> "new", or "below floor" when it misses its floor or has no
    value (null, NaN) to hold against it; a flag that
    is true now but was not -> "flipped". Files matching a `flags_only` glob (relative path)
    have their metrics listed as "reported" and only their flags gated; so are the hard-call
    metrics of files whose baseline is flagged `collapsed` ("unheld": a collapse's recall is
    not a standard, its ROC-AUC is).
    """
    rules = {m: r if isinstance(r, Rule) else Rule(tolerance=float(r)) for m, r in rules.items()}
    rows = []
    for file in sorted(baseline.keys() | current.keys()):
        old, new = baseline.get(file, {}), current.get(file, {})
        gated = not any(fnmatch.fnmatch(file, pattern) for pattern in flags_only)
        baseline_collapsed = "collapsed" in flags and _flag(
            old.get("collapsed"), f"baseline {file}: collapsed"
        )
        for metric, rule in rules.items():
            if metric not in old and metric not in new:
                continue
            where = f"{file}: {metric}"
            b = _number(old.get(metric), f"baseline {where}")
            c = _number(new.get(metric), f"current {where}")
            low = _number(old.get(f"{metric}_ci_low"), f"baseline {where}_ci_low")
            high = _number(old.get(f"{metric}_ci_high"), f"baseline {where}_ci_high")
            allowed = rule.allowance(b, low, high)
            if not gated:
                status: Status = "reported"
            elif baseline_collapsed and metric not in THRESHOLD_FREE:
                status = "unheld"
            else:
                status = _status(b, c, rule, allowed, new=metric not in old)
            rows.append(Row(file, metric, b, c, allowed, status))
        for flag in flags:
            if flag not in old and flag not in new:
                continue
            was = _flag(old.get(flag), f"baseline {file}: {flag}")
            now = _flag(new.get(flag), f"current {file}: {flag}")
            status = "flipped" if now and not was else "ok"
            rows.append(Row(file, flag, float(was), float(now), 0.0, status))
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def render_markdown(rows: Sequence[Row], baseline_label: str = "baseline") -> str:
    """The gate's verdict and a table of every gated metric, failures first."""
    failed = [r for r in rows if r.failed]
    verdict = (
        f"❌ **{len(failed)} regression(s)**" if failed else "✅ **no regression**"
    ) + f" against {baseline_label} ({len(rows)} gated metric values)"
    lines = [
        "### Metric regression gate",
        "",
        verdict,
        "",
        "| file / model | metric | baseline | current | delta | allowed change | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: not r.failed):
        name = r.file.removesuffix(".json")
        lines.append(
            f"| {name} | {r.metric} | {_fmt(r.baseline)} | {_fmt(r.current)} "
            f"| {_fmt(r.delta, signed=True)} | {r.allowed:.4f} | {VERDICTS[r.status]} |"
        )
    return "\n".join(lines) + "\n"


def verdict_line(rows: Sequence[Row]) -> str:
    """One line naming every failure, printed after the table: a CI log's tail (all a
    truncated log keeps) then still says why the gate failed."""
    failed = [r for r in rows if r.failed]
    if not failed:
        return f"gate: no regression ({len(rows)} gated metric values)"
    named = "; ".join(
        f"{r.file.removesuffix('.json')} {r.metric} {VERDICTS[r.status].removeprefix('❌ ')}"
        + (
            f" {_fmt(r.delta, signed=True)} (allowed {r.allowed:.4f})"
            if r.delta is not None
            else ""
        )
        for r in failed
    )
    return f"gate: {len(failed)} regression(s): {named}"


def _gate_config(params: Path | None) -> DictConfig:
    """The validated `gate` section: params.yaml when present, else conf/ composed afresh."""
    from pipeline import config

    if params is not None and not params.is_file():
        raise GateError(f"--params {params}: no such file")
    path = params or config.workspace_root() / config.PARAMS_FILE
    try:
        cfg = config.load(path) if path.exists() else config.compose()
    except config.ConfigError as exc:
        raise GateError(f"config error: {exc}") from None
    return cfg.gate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.gate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--baseline-ref",
        default="HEAD",
        help="git ref whose committed metrics are the baseline (default: HEAD)",
    )
    source.add_argument(
        "--baseline-dir", type=Path, help="folder laid out like reports/metrics/ (instead of a ref)"
    )
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        default=Path(METRICS_DIR),
        help=f"current metrics (default: {METRICS_DIR})",
    )
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="override a tolerance, e.g. accuracy=0.05 or default=0.03 (repeatable)",
    )
    parser.add_argument(
        "--params", type=Path, help="params file with the gate section (default: params.yaml)"
    )
    parser.add_argument(
        "--summary", type=Path, help="also append the table to this file ($GITHUB_STEP_SUMMARY)"
    )
    args = parser.parse_args(argv)
    try:
        gate = _gate_config(args.params)
        rules = resolve_rules(OmegaConf.to_container(gate, resolve=True), args.tolerance)
        current = read_metrics_dir(args.metrics_dir)
        if not current:
            raise GateError(f"no metrics files under {args.metrics_dir}: run `dvc repro` first")
        if args.baseline_dir:
            label = f"`{args.baseline_dir}`"
            baseline = read_metrics_dir(args.baseline_dir)
        else:
            label = f"`{args.baseline_ref}`"
            baseline = read_metrics_at_ref(args.baseline_ref, args.metrics_dir)
        known = [baseline, current, *_workspace_metrics(args.metrics_dir)]
        check_names(list(rules), list(gate.flags), *known)
        rows = compare(baseline, current, rules, list(gate.flags), list(gate.flags_only))
    except GateError as exc:
        print(f"gate error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"gate error: none of the gated metrics {list(rules)} found", file=sys.stderr)
        return 2
    table = render_markdown(rows, label)
    print(table)
    print(verdict_line(rows), file=sys.stderr)
    if args.summary:
        try:
            with args.summary.open("a") as fh:
                fh.write(table + "\n")
        except OSError as exc:  # exit 1 would read as a regression
            print(f"gate error: cannot write the summary: {exc}", file=sys.stderr)
            return 2
    return int(any(r.failed for r in rows))


if __name__ == "__main__":
    sys.exit(main())
