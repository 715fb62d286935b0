"""The GPU-host carry: images survive the WebP trip pixel- and byte-exact, an unreadable file
is named, and the archive's parts join back into the same bytes."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import device_carry


def _cells(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {}
    for rel in ("fold_0/all/UID_1_1_1_all.png", "fold_0/hem/UID_H2_1_1_hem.png", "x/a.bmp"):
        image = np.zeros((40, 40, 3), np.uint8)
        image[10:30, 8:32] = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)  # a cell on black
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if rel.endswith(".png") else []
        (root / rel).write_bytes(cv2.imencode(Path(rel).suffix, image, params)[1].tobytes())
        images[rel] = image
    return images


def test_images_round_trip_through_webp(tmp_path: Path) -> None:
    images = _cells(tmp_path / "src")
    assert device_carry.encode_images(tmp_path / "src", tmp_path / "webp") == 3
    assert sorted(p.name for p in (tmp_path / "webp").rglob("*.webp")) == sorted(
        f"{Path(rel).name}.webp" for rel in images
    )
    written, same = device_carry.decode_images(tmp_path / "webp", tmp_path / "back")
    assert (written, same) == (3, 3)
    for rel, image in images.items():
        assert np.array_equal(cv2.imread(str(tmp_path / "back" / rel), cv2.IMREAD_UNCHANGED), image)


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    _cells(tmp_path / "src")
    (tmp_path / "src" / "fold_0" / "all" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        device_carry.encode_images(tmp_path / "src", tmp_path / "webp")
    with pytest.raises(FileNotFoundError, match="no .png/.bmp images"):
        device_carry.encode_images(tmp_path / "empty", tmp_path / "webp2")


def test_parts_fit_the_budget_and_join_back(tmp_path: Path) -> None:
    blob = np.random.default_rng(1).bytes(10_000)
    (tmp_path / "carry.tar.xz").write_bytes(blob)
    parts = device_carry.split_file(tmp_path / "carry.tar.xz", tmp_path / "out", 4096)
    assert parts == 3
    pieces = sorted((tmp_path / "out").glob("part*/carry.tar.xz.*"))
    assert [p.parent.name for p in pieces] == ["part1", "part2", "part3"]
    assert all(p.stat().st_size <= 4096 for p in pieces)
    assert b"".join(p.read_bytes() for p in pieces) == blob


def test_the_last_calls_script_is_valid_bash_and_counts_its_parts(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text(device_carry.RUN_SH.format(parts=3))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert '[ "$n" = 3 ]' in script.read_text()


def test_pack_cuts_one_archive_of_images_and_packages_into_parts(
    tmp_path: Path, monkeypatch
) -> None:
    images = _cells(tmp_path / "src")

    def fake_fetch(dists, dest: Path) -> None:  # the package index is not part of the test
        (dest / "polars").mkdir(parents=True)
        (dest / "polars" / "__init__.py").write_bytes(np.random.default_rng(2).bytes(30_000))

    monkeypatch.setattr(device_carry, "fetch_packages", fake_fetch)
    parts = device_carry.pack(tmp_path / "src", tmp_path / "carry", part_mib=16 / 1024)
    assert parts >= 2 and (tmp_path / "carry" / f"part{parts}" / "run.sh").exists()
    joined = tmp_path / "joined.tar.xz"
    joined.write_bytes(
        b"".join(p.read_bytes() for p in sorted((tmp_path / "carry").glob("part*/carry.tar.xz.*")))
    )
    with tarfile.open(joined) as archive:
        names = set(archive.getnames())
    assert "./site/polars/__init__.py" in names and "./data/md5.txt" in names
    assert {f"./data/{rel}.webp" for rel in images} <= names


@pytest.mark.parametrize("xz_program", [True, False])
def test_the_archive_is_written_with_or_without_the_xz_program(
    tmp_path: Path, monkeypatch, xz_program: bool
) -> None:
    _cells(tmp_path / "folder")
    if not xz_program:
        monkeypatch.setattr(device_carry.shutil, "which", lambda name: None)
    archive = device_carry._xz_tar(tmp_path / "folder", tmp_path / "carry.tar.xz")
    with tarfile.open(archive) as tar:
        assert "./fold_0/all/UID_1_1_1_all.png" in tar.getnames()
