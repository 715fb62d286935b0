from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ALL_IDB2_MASK_CODE
from pipeline.data import build_manifest
from pipeline.data.synthetic import generate_demo
from pipeline.io import file_digest, read_image

DEMO = {"n_per_class": 6, "smear_side": 64, "cnmc_side": 48, "cnmc_subjects": 2, "difficulty": 1.0}


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_digest(p) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    generate_demo(DEMO, seed=7, out_dir=out)
    return out


def test_layout_counts_and_naming(demo_dir):
    smear = sorted(p.name for p in (demo_dir / "smear").iterdir())
    assert smear[:6] == [f"Im{i:03d}_1.png" for i in range(1, 7)]  # blasts first
    assert smear[6:] == [f"Im{i:03d}_0.png" for i in range(7, 13)]
    assert sorted(p.name for p in (demo_dir / "smear_masks").iterdir()) == smear
    fold = demo_dir / "cnmc" / "C-NMC_Leukemia" / "training_data" / "fold_0"
    all_cells = sorted(p.name for p in (fold / "all").iterdir())
    hem_cells = sorted(p.name for p in (fold / "hem").iterdir())
    assert len(all_cells) == len(hem_cells) == 6
    assert {n.split("_")[1] for n in all_cells} == {"1", "2"}
    assert {n.split("_")[1] for n in hem_cells} == {"H3", "H4"}
    assert read_image(fold / "all" / all_cells[0]).shape == (48, 48, 3)
    assert read_image(demo_dir / "smear" / smear[0]).shape == (64, 64, 3)


def test_same_seed_is_byte_identical_whatever_the_workers(demo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ALL_DETECT_JOBS", "2")
    again = tmp_path / "again"
    generate_demo(DEMO, seed=7, out_dir=again)
    assert hashes(again) == hashes(demo_dir)
    other = tmp_path / "other"
    generate_demo(DEMO, seed=8, out_dir=other)
    assert set(hashes(other).values()).isdisjoint(hashes(demo_dir).values())


def test_rerun_replaces_stale_files(tmp_path):
    out = tmp_path / "demo"
    generate_demo(DEMO, seed=7, out_dir=out)
    generate_demo(DEMO | {"n_per_class": 3}, seed=7, out_dir=out)
    assert len(list((out / "smear").iterdir())) == 6


def test_one_duplicate_pair_shares_a_group(demo_dir):
    smear = hashes(demo_dir / "smear")
    assert len(smear) - len(set(smear.values())) == 1
    assert smear["Im001_1.png"] == smear["Im005_1.png"]  # 2n/3 + 1, as Im067 in ALL-IDB2
    dataset = {"name": "s", "adapter": "synthetic", "style": "smear", "root": "smear"}
    frame, _ = build_manifest(dataset, demo_dir)
    assert frame["group"].nunique() == 11


def test_cnmc_style_reads_back_with_subject_groups(demo_dir):
    dataset = {
        "name": "c",
        "adapter": "synthetic",
        "style": "cnmc",
        "root": "cnmc/C-NMC_Leukemia",
        "folds": [0],
    }
    frame, _ = build_manifest(dataset, demo_dir)
    assert len(frame) == 12
    assert sorted(frame["group"].unique()) == [f"subject:{s}" for s in ("1", "2", "H3", "H4")]


def test_masks_use_the_all_idb2_colour_code(demo_dir):
    for path in (demo_dir / "smear_masks").iterdir():
        colours = {tuple(c) for c in read_image(path).reshape(-1, 3)}
        assert colours == set(ALL_IDB2_MASK_CODE.values())


def test_cnmc_cells_sit_on_pure_black(demo_dir):
    for path in (demo_dir / "cnmc").rglob("*.bmp"):
        image = read_image(path)
        assert (image[0] == 0).all() and (image[:, 0] == 0).all()
        assert (image.max(axis=2) > 0).mean() > 0.1


def test_blasts_are_larger_with_more_nucleus_and_background_carries_no_label(tmp_path):
    """The class difference sits in the cell, never in the background colour."""
    out = tmp_path / "demo"
    generate_demo(DEMO | {"n_per_class": 30, "difficulty": 0.5}, seed=3, out_dir=out)
    stats: dict[str, list] = {"1": [], "0": []}
    for path in sorted((out / "smear").iterdir()):
        mask = read_image(out / "smear_masks" / path.name)
        background = (mask == 255).all(axis=2)
        nucleus = (mask == ALL_IDB2_MASK_CODE["nucleus"]).all(axis=2)
        cell = (~background).sum()
        mean_bg = read_image(path)[background].mean(axis=0)
        stats[path.stem[-1]].append((cell, nucleus.sum() / cell, *mean_bg))
    blast, healthy = np.array(stats["1"]), np.array(stats["0"])
    assert blast[:, 0].mean() > 1.3 * healthy[:, 0].mean()
    assert blast[:, 1].mean() > healthy[:, 1].mean() + 0.05
    spread = np.r_[blast[:, 2:], healthy[:, 2:]].std(axis=0)
    assert (abs(blast[:, 2:].mean(axis=0) - healthy[:, 2:].mean(axis=0)) < 0.5 * spread).all()


def test_invalid_demo_section_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_per_class"):
        generate_demo(DEMO | {"n_per_class": 0}, seed=1, out_dir=tmp_path / "x")
