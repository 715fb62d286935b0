"""Stage labels_table: what ingest depends on for a labels table outside `dataset.root`."""

import yaml

from pipeline import paths
from tests.test_dvc_deps import REPO
from tests.workspace import make_workspace, run_stage


def test_the_table_beside_the_root_is_copied_and_other_adapters_get_an_empty_file(tmp_path):
    images = tmp_path / "my_dataset" / "images"
    images.mkdir(parents=True)
    table = tmp_path / "my_dataset" / "labels.csv"  # csv_example: labels_file ../labels.csv
    table.write_text("file,diagnosis,patient\na.png,ALL,P1\n")
    root = make_workspace(tmp_path / "ws", ["dataset=csv_example", f"dataset.root={images}"])
    assert run_stage(root, "labels_table") == 0
    copy = root / paths.labels_copy("csv_example")
    assert copy.read_bytes() == table.read_bytes()
    table.write_text("file,diagnosis,patient\na.png,normal,P1\n")  # a label corrected
    assert run_stage(root, "labels_table") == 0
    assert copy.read_bytes() == table.read_bytes()
    table.unlink()  # ingest names the missing table; this stage only records it
    assert run_stage(root, "labels_table") == 0
    assert copy.read_bytes() == b""
    other = make_workspace(tmp_path / "other")  # the synthetic demo: no table
    assert run_stage(other, "labels_table") == 0
    assert (other / paths.labels_copy("synthetic")).read_bytes() == b""


def test_ingest_depends_on_the_copy_made_on_every_run():
    """DVC tracks only the root: an edited table outside it left ingest 'up to date' with the
    old labels (dvc repro after editing cnmc_prelim_test's or csv_example's table)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    copy = "artifacts/${dataset.name}/labels_table.csv"
    assert copy in stages["ingest"]["deps"]
    assert stages["labels_table"]["always_changed"] is True
    assert [next(iter(out)) for out in stages["labels_table"]["outs"]] == [copy]
