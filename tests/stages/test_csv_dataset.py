"""A dataset added as one YAML, as a user would: conf/dataset/csv_example.yaml pointed at a
labels table with a patient column. The preparation stages run on it, and its patients stay
whole across the splits."""

import cv2
import numpy as np
import pytest

from pipeline import manifest, paths
from tests.workspace import make_workspace, run_stage

PATIENTS = {"ALL": [f"P{i}" for i in range(1, 7)], "normal": [f"N{i}" for i in range(1, 7)]}


@pytest.fixture
def csv_dataset(tmp_path):
    """Three cells (a bright disc on black, 48 px) per patient and the table naming them."""
    images = tmp_path / "my_dataset" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,diagnosis,patient"]
    for diagnosis, patients in PATIENTS.items():
        for patient in patients:
            for cell in range(3):
                image = np.zeros((48, 48, 3), np.uint8)
                colour = [int(v) for v in rng.integers(60, 255, 3)]
                cv2.circle(image, (24, 24), int(rng.integers(10, 20)), colour, -1)
                name = f"{patient}_{cell}.png"
                assert cv2.imwrite(str(images / name), image)
                rows.append(f"{name},{diagnosis},{patient}")
    (tmp_path / "my_dataset" / "labels.csv").write_text("\n".join(rows) + "\n")
    return images.parent  # the root: the table and the images folder


def test_a_csv_dataset_runs_the_prep_stages_with_patients_kept_whole(tmp_path, csv_dataset):
    root = make_workspace(
        tmp_path / "ws", ["dataset=csv_example", f"dataset.root={csv_dataset}", "seed=3"]
    )
    for stage in ("ingest", "segment", "crop", "split"):
        assert run_stage(root, stage) == 0, stage
    table = manifest.read(root / paths.split_table("csv_example"))
    assert len(table) == 36
    assert table.groupby("label")["group"].nunique().to_dict() == {"all": 6, "hem": 6}
    assert (table.groupby("group")["split"].nunique() == 1).all()  # no patient straddles
    assert set(table["split"]) == {"train", "val", "test"}
    assert table.set_index("id").loc["P1_0", "group"] == "subject:P1"
