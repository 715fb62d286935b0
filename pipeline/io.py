"""Image reading and atomic output writing shared by every stage.

Stages never write a final path directly: they write a sibling temp file/folder and rename it
into place, so a crash or a full disk leaves either the old output or the new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.errors import PipelineError

IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff")


class BadInputError(PipelineError, ValueError):
    """One or more inputs are unusable; the message lists every offending file or key."""

    def __init__(self, problems: list[str], what: str = "bad input") -> None:
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"{what} ({len(self.problems)}):\n  {shown}{more}")


class ImageReadError(PipelineError, ValueError):
    """A single image could not be decoded; the message names the file and why."""


class OutputKindError(PipelineError, IsADirectoryError):
    """An output file would replace a folder of the same name."""


class MalformedFileError(PipelineError, ValueError):
    """A YAML or JSON file the pipeline reads (params, lock, metrics, model card) is not valid;
    the message names the file and where its text goes wrong."""


def read_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML mapping (params.yaml, dvc.lock); an empty file is an empty mapping."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MalformedFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedFileError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


# Files an operating system drops into folders: never data, so never a "bad file" either
# (__MACOSX/: the resource forks a zip made on a Mac unpacks beside the data).
OS_CLUTTER = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def is_hidden(name: str) -> bool:
    """Dot files and folders (.DS_Store, .git/, ._* resource forks) and OS clutter (Thumbs.db):
    what ingest and predict never read as images."""
    return name.startswith(".") or name.lower() in OS_CLUTTER


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MalformedFileError(f"{path}: not valid JSON ({exc})") from None


def read_json_object(path: Path | str, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file that must hold an object (metrics, model and preparation cards); `what`
    names what was expected in the error."""
    content = read_json(path)
    if not isinstance(content, dict):
        raise MalformedFileError(f"{path}: expected {what}, got {type(content).__name__}")
    return content


# Classic and BigTIFF, either byte order: a format that holds several pages in one file.
TIFF_SIGNATURES = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})
JPEG_SIGNATURE = b"\xff\xd8"
EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation -> how to turn the stored pixels upright (TIFF 6.0 / EXIF 2.3 orientations)
UPRIGHT: dict[int, Any] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def read_image(path: Path | str) -> np.ndarray:
    """Read any supported image as 8-bit RGB (H, W, 3), whatever its mode on disk.

    Grayscale is replicated to three channels, RGBA is composited on black (C-NMC style
    background), 16-bit and float images are rescaled to 0..255 by their dtype range. A JPEG or
    TIFF is turned upright by its EXIF orientation, as a viewer shows it and as OpenCV reads the
    masks drawn on it (PNG and WebP orientations, rare, are not read: Pillow would decode the
    whole file to find them).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    data = np.fromfile(str(path), dtype=np.uint8)
    # OpenCV logs a broken file's decoder error without the file's name; the error below names it
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    if may_hold_frames(data) and (frames := cv2.imcount(str(path))) > 1:
        raise ImageReadError(  # OpenCV would decode the first frame alone, silently
            f"{path}: {frames} pages or frames (a TIFF stack, channels as pages, an animation); "
            "which one holds the cell is not known: save it as an image of its own"
        )
    if bytes(data[:2]) == JPEG_SIGNATURE or bytes(data[:4]) in TIFF_SIGNATURES:
        image = upright(image, data)
    return to_rgb8(image, source=path)


def may_hold_frames(encoded: np.ndarray) -> bool:
    """A TIFF, GIF or WebP file: the formats that may hold several pages or frames (counting
    them opens the file again, so other formats are not asked)."""
    head = bytes(encoded[:12])
    return head[:4] in TIFF_SIGNATURES or head[:4] == b"GIF8" or head[8:12] == b"WEBP"


def upright(image: np.ndarray, encoded: np.ndarray) -> np.ndarray:
    """`image` turned as the EXIF orientation in its `encoded` file says. OpenCV applies it only
    when it converts colours, so `IMREAD_UNCHANGED` (kept for alpha and 16 bits) needs this."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded.tobytes())) as opened:
            orientation = opened.getexif().get(EXIF_ORIENTATION_TAG)
    except (UnidentifiedImageError, OSError, SyntaxError):  # Pillow cannot parse what
        return image  # OpenCV decoded: no orientation to honour
    turn = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if turn is None else np.ascontiguousarray(turn(image))


MIN_CELL_SIDE = 8  # px: below this no preprocessing or model can see a cell
# A stained cell always has bright pixels; an image whose brightest is below this (of 255) is
# underexposed, or 12-bit data in a 16-bit file, which the 16-bit range maps to 0..16.
MIN_BRIGHTEST = 32


def read_cell_image(path: Path | str) -> np.ndarray:
    """`read_image` for a dataset or prediction input: a decodable image that cannot hold a
    cell (a few pixels, one flat colour, e.g. a fully transparent PNG, or nearly black) is
    refused, since any model would still give it a confident P(ALL)."""
    image = read_image(path)
    height, width = image.shape[:2]
    if min(height, width) < MIN_CELL_SIDE:
        raise ImageReadError(
            f"{path}: {width}x{height} px is too small to hold a cell "
            f"(at least {MIN_CELL_SIDE} px a side)"
        )
    if image.min() == image.max():
        raise ImageReadError(f"{path}: blank image (every pixel is {image.flat[0]})")
    if image.max() < MIN_BRIGHTEST:
        raise ImageReadError(
            f"{path}: nearly black (brightest pixel {image.max()} of 255): underexposed, or "
            "12- or 10-bit data in a 16-bit file (rescaled by the 16-bit range); convert it "
            "to 8 bits first"
        )
    return image


def to_rgb8(image: np.ndarray, source: Path | str = "<array>") -> np.ndarray:
    """Normalise an OpenCV-decoded array (BGR order, any depth/channels) to RGB uint8."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"{source}: unsupported image shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (md5 is what `dvc.lock` records for an output)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def folder_digest(folder: Path | str) -> str:
    """sha256 over every file's relative path and content: identifies a saved model folder
    (its MLflow run is found by it) whatever the folder is called or where it lives."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def dvc_dir_md5(folder: Path | str) -> str:
    """The md5 `dvc.lock` records for a directory output (DVC 3: md5 of the JSON list of its
    files' md5 and relative path, sorted by path, plus `.dir`), to prove a copy of one."""
    folder = Path(folder)
    entries = [
        {"md5": file_digest(path, "md5"), "relpath": path.relative_to(folder).as_posix()}
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    ]
    listing = json.dumps(sorted(entries, key=lambda e: e["relpath"]), sort_keys=True)
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def locked_outs(
    entries: Iterable[Mapping[str, Any]], sections: tuple[str, ...] = ("outs",)
) -> dict[str, str]:
    """{path: md5} that `dvc.lock` stage `entries` record under `sections` ("outs", "metrics",
    "plots"), a folder's as its `.dir` hash (see `dvc_dir_md5`): what a check that a file is
    the locked run's output compares it with. Outputs without an md5 are left out, so looking
    one up finds None, as for a path the lock does not name."""
    return {
        out["path"]: str(out["md5"])
        for entry in entries
        for section in sections
        for out in entry.get(section) or []
        if "md5" in out
    }


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `target`; move it onto `target` only if the block succeeds.

    Works for files and folders. An existing `target` survives any failure untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_staging(target)
    prefix = f".{target.name}.{os.getpid()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if target.is_dir() and not target.is_symlink():
            if not staged.is_dir():  # a file over a folder would delete all in it (`--output`)
                raise OutputKindError(f"{target} is a folder: refusing to replace it with a file")
            old = tmp / (target.name + ".old")
            os.replace(target, old)
            os.replace(staged, target)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_orphaned_staging(target: Path) -> None:
    """Delete the staging folders of `target` that a killed process left (SIGKILL skips the
    cleanup; on real data each can hold gigabytes). The writer's PID is in the name, so a
    staging folder of a writer that is still running is never touched."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^/]+\.tmp")
    for sibling in target.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and sibling.is_dir() and not process_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def atomic_write_text(target: Path | str, text: str) -> Path:
    with atomic_path(target) as staged:
        staged.write_text(text)
    return Path(target)


def atomic_write_json(target: Path | str, payload: Any) -> Path:
    return atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_image(path: Path | str, image: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix, bgr)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    encoded.tofile(str(path))
