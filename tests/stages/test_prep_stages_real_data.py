"""The preprocessing stages on the real ALL-IDB2 copy in ../shared/data (skipped when absent)."""

import json

import pytest

from pipeline import manifest, paths
from tests.conftest import real_data
from tests.workspace import PREP_STAGES, make_workspace, run_stage

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def idb2_workspace(tmp_path_factory):
    images, masks = real_data("ALL_IDB2", "img"), real_data("ALL_IDB2_masks", "dev")
    root = make_workspace(
        tmp_path_factory.mktemp("idb2"),
        ["dataset=all_idb2", f"dataset.root={images}", f"dataset.masks={masks}"],
    )
    for stage in PREP_STAGES[1:]:  # the demo generator is not needed
        assert run_stage(root, stage) == 0, stage
    return root


def test_all_260_cells_are_segmented_and_scored_against_the_dev_masks(idb2_workspace):
    seg = json.loads((idb2_workspace / paths.metrics("all_idb2", "segmentation")).read_text())
    assert seg["n_cell_not_found"] == 0
    assert seg["n_images"] == 260
    assert seg["n_scored"] == 130  # the odd-numbered images have masks
    assert seg["cell_dice_mean"] >= 0.90


def test_split_keeps_duplicates_together_and_is_stratified(idb2_workspace):
    table = manifest.read(idb2_workspace / paths.split_table("all_idb2"))
    assert len(table) == 260
    split = table.set_index("id")["split"]
    assert split["Im001_1"] == split["Im067_1"] and split["Im223_0"] == split["Im257_0"]
    counts = table.groupby(["split", "label"]).size()
    assert counts["test"].min() >= 12 and counts["train"].min() >= 100


def test_training_folder_is_augmented_and_evaluation_folders_are_not(idb2_workspace):
    table = manifest.read(idb2_workspace / paths.prepared("all_idb2") / "manifest.csv")
    augmented = table[table["augmented_from"] != ""]
    assert set(augmented["split"]) == {"train"}
    originals = (table["augmented_from"] == "") & (table["split"] == "train")
    assert len(augmented) == round(originals.sum() * 1.43) - originals.sum()
    assert all((idb2_workspace / path).is_file() for path in table["path"])
