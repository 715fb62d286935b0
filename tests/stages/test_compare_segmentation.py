"""The segmentation comparison scores every variant against the masks and writes one table;
without masks it stops with the key named and writes nothing."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from pipeline.preprocess import segment_dataset
from pipeline.stages import compare_segmentation
from tests.workspace import TINY_OVERRIDES, make_workspace, run_stage


def test_every_variant_is_scored_against_the_masks(tmp_path: Path, monkeypatch, caplog) -> None:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    assert run_stage(root, "generate_demo") == 0
    with contextlib.chdir(root):
        assert compare_segmentation.main(list(TINY_OVERRIDES)) == 0
        table = pd.read_csv("reports/segmentation/synthetic.csv")
        assert table["variant"].tolist() == list(segment_dataset.VARIANTS)
        assert (table["n_images"] > 0).all()
        assert table["cell_dice_mean"].between(0, 1).all()
        assert compare_segmentation.main([*TINY_OVERRIDES, "dataset.masks=null"]) == 2
    assert "dataset.masks" in caplog.text


def test_a_bad_mask_or_dataset_ends_with_its_message_not_a_traceback(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    assert run_stage(root, "generate_demo") == 0
    with contextlib.chdir(root):
        masks = Path("artifacts/demo/smear_masks")
        damaged = sorted(masks.glob("*.png"))[0]
        damaged.write_bytes(b"not a mask")
        assert compare_segmentation.main(list(TINY_OVERRIDES)) == 2
        assert f"{damaged.name}: not a readable mask image" in caplog.text
        assert compare_segmentation.main([*TINY_OVERRIDES, "dataset.root=nowhere"]) == 2
        assert "nowhere" in caplog.text and "Traceback" not in caplog.text
        assert not Path("reports/segmentation").exists()


def test_a_mask_no_image_took_is_named(tmp_path: Path, monkeypatch, caplog) -> None:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    assert run_stage(root, "generate_demo") == 0
    with contextlib.chdir(root):
        masks = Path("artifacts/demo/smear_masks")
        (masks / "Im999_1.png").write_bytes((masks / "Im001_1.png").read_bytes())
        assert compare_segmentation.main(list(TINY_OVERRIDES)) == 0
    assert "1 entries in" in caplog.text and "['Im999_1.png']" in caplog.text
