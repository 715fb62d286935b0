from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from pipeline.config import conf_dir
from pipeline.data import build_manifest
from pipeline.data.build import merge_duplicate_groups
from pipeline.io import BadInputError
from pipeline.manifest import COLUMNS
from pipeline.stages.common import ENVIRONMENT_ERRNOS

CNMC_FILES = {
    "all": ["UID_11_10_1_all.bmp", "UID_11_10_2_all.bmp", "UID_3_1_1_all.bmp"],
    "hem": ["UID_H10_43_1_hem.bmp", "UID_H22_31_15_hem.bmp"],
}


def make_cnmc(root: Path, write_image, folds=(0,), files=CNMC_FILES) -> Path:
    seed = 0
    for fold in folds:
        for label, names in files.items():
            for name in names:
                seed += 1
                write_image(root / "training_data" / f"fold_{fold}" / label / name, seed)
    return root


def make_all_idb2(root: Path, write_image, names=("Im001_1.tif", "Im002_1.jpg", "Im003_0.png")):
    for seed, name in enumerate(names):
        write_image(root / name, seed)
    return root


# --- C-NMC -----------------------------------------------------------------------------------


def test_cnmc_manifest_columns_labels_and_subject_groups(tmp_path, write_image, dataset_cfg):
    root = make_cnmc(tmp_path / "C-NMC_Leukemia", write_image)
    frame, problems = build_manifest(dataset_cfg(root, "cnmc", folds=[0]), tmp_path)
    assert problems == []
    assert tuple(frame.columns) == COLUMNS
    rows = frame.set_index("id")
    assert rows.loc["fold0_all_UID_11_10_1_all", "group"] == "subject:11"
    assert rows.loc["fold0_all_UID_11_10_2_all", "group"] == "subject:11"
    assert rows.loc["fold0_all_UID_3_1_1_all", "group"] == "subject:3"
    assert rows.loc["fold0_hem_UID_H10_43_1_hem", "group"] == "subject:H10"
    assert rows.loc["fold0_hem_UID_H22_31_15_hem", "label"] == "hem"
    assert frame["label"].value_counts().to_dict() == {"all": 3, "hem": 2}
    assert frame["id"].tolist() == sorted(frame["id"])
    for path in frame["path"]:
        assert Path(path).is_absolute() and Path(path).is_file()


def test_cnmc_folds_select_folders_and_null_means_all(tmp_path, write_image, dataset_cfg):
    root = make_cnmc(tmp_path / "cnmc", write_image, folds=(0, 1, 2))
    only_1, _ = build_manifest(dataset_cfg(root, "cnmc", folds=[1]), tmp_path)
    every, _ = build_manifest(dataset_cfg(root, "cnmc", folds=None), tmp_path)
    assert {i.split("_")[0] for i in only_1["id"]} == {"fold1"}
    assert len(every) == 3 * len(only_1)
    assert every["id"].is_unique


def test_a_relative_root_gives_workspace_relative_paths(tmp_path, write_image, dataset_cfg):
    # portable manifests: nothing in them depends on where the repository was cloned
    make_cnmc(tmp_path / "data" / "C-NMC_Leukemia", write_image)
    frame, _ = build_manifest(dataset_cfg("data/C-NMC_Leukemia", "cnmc", folds=[0]), tmp_path)
    assert all(p.startswith("data/C-NMC_Leukemia/training_data/") for p in frame["path"])
    assert (frame["source"] == frame["path"]).all()
    assert all((tmp_path / p).is_file() for p in frame["path"])


def test_cnmc_bad_names_and_label_mismatch_all_listed(tmp_path, write_image, dataset_cfg):
    root = make_cnmc(tmp_path / "cnmc", write_image)
    fold = root / "training_data" / "fold_0"
    bad = [
        write_image(fold / "all" / "UID_H10_43_1_hem.bmp", 90),  # label disagrees with folder
        write_image(fold / "hem" / "cell_17.bmp", 91),  # not the C-NMC pattern
        write_image(fold / "unknown" / "UID_1_1_1_all.bmp", 92).parent,  # unknown class folder
    ]
    (fold / "all" / "readme.txt").write_text("not an image")
    bad.append(fold / "all" / "readme.txt")
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "cnmc", folds=[0]), tmp_path)
    for path in bad:
        assert str(path) in str(info.value)
    assert len(info.value.problems) == len(bad)

    frame, problems = build_manifest(
        dataset_cfg(root, "cnmc", folds=[0], on_bad_file="skip"), tmp_path
    )
    assert len(frame) == 5 and len(problems) == len(bad)


def test_cnmc_one_cell_in_two_formats_is_a_bad_file_naming_both(tmp_path, write_image, dataset_cfg):
    # The release's BMP beside a PNG copy of the same cell (a conversion left half done, or
    # the BMP release unpacked over a PNG copy): one cell, two files, one id
    root = make_cnmc(tmp_path / "cnmc", write_image)
    cells = root / "training_data" / "fold_0" / "all"
    copy = write_image(cells / "UID_3_1_1_all.png", 93)
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "cnmc", folds=[0]), tmp_path)
    assert info.value.problems == [f"{copy}: same cell as UID_3_1_1_all.bmp"]
    frame, problems = build_manifest(
        dataset_cfg(root, "cnmc", folds=[0], on_bad_file="skip"), tmp_path
    )
    assert len(frame) == 5 and problems == info.value.problems
    assert str(cells / "UID_3_1_1_all.bmp") in frame["path"].tolist()


@pytest.mark.parametrize(
    ("layout", "folds", "needle"),
    [
        ("flat", [0], "not a C-NMC layout"),  # images straight under root
        ("fold_without_hem", [0], "hem: class folder missing"),
        ("ok", [3], "fold_3"),  # requested fold absent
    ],
)
def test_cnmc_structural_errors_raise_even_when_skipping(
    tmp_path, write_image, dataset_cfg, layout, folds, needle
):
    root = tmp_path / "cnmc"
    if layout == "flat":
        write_image(root / "UID_1_1_1_all.bmp")
    elif layout == "fold_without_hem":
        write_image(root / "training_data" / "fold_0" / "all" / "UID_1_1_1_all.bmp")
    else:
        make_cnmc(root, write_image)
    with pytest.raises(BadInputError, match=needle):
        build_manifest(dataset_cfg(root, "cnmc", folds=folds, on_bad_file="skip"), tmp_path)


def test_duplicates_merge_subjects_transitively(tmp_path, write_image, dataset_cfg):
    files = {
        "all": ["UID_1_1_1_all.bmp", "UID_2_1_1_all.bmp", "UID_2_1_2_all.bmp", "UID_3_1_1_all.bmp"],
        "hem": ["UID_H4_1_1_hem.bmp"],
    }
    root = make_cnmc(tmp_path / "cnmc", write_image, files=files)
    cells = root / "training_data" / "fold_0" / "all"
    # subject 1 == subject 2 (one image), subject 2 == subject 3 (another image): one chain
    (cells / "UID_2_1_1_all.bmp").write_bytes((cells / "UID_1_1_1_all.bmp").read_bytes())
    (cells / "UID_3_1_1_all.bmp").write_bytes((cells / "UID_2_1_2_all.bmp").read_bytes())
    frame, _ = build_manifest(dataset_cfg(root, "cnmc"), tmp_path)
    groups = frame.set_index("id")["group"]
    assert groups[groups.index.str.contains("all")].nunique() == 1
    assert groups["fold0_hem_UID_H4_1_1_hem"] == "subject:H4"


def test_merge_duplicate_groups_names_group_by_smallest_member():
    frame = pd.DataFrame({"group": ["b", "a", "c", "d", "d"], "sha256": ["x", "y", "x", "z", "y"]})
    assert merge_duplicate_groups(frame).tolist() == ["b", "a", "b", "a", "a"]


# --- ALL-IDB2 --------------------------------------------------------------------------------


def test_all_idb2_labels_groups_and_mixed_formats(tmp_path, write_image, dataset_cfg):
    root = make_all_idb2(
        tmp_path / "img",
        write_image,
        names=("Im001_1.tif", "Im002_1.JPG", "Im003_0.png", "Im004_0.tiff", "Im005_0.jpeg"),
    )
    (root / "Im001_1.tif.txt").write_text("notes next to the images are ignored")
    frame, problems = build_manifest(dataset_cfg(root, "all_idb2"), tmp_path)
    assert problems == []
    assert frame["id"].tolist() == ["Im001_1", "Im002_1", "Im003_0", "Im004_0", "Im005_0"]
    assert frame["label"].tolist() == ["all", "all", "hem", "hem", "hem"]
    assert frame["group"].tolist() == frame["id"].tolist()


def test_all_idb2_duplicates_share_group(tmp_path, write_image, dataset_cfg):
    root = make_all_idb2(tmp_path / "img", write_image, names=("Im001_1.png", "Im002_0.png"))
    (root / "Im067_1.png").write_bytes((root / "Im001_1.png").read_bytes())
    frame, _ = build_manifest(dataset_cfg(root, "all_idb2"), tmp_path)
    groups = frame.set_index("id")["group"]
    assert groups["Im067_1"] == groups["Im001_1"] == "Im001_1"
    assert groups["Im002_0"] == "Im002_0"


def test_one_image_under_two_labels_is_refused_or_dropped_with_its_copies(
    tmp_path, write_image, dataset_cfg
):
    names = ("Im001_1.png", "Im002_0.png", "Im004_0.png", "Im006_1.png")
    root = make_all_idb2(tmp_path / "img", write_image, names=names)
    (root / "Im003_0.png").write_bytes((root / "Im001_1.png").read_bytes())
    (root / "Im005_1.png").write_bytes((root / "Im004_0.png").read_bytes())
    with pytest.raises(BadInputError, match="one image, two labels") as info:
        build_manifest(dataset_cfg(root, "all_idb2"), tmp_path)
    message = str(info.value)
    assert "Im001_1.png: byte-identical to " in message and "Im003_0.png" in message
    assert "Im004_0.png: byte-identical to " in message and "Im005_1.png" in message
    assert message.count("labelled all and hem") == 2

    frame, problems = build_manifest(dataset_cfg(root, "all_idb2", on_bad_file="skip"), tmp_path)
    assert frame["id"].tolist() == ["Im002_0", "Im006_1"]
    assert len(problems) == 2


def test_all_idb2_bad_files_listed_together_or_skipped(tmp_path, write_image, dataset_cfg):
    root = make_all_idb2(tmp_path / "img", write_image)
    write_image(root / "Im004_0.png", 4)
    bad = {
        "Im010_1.jpg": b"",  # zero bytes
        "Im011_1.png": b"\x89PNG\r\n\x1a\n" + bytes(range(200)),  # corrupt
        "Im012_0.tif": b"just some text, not an image",  # non-image content
    }
    for name, content in bad.items():
        (root / name).write_bytes(content)
    write_image(root / "Im013_2.png", 13)  # unknown label
    write_image(root / "photo.jpg", 14)  # unknown label
    write_image(root / "more" / "Im015_1.png", 15)  # a subfolder: not where ALL-IDB2 lies
    (root / "notes.txt").write_text("not an image, not data: ignored")
    expected = [*bad, "Im013_2.png", "photo.jpg", "more"]
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "all_idb2"), tmp_path)
    message = str(info.value)
    assert all(name in message for name in expected)
    assert "Traceback" not in message and "cv2" not in message

    frame, problems = build_manifest(dataset_cfg(root, "all_idb2", on_bad_file="skip"), tmp_path)
    assert frame["id"].tolist() == ["Im001_1", "Im002_1", "Im003_0", "Im004_0"]
    assert sorted(next(n for n in expected if n in p) for p in problems) == sorted(expected)


def test_grayscale_rgba_and_16_bit_images_are_accepted(tmp_path, write_image, dataset_cfg):
    rng = np.random.default_rng(0)
    root = tmp_path / "img"
    write_image(root / "Im001_1.png", image=rng.integers(0, 256, (10, 10), dtype=np.uint8))
    write_image(root / "Im002_1.png", image=rng.integers(0, 256, (10, 10, 4), dtype=np.uint8))
    write_image(root / "Im003_0.tif", image=rng.integers(0, 65536, (10, 10, 3), dtype=np.uint16))
    write_image(root / "Im004_0.png", image=rng.integers(0, 65536, (10, 10), dtype=np.uint16))
    assert cv2.imread(str(root / "Im003_0.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    frame, problems = build_manifest(dataset_cfg(root, "all_idb2"), tmp_path)
    assert len(frame) == 4 and problems == []


def test_empty_class_raises_even_when_skipping(tmp_path, write_image, dataset_cfg):
    root = make_all_idb2(tmp_path / "img", write_image, names=("Im001_1.png", "Im002_1.png"))
    (root / "Im003_0.png").write_bytes(b"")  # the only healthy image is unusable
    with pytest.raises(BadInputError, match="class 'hem' has no usable images") as info:
        build_manifest(dataset_cfg(root, "all_idb2", on_bad_file="skip"), tmp_path)
    assert "Im003_0.png" in str(info.value)


@pytest.mark.parametrize("adapter", ["all_idb2", "cnmc", "folder"])
def test_missing_root_raises_even_when_skipping(tmp_path, dataset_cfg, adapter):
    cfg = dataset_cfg(
        tmp_path / "nowhere", adapter, on_bad_file="skip", classes={"all": ["a"], "hem": ["h"]}
    )
    with pytest.raises(BadInputError, match="does not exist"):
        build_manifest(cfg, tmp_path)


# --- folder-per-class ------------------------------------------------------------------------

CLASSES = {"all": ["Malignant", "blast"], "hem": ["Benign"]}


def make_folder(root: Path, write_image) -> Path:
    write_image(root / "Malignant" / "a 1.png", 1)
    write_image(root / "Malignant" / "early" / "deep" / "a2.jpg", 2)
    write_image(root / "blast" / "x.bmp", 3)
    write_image(root / "Benign" / "b1.png", 4)
    write_image(root / "Benign" / ".hidden" / "ignored.png", 5)
    (root / "README.md").write_text("files at the root are not classes")
    return root


def test_folder_maps_nested_class_folders(tmp_path, write_image, dataset_cfg):
    root = make_folder(tmp_path / "ds", write_image)
    frame, problems = build_manifest(dataset_cfg(root, "folder", classes=CLASSES), tmp_path)
    assert problems == []
    assert frame.set_index("id")["label"].to_dict() == {
        "Benign__b1": "hem",
        "Malignant__a_1": "all",
        "Malignant__early__deep__a2": "all",
        "blast__x": "all",
    }
    assert frame["group"].tolist() == frame["id"].tolist()


def test_folder_class_folders_by_path_below_the_root(tmp_path, write_image, dataset_cfg):
    """Folds merged by naming nested class folders: they were reported 'missing' (only the
    root's own children were looked up) and their parents 'not mapped'. What lies beside
    them on the way (a fold's stray folder or image) is named, as at the root."""
    root = tmp_path / "training_data"
    for seed, name in enumerate(["fold_1/all/a.png", "fold_1/hem/h.png", "fold_2/all/b.png"]):
        write_image(root / name, seed)
    classes = {"all": ["fold_1/all", "fold_2/all/"], "hem": ["fold_1/hem"]}
    frame, problems = build_manifest(dataset_cfg(root, "folder", classes=classes), tmp_path)
    assert problems == []
    assert frame.set_index("id")["label"].to_dict() == {
        "fold_1__all__a": "all", "fold_1__hem__h": "hem", "fold_2__all__b": "all"
    }  # fmt: skip
    write_image(root / "fold_2" / "extra" / "e.png", 7)
    write_image(root / "fold_2" / "stray.png", 8)
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "folder", classes=classes), tmp_path)
    assert str(info.value).count("\n") == 2
    assert "fold_2/extra: class folder not mapped" in str(info.value)
    assert "stray.png: an image in fold_2, outside every class folder" in str(info.value)


def test_a_folder_that_cannot_be_listed_stops_ingest_naming_it(
    tmp_path, write_image, dataset_cfg, monkeypatch
):
    """os.walk skips an unreadable folder silently: a patient's images vanished."""
    root = make_folder(tmp_path / "ds", write_image)
    listing = os.scandir

    def scandir(path="."):
        if Path(path).name == "early":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError) as info:
        build_manifest(dataset_cfg(root, "folder", classes=CLASSES), tmp_path)
    assert info.value.errno in ENVIRONMENT_ERRNOS  # one line from the stage, no traceback
    assert info.value.filename == str(root / "Malignant" / "early")


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"all": ["a"], "hem": ["a/b"]}, "'a/b' lies inside the class folder 'a'"),
        ({"all": ["../a"], "hem": ["b"]}, "'../a' must be a folder below the root"),
    ],
)
def test_folder_class_folders_inside_another_or_outside_the_root_are_refused(
    tmp_path, write_image, dataset_cfg, classes, message
):
    for seed, name in enumerate(["a/b/x.png", "a/y.png", "b/z.png"]):
        write_image(tmp_path / "ds" / name, seed)
    with pytest.raises(BadInputError, match=re.escape(message)):
        build_manifest(dataset_cfg(tmp_path / "ds", "folder", classes=classes), tmp_path)


def test_folder_follows_linked_batches_once_and_ignores_os_clutter(
    tmp_path, write_image, dataset_cfg
):
    root = make_folder(tmp_path / "ds", write_image)
    batch = tmp_path / "elsewhere" / "batch"
    write_image(batch / "linked.png", 8)
    (root / "Benign" / "linked_batch").symlink_to(batch, target_is_directory=True)
    (batch / "loop").symlink_to(root / "Benign", target_is_directory=True)  # a link cycle
    (root / "Benign" / "Thumbs.db").write_bytes(b"\x00" * 16)
    (root / "Malignant" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    frame, problems = build_manifest(dataset_cfg(root, "folder", classes=CLASSES), tmp_path)
    assert problems == []
    labels = frame.set_index("id")["label"]
    assert labels["Benign__linked_batch__linked"] == "hem"
    assert len(frame) == 5  # the cycle back into Benign/ adds nothing


def test_folder_ignores_the_macos_zip_folder_beside_the_classes(tmp_path, write_image, dataset_cfg):
    """A zip made on a Mac unpacks __MACOSX/ (resource forks) beside the class folders: it was
    an unmapped class folder, and ingest stopped on it."""
    root = make_folder(tmp_path / "ds", write_image)
    fork = root / "__MACOSX" / "Benign" / "._b1.png"
    fork.parent.mkdir(parents=True)
    fork.write_bytes(b"\x00\x05\x16\x07")
    frame, problems = build_manifest(dataset_cfg(root, "folder", classes=CLASSES), tmp_path)
    assert problems == [] and len(frame) == 4


def test_folder_accepts_omegaconf_section(tmp_path, write_image, dataset_cfg):
    root = make_folder(tmp_path / "ds", write_image)
    cfg = OmegaConf.create(dataset_cfg(root, "folder", classes=CLASSES))
    frame, _ = build_manifest(cfg, tmp_path)
    assert len(frame) == 4


def test_folder_unmapped_folders_and_non_images_listed(tmp_path, write_image, dataset_cfg):
    root = make_folder(tmp_path / "ds", write_image)
    write_image(root / "Mystery" / "m.png", 6)
    write_image(root / "Other" / "o.png", 7)
    (root / "Benign" / "labels.csv").write_text("a,b\n")
    write_image(root / "stray.png", 8)  # beside the class folders: in no class
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "folder", classes=CLASSES), tmp_path)
    for name in ("Mystery", "Other", "labels.csv", "stray.png: an image at the dataset root"):
        assert name in str(info.value)
    frame, problems = build_manifest(
        dataset_cfg(root, "folder", classes=CLASSES, on_bad_file="skip"), tmp_path
    )
    assert len(frame) == 4 and len(problems) == 4


def test_folder_missing_mapped_folder_and_empty_class_raise(tmp_path, write_image, dataset_cfg):
    root = make_folder(tmp_path / "ds", write_image)
    classes = {"all": ["Malignant", "Gone"], "hem": ["Benign"]}
    with pytest.raises(BadInputError, match="Gone"):
        build_manifest(dataset_cfg(root, "folder", classes=classes, on_bad_file="skip"), tmp_path)
    (root / "Empty").mkdir()
    classes = {"all": ["Malignant", "blast"], "hem": ["Benign", "Empty"]}
    for path in (root / "Benign").rglob("*.png"):
        path.unlink()
    with pytest.raises(BadInputError, match="class 'hem' has no usable images"):
        build_manifest(dataset_cfg(root, "folder", classes=classes), tmp_path)


def test_folder_classes_must_map_both_labels(tmp_path, write_image, dataset_cfg):
    root = make_folder(tmp_path / "ds", write_image)
    with pytest.raises(BadInputError, match="dataset.classes"):
        build_manifest(dataset_cfg(root, "folder", classes={"all": ["Malignant"]}), tmp_path)


PATIENT_FOLDER = r"^[^/]+/(?P<subject>P\d+)/"
TWO_FOLDERS = {"all": ["Malignant"], "hem": ["Benign"]}


def test_folder_group_pattern_keeps_a_patient_in_one_group(tmp_path, write_image, dataset_cfg):
    root = tmp_path / "ds"
    for seed, name in enumerate(["Malignant/P1/a.png", "Malignant/P1/b.png", "Benign/P2/c.png"]):
        write_image(root / name, seed)
    cfg = dataset_cfg(root, "folder", classes=TWO_FOLDERS, group_pattern=PATIENT_FOLDER)
    frame, problems = build_manifest(cfg, tmp_path)
    assert problems == []
    assert frame.set_index("id")["group"].to_dict() == {
        "Benign__P2__c": "subject:P2",
        "Malignant__P1__a": "subject:P1",
        "Malignant__P1__b": "subject:P1",
    }


def test_folder_image_without_a_subject_is_a_bad_file(tmp_path, write_image, dataset_cfg):
    root = tmp_path / "ds"
    write_image(root / "Malignant" / "P1" / "a.png", 1)
    write_image(root / "Benign" / "P2" / "c.png", 2)
    write_image(root / "Benign" / "loose.png", 3)  # directly in the class folder: no patient
    cfg = dataset_cfg(root, "folder", classes=TWO_FOLDERS, group_pattern=PATIENT_FOLDER)
    with pytest.raises(BadInputError, match="loose.png: no subject in 'Benign/loose.png'"):
        build_manifest(cfg, tmp_path)
    frame, problems = build_manifest(cfg | {"on_bad_file": "skip"}, tmp_path)
    assert len(frame) == 2 and len(problems) == 1


# --- csv -------------------------------------------------------------------------------------

# The shipped C-NMC preliminary-test config: numbered files, the original names in a column.
PRELIM = {
    key: value
    for key, value in yaml.safe_load(
        (conf_dir() / "dataset" / "cnmc_prelim_test.yaml").read_text()
    ).items()
    if key in ("labels_file", "image_dir", "columns", "classes", "group_pattern")
}


def make_csv(root: Path, write_image, rows: list[tuple[str, str]]) -> Path:
    """Images 1.bmp, 2.bmp ... in PRELIM's image_dir below `root`, one per (Patient_ID, labels)
    row, and the table where PRELIM's labels_file says (C-NMC's own layout)."""
    lines = ["Patient_ID,new_names,labels"]
    for number, (patient, label) in enumerate(rows, start=1):
        write_image(root / PRELIM["image_dir"] / f"{number}.bmp", number)
        lines.append(f"{patient},{number}.bmp,{label}")
    (root / PRELIM["labels_file"]).write_text("\n".join(lines) + "\n")
    return root


def test_csv_reads_labels_and_subjects_from_the_table(tmp_path, write_image, dataset_cfg):
    rows = [("UID_57_29_1_all.bmp", "1"), ("UID_57_30_2_all.bmp", "1"), ("UID_H3_1_1_hem.bmp", "0")]
    root = make_csv(tmp_path / "prelim" / "images", write_image, rows)
    frame, problems = build_manifest(dataset_cfg(root, "csv", **PRELIM), tmp_path)
    assert problems == []
    rows = frame.set_index("id")
    assert rows["label"].to_dict() == {"1": "all", "2": "all", "3": "hem"}
    assert rows["group"].to_dict() == {"1": "subject:57", "2": "subject:57", "3": "subject:H3"}


def test_csv_subject_column_as_it_is_path_pattern_or_one_group_each(
    tmp_path, write_image, dataset_cfg
):
    root = make_csv(tmp_path / "t" / "img", write_image, [("p7", "1"), ("p7", "0"), ("p8", "0")])
    plain = PRELIM | {"group_pattern": None}
    frame, _ = build_manifest(dataset_cfg(root, "csv", **plain), tmp_path)
    assert frame["group"].tolist() == ["subject:p7", "subject:p7", "subject:p8"]
    by_path = plain | {"columns": {"path": "new_names", "label": "labels"}}
    frame, _ = build_manifest(
        dataset_cfg(root, "csv", **by_path | {"group_pattern": r"(?P<subject>\d)\.bmp"}), tmp_path
    )
    assert frame["group"].tolist() == ["subject:1", "subject:2", "subject:3"]
    frame, _ = build_manifest(dataset_cfg(root, "csv", **by_path), tmp_path)
    assert frame["group"].tolist() == frame["id"].tolist()


def test_csv_cells_padded_with_spaces_read_as_their_trimmed_values(
    tmp_path, write_image, dataset_cfg
):
    # A table saved with ", " separators or trailing blanks (a hand-edited release CSV): the
    # label was already read trimmed, the file name and the subject must be too
    rows = [("UID_57_29_1_all.bmp", "1"), ("UID_H3_1_1_hem.bmp", "0")]
    root = make_csv(tmp_path / "prelim" / "images", write_image, rows)
    table = root / PRELIM["labels_file"]
    header, *lines = table.read_text().splitlines()
    padded = [", ".join(f"{cell} " for cell in line.split(",")) for line in lines]
    table.write_text("\n".join([header, *padded]) + "\n")
    frame, problems = build_manifest(dataset_cfg(root, "csv", **PRELIM), tmp_path)
    assert problems == []
    rows = frame.set_index("id")
    assert rows["label"].to_dict() == {"1": "all", "2": "hem"}
    assert rows["group"].to_dict() == {"1": "subject:57", "2": "subject:H3"}


def test_csv_bad_rows_and_unlisted_images_are_all_listed(tmp_path, write_image, dataset_cfg):
    rows = [("UID_1_1_1_all.bmp", "1"), ("UID_H2_1_1_hem.bmp", "0"), ("UID_3_1_1_all.bmp", "2")]
    root = make_csv(tmp_path / "t" / "img", write_image, rows)
    write_image(root / PRELIM["image_dir"] / "extra.png", 9)  # an image the table does not label
    write_image(root / PRELIM["image_dir"] / "4.bmp", 10)
    with (root / PRELIM["labels_file"]).open("a") as table:
        table.write("UID_1_1_1_all.bmp,1.bmp,1\n")  # listed twice
        table.write("UID_4_1_1_all.bmp,gone.bmp,1\n")  # no such file
        table.write("UID_5_1_1_all.bmp,../escape.bmp,1\n")  # outside the root
        table.write("nobody,4.bmp,0\n")  # no subject by the pattern
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "csv", **PRELIM), tmp_path)
    message = str(info.value)
    for expected in (
        "labels.csv:4: unknown label '2'",
        "labels.csv:5:",
        "listed again (first on line 2)",
        "labels.csv:6:",
        "gone.bmp: no such file under",
        "escape.bmp lies outside",
        "extra.png: image not listed",
        "4.bmp: no subject in 'nobody' (C-NMC_test_prelim_phase_data_labels.csv:8, column "
        "'Patient_ID') by dataset.group_pattern",
    ):
        assert expected in message
    frame, problems = build_manifest(
        dataset_cfg(root, "csv", **PRELIM, on_bad_file="skip"), tmp_path
    )
    assert frame["id"].tolist() == ["1", "2"] and len(problems) == 6


def test_csv_a_listed_file_named_in_another_case_is_missing_naming_the_file_there(
    tmp_path, write_image, dataset_cfg
):
    # Tables made on Windows or macOS may say 1.bmp where the release holds 1.BMP
    rows = [("UID_57_29_1_all.bmp", "1"), ("UID_H3_1_1_hem.bmp", "0")]
    root = make_csv(tmp_path / "prelim" / "images", write_image, rows)
    images = root / PRELIM["image_dir"]
    (images / "1.bmp").rename(images / "1.BMP")
    with pytest.raises(BadInputError) as info:
        build_manifest(dataset_cfg(root, "csv", **PRELIM), tmp_path)
    message = str(info.value)
    assert "labels.csv:2: " in message
    assert "1.bmp: no such file under" in message
    assert "(1.BMP is there: file names are case-sensitive)" in message
    assert "1.BMP: image not listed" in message


def test_csv_missing_table_or_column_is_fatal_naming_it(tmp_path, write_image, dataset_cfg):
    root = make_csv(tmp_path / "t" / "img", write_image, [("UID_1_1_1_all.bmp", "1")])
    skip = {"on_bad_file": "skip"}
    with pytest.raises(BadInputError, match="nothere.csv: labels table missing"):
        build_manifest(
            dataset_cfg(root, "csv", **PRELIM | {"labels_file": "nothere.csv"} | skip), tmp_path
        )
    renamed = PRELIM | {"columns": {"path": "file", "label": "labels"}} | skip
    with pytest.raises(BadInputError, match=r"no column 'file' \(dataset.columns.path\)"):
        build_manifest(dataset_cfg(root, "csv", **renamed), tmp_path)


def test_csv_table_outside_the_root_or_a_missing_image_dir_is_fatal_naming_the_key(
    tmp_path, write_image, dataset_cfg
):
    # DVC tracks dataset.root: a table outside it could be edited without re-running ingest
    rows = [("UID_1_1_1_all.bmp", "1"), ("UID_H2_1_1_hem.bmp", "0")]
    root = make_csv(tmp_path / "t" / "img", write_image, rows)
    (root.parent / "outside.csv").write_text((root / PRELIM["labels_file"]).read_text())
    skip = {"on_bad_file": "skip"}
    outside = PRELIM | {"labels_file": "../outside.csv"} | skip
    with pytest.raises(BadInputError, match=r"dataset.labels_file: .*outside.csv lies outside"):
        build_manifest(dataset_cfg(root, "csv", **outside), tmp_path)
    with pytest.raises(BadInputError, match=r"dataset.image_dir: .*nothere is not a folder"):
        build_manifest(
            dataset_cfg(root, "csv", **PRELIM | {"image_dir": "nothere"} | skip), tmp_path
        )
    frame, _ = build_manifest(dataset_cfg(root, "csv", **PRELIM), tmp_path)
    assert frame["id"].tolist() == ["1", "2"]  # ids start below image_dir


# --- synthetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "folds"), [("smear", None), ("cnmc", [0])])
def test_synthetic_reuses_real_layout_readers(tmp_path, write_image, dataset_cfg, style, folds):
    if style == "smear":
        root = make_all_idb2(tmp_path / "smear", write_image)
    else:
        root = make_cnmc(tmp_path / "cnmc", write_image)
    frame, _ = build_manifest(dataset_cfg(root, "synthetic", style=style, folds=folds), tmp_path)
    assert len(frame) == (3 if style == "smear" else 5)


def test_synthetic_needs_a_style(tmp_path, dataset_cfg):
    with pytest.raises(ValueError, match=r"dataset\.style"):
        build_manifest(dataset_cfg(tmp_path, "synthetic", style=None), tmp_path)


def test_ids_of_deeply_nested_long_names_stay_short_unique_and_writable(
    tmp_path, write_image, dataset_cfg
):
    """The id names every later file (<id>.png); made of 3 names of 91 characters it was 280,
    past the 255-byte file-name limit: ingest passed and crop died with a traceback."""
    long = "x" * 90
    for seed, label in enumerate(("all", "hem")):
        for i in range(2):
            path = tmp_path / label / f"{long}A" / f"{long}B" / f"{long}{i}.png"
            write_image(path, seed=2 * seed + i)
    cfg = dataset_cfg(tmp_path, "folder", classes={"all": ["all"], "hem": ["hem"]})
    frame, _ = build_manifest(cfg, tmp_path)
    assert frame["id"].is_unique and frame["id"].str.len().max() <= 160
    assert frame["id"].str.endswith(("x0", "x1")).all()  # the name's end is kept
    out = tmp_path / "out"
    out.mkdir()
    for image_id in frame["id"]:
        (out / f"all_{image_id}__rot270.png").write_bytes(b"")  # the longest name made of it
