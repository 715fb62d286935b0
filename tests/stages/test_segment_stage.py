"""Stage segment on a copy of the demo workspace."""

from __future__ import annotations

import json
import logging

from pipeline import paths
from tests.workspace import copy_workspace, run_stage


def test_masks_that_match_no_image_are_said_not_silently_unscored(
    demo_workspace, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("ALL_DETECT_JOBS", "1")
    elsewhere = tmp_path / "masks_of_another_dataset"
    elsewhere.mkdir()
    (elsewhere / "Im999_1.png").write_bytes(b"")
    root = copy_workspace(demo_workspace, tmp_path / "ws", [f"dataset.masks={elsewhere}"])
    with caplog.at_level(logging.WARNING):
        assert run_stage(root, "segment") == 0
    assert f"dataset.masks: no image has a mask in {elsewhere}" in caplog.text
    summary = json.loads((root / paths.metrics("synthetic", "segmentation")).read_text())
    assert summary["segmented"] and "cell_dice_mean" not in summary
