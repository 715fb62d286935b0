import hashlib
import os
import re

import numpy as np
import pytest

from pipeline.io import file_digest


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_file_digest_is_the_digest_of_the_files_bytes(tmp_path, algorithm):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # over one read buffer
    path.write_bytes(data)
    assert file_digest(path, algorithm) == hashlib.new(algorithm, data).hexdigest()


def test_file_digest_defaults_to_sha256(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("cell")
    assert file_digest(path) == hashlib.sha256(b"cell").hexdigest()


def test_a_killed_writers_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from pipeline.io import atomic_write_text

    target = tmp_path / "segmented"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    orphan = tmp_path / f".segmented.{dead}.abc123.tmp"
    live = tmp_path / f".segmented.{os.getpid()}.def456.tmp"
    other = tmp_path / f".other.{dead}.abc123.tmp"
    for folder in (orphan, live, other):
        (folder / "segmented").mkdir(parents=True)
    atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert not orphan.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, other.name]
    )


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((4, 40, 3), np.uint8) + np.arange(40, dtype=np.uint8)[None, :, None], "40x4 px"),
        (np.zeros((32, 32, 3), np.uint8), "blank image (every pixel is 0)"),
        (np.zeros((32, 32, 4), np.uint8) + np.arange(32, dtype=np.uint8)[None, :, None], "blank"),
        # a camera's 12-bit values (0..4095) in a 16-bit PNG: 0..16 once rescaled to 8 bits
        (
            np.zeros((32, 32, 3), np.uint16)
            + np.arange(0, 4096, 128, dtype=np.uint16)[None, :, None],
            "nearly black (brightest pixel 15 of 255)",
        ),
    ],
    ids=["too-small", "black", "fully-transparent", "twelve-bit-in-sixteen"],
)
def test_an_image_that_cannot_hold_a_cell_is_refused_naming_it(tmp_path, image, message):
    import cv2

    from pipeline.io import ImageReadError, read_cell_image

    if image.shape[2] == 4:
        image[:, :, 3] = 0  # any colour, alpha 0: composited on black
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), image)
    with pytest.raises(ImageReadError, match=rf"odd\.png: .*{re.escape(message)}"):
        read_cell_image(path)
    cell = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cell)
    assert read_cell_image(path).shape == (32, 32, 3)


def test_a_file_is_never_written_over_a_folder(tmp_path):
    from pipeline.io import OutputKindError, atomic_write_text

    folder = tmp_path / "results"
    (folder / "keep.txt").parent.mkdir()
    (folder / "keep.txt").write_text("work")
    with pytest.raises(OutputKindError, match="results is a folder"):
        atomic_write_text(folder, "csv")
    assert (folder / "keep.txt").read_text() == "work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging left


LOCK_ENTRIES = [
    {
        "outs": [
            {"path": "data/cropped", "hash": "md5", "md5": "f00.dir"},
            {"path": "reports/plots/ds/m/predictions.csv", "hash": "md5", "md5": "abc"},
            {"path": "models/m", "persist": True},  # no md5 recorded
        ],
        "metrics": [{"path": "reports/metrics/ds/m.json", "md5": "def"}],
        "plots": None,  # a section written but empty
    },
    {"deps": [{"path": "data/raw", "md5": "dep.dir"}], "plots": [{"path": "p.png", "md5": 1}]},
]


def test_locked_outs_reads_only_the_sections_asked_for():
    from pipeline.io import locked_outs

    assert locked_outs(LOCK_ENTRIES) == {
        "data/cropped": "f00.dir",
        "reports/plots/ds/m/predictions.csv": "abc",
    }
    assert locked_outs(LOCK_ENTRIES, ("outs", "metrics", "plots")) == {
        "data/cropped": "f00.dir",
        "reports/plots/ds/m/predictions.csv": "abc",
        "reports/metrics/ds/m.json": "def",
        "p.png": "1",  # as a string, whatever YAML made of it
    }


def test_locked_outs_leaves_out_an_output_without_md5_and_an_entry_without_outs():
    from pipeline.io import locked_outs

    assert "models/m" not in locked_outs(LOCK_ENTRIES)
    assert locked_outs([{}, {"outs": None}], ("outs", "metrics")) == {}


def test_a_block_that_writes_nothing_fails_and_leaves_the_target(tmp_path):
    from pipeline.io import atomic_path

    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(target):
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animation_is_refused_naming_it_and_a_still_is_read(tmp_path, suffix):
    """OpenCV decodes an animation's first frame alone, as a TIFF stack's first page."""
    from PIL import Image

    from pipeline.io import ImageReadError, read_image

    frames = [Image.fromarray(np.full((24, 24, 3), level, np.uint8)) for level in (40, 140, 240)]
    animation = tmp_path / f"cell{suffix}"
    frames[0].save(animation, save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(ImageReadError, match=rf"cell\{suffix}: 3 pages or frames"):
        read_image(animation)
    still = tmp_path / f"still{suffix}"
    frames[1].save(still, lossless=True)
    assert (read_image(still) == 140).all()


def test_a_multi_page_tiff_is_refused_naming_it_and_a_one_page_tiff_is_read(tmp_path):
    """OpenCV decodes a TIFF stack's first page alone: the cell may be on another page."""
    import cv2

    from pipeline.io import ImageReadError, read_image

    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    stack = tmp_path / "stack.tif"
    assert cv2.imwritemulti(str(stack), pages)
    with pytest.raises(ImageReadError, match=r"stack\.tif: 3 pages or frames"):
        read_image(stack)
    single = tmp_path / "single.tiff"
    assert cv2.imwrite(str(single), pages[0])
    assert (read_image(single) == pages[0][:, :, ::-1]).all()  # BGR on disk, RGB read


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_is_turned_upright_by_its_exif_orientation_as_masks_are(tmp_path, orientation):
    """A phone or camera JPEG stores pixels sideways with an orientation tag: read as a viewer
    shows it (Pillow's exif_transpose), and as OpenCV reads a mask (IMREAD_COLOR turns it)."""
    import cv2
    from PIL import Image, ImageOps

    from pipeline.io import read_image

    pixels = np.zeros((40, 80, 3), np.uint8)  # asymmetric blocks: every turn tells apart
    pixels[:20, :40] = (250, 0, 0)
    pixels[20:, 60:] = (0, 250, 0)
    pixels[:10, 70:] = (0, 0, 250)
    stored = Image.fromarray(pixels)
    exif = stored.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "cell.jpg"
    stored.save(path, quality=100, exif=exif.tobytes())
    image = read_image(path)
    with Image.open(path) as opened:
        shown = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert image.shape == shown.shape
    assert np.abs(image.astype(int) - shown).max() < 16  # two JPEG decoders
    as_mask = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(image.astype(int) - as_mask).max() == 0


def test_a_broken_file_is_named_once_without_opencvs_anonymous_log_line(tmp_path, capfd):
    """OpenCV printed '[ERROR] ... readHeader IHDR chunk shall be first' naming no file."""
    import cv2

    from pipeline.io import ImageReadError, read_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n0000garbage")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV's default
    with pytest.raises(ImageReadError, match="broken.png: not a readable image"):
        read_image(broken)
    assert "readHeader" not in capfd.readouterr().err
