"""Every decimal figure in the README's results tables occurs in a committed file under
`reports/` (or `benchmarks/results/`) that code wrote: no number typed in by hand."""

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


def results_table_figures(readme: str) -> list[tuple[int, str]]:
    """(line number, figure) for every decimal number in a table row of `## Results`."""
    figures, inside = [], False
    for number, line in enumerate(readme.splitlines(), start=1):
        if line.startswith("## "):
            inside = line.strip() == "## Results"
        elif inside and line.startswith("|") and not set(line) <= set("|-: "):
            figures += [(number, match) for match in DECIMAL.findall(line)]
    return figures


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, str):
        yield from (float(m) for m in DECIMAL.findall(value))


def report_values(roots: Iterable[Path]) -> tuple[set[float], set[str]]:
    """Every number in the JSON files, and every decimal literal in the text files."""
    numbers: set[float] = set()
    literals: set[str] = set()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix == ".json":
                numbers.update(_numbers(json.loads(path.read_text())))
            elif path.suffix in {".csv", ".md", ".txt"}:
                text = path.read_text(errors="replace")
                literals.update(DECIMAL.findall(text))
                numbers.update(float(m) for m in DECIMAL.findall(text))
    return numbers, literals


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


def unbacked(readme: str, roots: Iterable[Path]) -> list[str]:
    numbers, literals = report_values(roots)
    return [
        f"README.md:{line}: {figure}"
        for line, figure in results_table_figures(readme)
        if not backed(figure, numbers, literals)
    ]


def test_every_results_figure_comes_from_a_committed_report() -> None:
    readme = (REPO / "README.md").read_text()
    assert results_table_figures(readme), "no results tables found under '## Results'"
    missing = unbacked(readme, [REPO / source for source in SOURCES])
    assert not missing, "figures with no file behind them:\n" + "\n".join(missing)


def test_a_typed_in_figure_is_caught(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"accuracy": 0.8667, "n": 30}))
    readme = (
        "## Results\n\n| model | Ac |\n| --- | --- |\n| a | 86.7 |\n| b | 0.867 |\n| c | 0.912 |\n"
    )
    assert unbacked(readme, [tmp_path]) == ["README.md:7: 0.912"]
    outside = "## Install\n| x | 0.912 |\n"
    assert unbacked(outside, [tmp_path]) == []


@pytest.mark.parametrize(
    ("figure", "ok"), [("0.87", True), ("86.67", True), ("0.86", False), ("8.7", False)]
)
def test_rounding_rule(figure: str, ok: bool) -> None:
    assert backed(figure, {0.8667}, set()) is ok
