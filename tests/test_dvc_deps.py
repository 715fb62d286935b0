"""Every stage in dvc.yaml depends on all the pipeline code it runs.

A stage whose entry module imports (transitively, anywhere in a module: lazy imports count) a
`pipeline/` file that none of its deps covers would be called up to date by `dvc repro` after
that file changed: a stale result. `python -m tests.test_dvc_deps` prints what each stage lacks.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@cache
def module_file(module: str) -> Path | None:
    """The file of a `pipeline.*` module or package, relative to the repo; None otherwise."""
    if module != "pipeline" and not module.startswith("pipeline."):
        return None
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(REPO)
    return None


def imported_modules(path: Path) -> set[str]:
    """`pipeline` modules named by any import in the file (`from x import y` names module
    x.y when there is one, else x)."""
    tree = ast.parse((REPO / path).read_text(), filename=str(path))
    package = ".".join(path.with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:  # `from pkg import module` names the module only
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) is not None else base)
    return {m for m in found if module_file(m) is not None}


def closure(entry: str) -> set[Path]:
    """Files of `entry` and of every pipeline module it imports, transitively, plus the
    `__init__.py` of every package on the way (Python runs them on import)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts)):
            todo.extend([".".join(parts[:i])])
        path = module_file(module)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return seen


def stage_entries() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (entry module, deps) for every stage whose command runs a module."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        if "-m" in words:
            out[name] = (words[words.index("-m") + 1], [str(d) for d in body.get("deps", [])])
    return out


def uncovered(entry: str, deps: list[str]) -> list[str]:
    covered = [Path(d) for d in deps]
    return sorted(
        str(path)
        for path in closure(entry)
        if not any(path == dep or dep in path.parents for dep in covered)
    )


@pytest.mark.parametrize("stage", sorted(stage_entries()))
def test_stage_deps_cover_the_code_it_runs(stage: str) -> None:
    entry, deps = stage_entries()[stage]
    missing = uncovered(entry, deps)
    assert not missing, f"dvc.yaml stage {stage!r} runs {entry} but does not depend on {missing}"


def unused(entry: str, deps: list[str]) -> list[str]:
    """Code deps the stage does not run: they would re-run it for nothing."""
    files = closure(entry)
    return sorted(
        dep
        for dep in deps
        if dep.startswith("pipeline")
        and not any(path == Path(dep) or Path(dep) in path.parents for path in files)
    )


@pytest.mark.parametrize("stage", sorted(stage_entries()))
def test_stage_deps_name_no_code_it_does_not_run(stage: str) -> None:
    entry, deps = stage_entries()[stage]
    extra = unused(entry, deps)
    assert not extra, f"dvc.yaml stage {stage!r} depends on {extra}, which {entry} never imports"


def test_the_check_fails_without_the_models_dep() -> None:
    entry, deps = stage_entries()["evaluate"]
    assert "pipeline/models" in deps
    missing = uncovered(entry, [d for d in deps if d != "pipeline/models"])
    assert any(m.startswith("pipeline/models/") for m in missing)


def test_closure_follows_lazy_and_relative_imports() -> None:
    files = {str(p) for p in closure("pipeline.stages.cv")}
    assert "pipeline/tracking.py" in files  # imported inside run()
    assert "pipeline/stages/__init__.py" in files and "pipeline/__init__.py" in files


if __name__ == "__main__":
    for name, (entry, deps) in sorted(stage_entries().items()):
        print(name, "missing:", uncovered(entry, deps), "unused:", unused(entry, deps))
    sys.exit(0)
