"""The real ALL-IDB2 copy in ../shared/data (skipped where it is absent, e.g. a user's clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data import build_manifest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
IMAGES = SHARED / "ALL_IDB2" / "img"


@pytest.mark.real_data
def test_real_all_idb2_manifest(tmp_path):
    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} not present")
    dataset = {"name": "all_idb2", "adapter": "all_idb2", "root": str(IMAGES)}
    frame, problems = build_manifest(dataset, tmp_path)
    assert problems == []
    assert len(frame) == 260
    assert frame["label"].value_counts().to_dict() == {"all": 130, "hem": 130}
    groups = frame.set_index("id")["group"]
    assert groups["Im001_1"] == groups["Im067_1"]
    assert groups["Im223_0"] == groups["Im257_0"]
    assert groups.nunique() == 260 - frame["sha256"].duplicated().sum()
