"""The notebooks run top to bottom on a real (tiny) workspace and are committed without outputs.

Each notebook is executed with the venv's `python3` kernel on the `demo_workspace` fixture via
`ALL_DETECT_ROOT`; cells tagged `figure` must draw at least one image, except those also tagged
`real-data` when `../shared/data/ALL_IDB2` is absent (they print a skip message instead).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, SHARED_DATA
from tests.workspace import MODELS

NOTEBOOKS = REPO / "notebooks"
# What each notebook must show in its text outputs besides its figures.
EXPECTED_TEXT = {
    "01_data_and_segmentation.ipynb": ("cell_dice_mean", "after augmentation"),
    "02_run_comparison.ipynb": MODELS,
}
NAMES = tuple(EXPECTED_TEXT)


def _tags(cell: nbformat.NotebookNode) -> set[str]:
    return set(cell.metadata.get("tags", []))


def _has_png(cell: nbformat.NotebookNode) -> bool:
    return any(
        out.output_type == "display_data" and "image/png" in out.get("data", {})
        for out in cell.get("outputs", [])
    )


def _text(nb: nbformat.NotebookNode) -> str:
    """All text the notebook printed or displayed (stream and text/plain outputs)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def execute(name: str, root: Path, save_to: Path) -> nbformat.NotebookNode:
    """Run the notebook in notebooks/ against the workspace `root`; keep a copy in `save_to`."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALL_DETECT_ROOT", str(root))
        # The notebook must find the workspace's own store, not the test's isolated one.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            client.execute()
        finally:
            nbformat.write(nb, save_to / name)  # inspect the outputs after a failure
    return nb


def test_committed_notebooks_have_no_outputs():
    found = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in found} >= set(NAMES)
    for path in found:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [
            i
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them before committing"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_workspace(name, demo_workspace, tmp_path):
    nb = execute(name, demo_workspace, tmp_path)
    errors = [
        out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    assert not errors, errors
    figures = [cell for cell in nb.cells if "figure" in _tags(cell)]
    assert figures, f"{name}: no cell tagged 'figure'"
    have_real = (SHARED_DATA / "ALL_IDB2").exists()
    missing = [
        cell.source.splitlines()[0]
        for cell in figures
        if (have_real or "real-data" not in _tags(cell)) and not _has_png(cell)
    ]
    assert not missing, f"{name}: figure cells drew nothing: {missing}"
    shown = _text(nb)
    assert str(demo_workspace) in shown, "the notebook did not read ALL_DETECT_ROOT"
    absent = [text for text in EXPECTED_TEXT[name] if text not in shown]
    assert not absent, f"{name}: outputs do not mention {absent}"
