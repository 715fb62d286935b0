"""Every row of the results tables (the README's `## Results`, all of docs/results.md) is backed
by one committed file under `reports/`
(or `benchmarks/results/`) that code wrote: each of the row's decimal figures occurs in that
same file. A bag of all numbers would back almost any figure (thousands of per-image
probabilities); one file per row ties a row to the run it reports. Per-image files
(predictions, ROC points, training history) are not sources: no README figure is read from them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("reports", "benchmarks/results")
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")


PER_IMAGE = ("predictions", "roc.csv", "history.csv")
PER_IMAGE_COLUMN = "p_all"  # a CSV with this column holds per-image predictions, whatever its name


def per_image(path: Path) -> bool:
    if any(marker in path.name for marker in PER_IMAGE):
        return True
    if path.suffix != ".csv":
        return False
    with path.open(errors="replace") as handle:
        return PER_IMAGE_COLUMN in handle.readline().strip().split(",")


def results_table_rows(
    text: str, section: str | None = "## Results"
) -> list[tuple[int, list[str]]]:
    """(line number, decimal figures) of every table row with figures under `section` (the
    whole text when None)."""
    rows, inside = [], section is None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## ") and section is not None:
            inside = line.strip() == section
        elif inside and line.startswith("|") and (figures := DECIMAL.findall(line)):
            rows.append((number, figures))
    return rows


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "rescored":  # the values a rescoring replaced are no longer figures
                yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, str):
        yield from (float(m) for m in DECIMAL.findall(value))


def superseded(roots: Iterable[Path]) -> set[Path]:
    """A snapshot's own metrics files that `pipeline.stages.rescore` rescored: the published
    copy (with its `rescored` record) holds the figures now."""
    found = set()
    for root in roots:
        for path in root.rglob("*.json"):
            content = json.loads(path.read_text())
            record = content.get("rescored") if isinstance(content, dict) else None
            if isinstance(record, dict) and "run" in record:
                metrics = path.relative_to(root).parts  # metrics/<dataset>/...
                run = root.parent / Path(record["run"]).parent
                found.add(run / "metrics" / Path(*metrics[2:]))
    return found


def report_values(roots: Iterable[Path]) -> list[tuple[set[float], set[str]]]:
    """Per source file: its numbers (JSON values, decimals in text) and its decimal literals."""
    sources = []
    roots = list(roots)
    skipped = superseded(roots)
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or per_image(path) or path in skipped:
                continue
            if path.suffix == ".json":
                sources.append((set(_numbers(json.loads(path.read_text()))), set()))
            elif path.suffix in {".csv", ".md", ".txt"}:
                literals = set(DECIMAL.findall(path.read_text(errors="replace")))
                sources.append(({float(m) for m in literals}, literals))
    return sources


def backed(figure: str, numbers: set[float], literals: set[str]) -> bool:
    """The figure as written, or a stored value rounded to its decimals (as a fraction or %)."""
    if figure in literals:
        return True
    decimals = len(figure.split(".")[1])
    target = float(figure)
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(
        math.isfinite(v) and (abs(v - target) <= tolerance or abs(100 * v - target) <= tolerance)
        for v in numbers
    )


def unbacked(
    text: str,
    roots: Iterable[Path],
    name: str = "README.md",
    section: str | None = "## Results",
) -> list[str]:
    """The rows no single source file backs, with the figures the closest file lacks."""
    sources = report_values(roots)
    failures = []
    for line, figures in results_table_rows(text, section):
        lacking = min(
            ([f for f in figures if not backed(f, *source)] for source in sources),
            key=len,
            default=figures,
        )
        if lacking:
            failures.append(f"{name}:{line}: no one file holds {', '.join(lacking)}")
    return failures


@pytest.mark.parametrize(
    ("name", "section"), [("README.md", "## Results"), ("docs/results.md", None)]
)
def test_every_results_figure_comes_from_a_committed_report(name: str, section: str | None) -> None:
    text = (REPO / name).read_text()
    assert results_table_rows(text, section), f"no results tables found in {name}"
    missing = unbacked(text, [REPO / source for source in SOURCES], name, section)
    assert not missing, "rows with no file behind them:\n" + "\n".join(missing)


def test_a_typed_in_figure_is_caught(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"accuracy": 0.8667, "n": 30}))
    readme = (
        "## Results\n\n| model | Ac |\n| --- | --- |\n| a | 86.7 |\n| b | 0.867 |\n| c | 0.912 |\n"
    )
    assert unbacked(readme, [tmp_path]) == ["README.md:7: no one file holds 0.912"]
    outside = "## Install\n| x | 0.912 |\n"
    assert unbacked(outside, [tmp_path]) == []


def test_a_row_mixing_two_runs_is_caught(tmp_path: Path) -> None:
    """Each figure exists somewhere, but no single file holds the row: stale or mixed."""
    (tmp_path / "old.json").write_text(json.dumps({"accuracy": 0.633, "roc_auc": 0.698}))
    (tmp_path / "new.json").write_text(json.dumps({"accuracy": 0.767, "roc_auc": 0.827}))
    (tmp_path / "predictions.csv").write_text("id,p_all\na,0.912\n")  # per-image: not a source
    (tmp_path / "none.csv").write_text("id,p_all\nb,0.912\nc,0.827\n")  # per-image by columns
    readme = (
        "## Results\n\n| m | Ac | AUC |\n| --- | --- | --- |\n"
        "| ok | 0.767 | 0.827 |\n| mixed | 0.767 | 0.698 |\n| per-image | 0.912 | 0.827 |\n"
    )
    assert unbacked(readme, [tmp_path]) == [
        "README.md:6: no one file holds 0.698",
        "README.md:7: no one file holds 0.912",
    ]


@pytest.mark.parametrize(
    ("figure", "ok"), [("0.87", True), ("86.67", True), ("0.86", False), ("8.7", False)]
)
def test_rounding_rule(figure: str, ok: bool) -> None:
    assert backed(figure, {0.8667}, set()) is ok


def test_a_rescored_figure_is_read_from_the_published_file(tmp_path: Path) -> None:
    """After `rescore`, neither the replaced value nor the snapshot's as-written copy backs a
    README figure: only the rescored value does."""
    reports = tmp_path / "reports"
    run = reports / "experiments" / "run" / "metrics"
    run.mkdir(parents=True)
    (run / "m.json").write_text(json.dumps({"f1_ci_low": 0.870, "n": 26}))
    (reports / "metrics" / "ds").mkdir(parents=True)
    record = {"run": "reports/experiments/run/dvc.lock", "replaced": {"f1_ci_low": 0.870}}
    (reports / "metrics" / "ds" / "m.json").write_text(
        json.dumps({"f1_ci_low": 0.851, "n": 26, "rescored": record})
    )
    table = "## Results\n\n| m | F1 low |\n| --- | --- |\n| {} | {} |\n"
    assert unbacked(table.format("new", "0.851"), [reports]) == []
    assert unbacked(table.format("old", "0.870"), [reports]) == [
        "README.md:5: no one file holds 0.870"
    ]
