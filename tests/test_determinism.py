"""Same seed, same data, CPU → byte-identical split and metrics, so CI can gate tightly."""

import pytest

from pipeline import manifest, paths
from tests.workspace import MODELS, make_workspace, run_pipeline


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    root = make_workspace(tmp_path_factory.mktemp("second_run"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        patch.setenv("ALL_DETECT_JOBS", "1")
        run_pipeline(root, report=False)
    return root


def test_split_is_identical(demo_workspace, second_run):
    def assignment(root):  # paths differ between workspaces; the assignment must not
        table = manifest.read(root / paths.split_table("synthetic"))
        return table.drop(columns=["path", "source"])

    assert assignment(demo_workspace).equals(assignment(second_run))


@pytest.mark.parametrize("model", MODELS)
def test_metrics_files_are_byte_identical(demo_workspace, second_run, model):
    relative = paths.metrics("synthetic", model)
    assert (demo_workspace / relative).read_bytes() == (second_run / relative).read_bytes()


def test_segmentation_metrics_are_byte_identical(demo_workspace, second_run):
    relative = paths.metrics("synthetic", "segmentation")
    assert (demo_workspace / relative).read_bytes() == (second_run / relative).read_bytes()
