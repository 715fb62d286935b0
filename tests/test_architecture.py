"""Imports only point down the layers of docs/architecture.md, lazy imports included, and the
module graph has no cycle: a concept lives in one layer and lower layers never reach up."""

from __future__ import annotations

import pytest

from tests.test_dvc_deps import REPO, imported_modules, module_file

# Highest first; a module may import its own layer and those below (docs/architecture.md).
LAYERS: dict[str, int] = {
    "pipeline.stages": 7,
    "pipeline.predict": 7,
    "pipeline.gate": 7,
    "pipeline.report": 6,
    "pipeline.runs": 6,
    "pipeline.evaluate": 5,
    "pipeline.inference": 4,
    "pipeline.tracking": 4,
    "pipeline.models": 3,
    "pipeline.train": 2,
    "pipeline.preprocess": 2,
    "pipeline.data": 2,
    "pipeline.config": 1,
    "pipeline.schema": 1,
    "pipeline.errors": 1,
    "pipeline.io": 1,
    "pipeline.paths": 1,
    "pipeline.manifest": 1,
    "pipeline.members": 1,
    "pipeline.labels": 1,
    "pipeline.parallel": 1,
    "pipeline": 1,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module}: not in any layer of tests/test_architecture.py (add it)")


def modules() -> dict[str, set[str]]:
    """Every pipeline module -> the pipeline modules it imports (files, not packages)."""
    graph = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        relative = path.relative_to(REPO)
        name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        targets = set()
        for target in imported_modules(relative):
            file = module_file(target)
            if file is not None and file != relative:
                targets.add(".".join(file.with_suffix("").parts).removesuffix(".__init__"))
        graph[name] = targets
    return graph


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer(module)


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_point_down(module: str) -> None:
    upward = sorted(t for t in modules()[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports higher layers: {upward}"


def test_no_import_cycle() -> None:
    graph = modules()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target) :], target] if target in trail else [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_layer_table_matches_the_docs() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    for prefix in LAYERS:
        if prefix != "pipeline":
            assert f"`{prefix.removeprefix('pipeline.')}" in text, prefix


if __name__ == "__main__":
    for module, targets in sorted(modules().items()):
        up = [t for t in targets if layer(t) > layer(module)]
        if up:
            print(module, "->", up)
