"""Pack the prepared GPU check (benchmarks/gpu_check.py) for an offline GPU host that takes
files in small transfers: this workplace's lent machines accept at most 64 MiB per call beside
the working tree and reach no package index. C-NMC fold 0 (135 MiB of PNG) travels as
lossless WebP (about 0.65 of the bytes; decoded there and checked against each original's
md5), the Python packages the host lacks as extracted cp312 wheels, all in one xz tar cut into
parts that each fit one call.

    python -m benchmarks.device_carry --out .devcarry      # prints the command for each call

Call k of n carries `.devcarry/part<k>`, back to back (the host keeps /tmp only while it stays
warm); the last runs `bash .devcarry/part<n>/run.sh [command...]`, which joins the parts,
unpacks, decodes C-NMC into /tmp/C-NMC and runs the command (default: the GPU check; JSON and
log to $OUT).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "C-NMC"
IMAGE_SUFFIXES = (".png", ".bmp")
MANIFEST = "md5.txt"
# What the stages and `dvc repro` (scripts/gpu_cv.sh) import that the H200 image (python 3.12,
# torch, numpy, pandas, sklearn, skimage, opencv-headless...) lacks, found by tracing the
# imports of a demo run: versions are the ones installed here. Extend it when a stage gains one.
MISSING_THERE = (
    "alembic",
    "annotated-types",
    "antlr4-python3-runtime",
    "appdirs",
    "atpublic",
    "cachetools",
    "cffi",
    "configobj",
    "cryptography",
    "databricks-sdk",
    "diskcache",
    "distro",
    "dpath",
    "dulwich",
    "dvc",
    "dvc-data",
    "dvc-http",
    "dvc-objects",
    "dvc-render",
    "fastapi",
    "flatten-dict",
    "flufl.lock",
    "funcy",
    "gitdb",
    "gitpython",
    "google-auth",
    "grad-cam",
    "hydra-core",
    "importlib-metadata",
    "iterative-telemetry",
    "mako",
    "mlflow",
    "mlflow-skinny",
    "mlflow-tracing",
    "omegaconf",
    "opentelemetry-api",
    "opentelemetry-proto",
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
    "orjson",
    "platformdirs",
    "polars",
    "polars-runtime-32",
    "pydantic",
    "pydantic-core",
    "pydot",
    "pygtrie",
    "ruamel.yaml",
    "scmrepo",
    "shtab",
    "smmap",
    "sqlalchemy",
    "sqlparse",
    "sqltrie",
    "starlette",
    "traitlets",
    "ttach",
    "typing-inspection",
    "ultralytics",
    "ultralytics-thop",
    "voluptuous",
    "wcwidth",
    "zc.lockfile",
)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 34)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]
PRUNE = ("mlflow/server/js/",)  # the MLflow UI's bundle: 7 MiB the check never serves

RUN_SH = """#!/usr/bin/env bash
# Last call: join the parts, unpack packages and images, decode the images, then run the
# command given (default: the GPU check); its output goes to $OUT/run.log.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p /tmp/devcarry /tmp/devcarry_x && cp "$HERE"/carry.tar.xz.* /tmp/devcarry/
n=$(ls /tmp/devcarry/carry.tar.xz.* | wc -l)
[ "$n" = {parts} ] || {{ echo "have $n of {parts} parts: rerun the earlier calls"; exit 3; }}
cat /tmp/devcarry/carry.tar.xz.* | tar -xJ -C /tmp/devcarry_x || exit 4
SP=$(python3 -c "import site; print(site.getsitepackages()[0])")
echo /tmp/devcarry_x/site > "$SP/zz_devcarry.pth"
command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python
python3 -c "import torch, mlflow, hydra, ultralytics, dvc, polars, pytorch_grad_cam, sqlalchemy
print('torch', torch.__version__, 'cuda:', torch.cuda.is_available())" \\
  || {{ echo "a carried package does not import: extend MISSING_THERE"; exit 6; }}
python3 -m benchmarks.device_carry --decode /tmp/devcarry_x/data /tmp/C-NMC 2>&1 \\
  | tee "$OUT/decode.txt"
[ "${{PIPESTATUS[0]}}" = 0 ] || exit 5
[ $# -gt 0 ] || set -- bash scripts/gpu_check.sh --root /tmp/C-NMC --out "$OUT/gpu_check.json"
PYTHONUNBUFFERED=1 "$@" 2>&1 | tee "$OUT/run.log"
exit "${{PIPESTATUS[0]}}"
"""


def _webp(path: Path) -> tuple[bytes, str]:
    raw = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    ok, webp = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
    back = cv2.imdecode(webp, cv2.IMREAD_UNCHANGED)
    if not ok or back is None or not np.array_equal(back, image):
        raise ValueError(f"{path}: WebP did not round-trip losslessly")
    return webp.tobytes(), hashlib.md5(raw).hexdigest()


def encode_images(root: Path, dest: Path) -> int:
    """Every image under `root` as lossless WebP under `dest` (same relative path, `.webp`
    appended), with the originals' md5 in `dest/md5.txt`."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {root}")
    lines = []
    with ProcessPoolExecutor() as pool:
        for path, (webp, md5) in zip(paths, pool.map(_webp, paths, chunksize=32), strict=True):
            rel = path.relative_to(root).as_posix()
            target = dest / f"{rel}.webp"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(webp)
            lines.append(f"{md5}  {rel}")
    (dest / MANIFEST).write_text("\n".join(lines) + "\n")
    return len(paths)


def _decode_one(job: tuple[Path, Path, str]) -> bool:
    webp, target, md5 = job
    image = cv2.imread(str(webp), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{webp}: not a readable WebP")
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if target.suffix.lower() == ".png" else []
    ok, data = cv2.imencode(target.suffix, image, params)
    if not ok:
        raise ValueError(f"{target}: cv2 cannot write {target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.tobytes())
    return hashlib.md5(data.tobytes()).hexdigest() == md5


def decode_images(src: Path, dest: Path) -> tuple[int, int]:
    """Undo `encode_images`: (images written, how many are byte-identical to the originals;
    the rest are pixel-identical, encoded by another libpng)."""
    manifest = (src / MANIFEST).read_text().splitlines()
    jobs = [
        (src / f"{rel}.webp", dest / rel, md5)
        for md5, rel in (ln.split("  ", 1) for ln in manifest)
    ]
    with ProcessPoolExecutor() as pool:
        same = list(pool.map(_decode_one, jobs, chunksize=32))
    return len(same), sum(same)


def fetch_packages(dists: Iterable[str], dest: Path, python: str = "3.12") -> None:
    """The named distributions at the versions installed here, as wheels for `python` on
    x86-64 Linux (built here from the sdist where no wheel exists), extracted into `dest`."""
    wheels = dest.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    binary = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    target = ["--python-version", python, "--implementation", "cp", *platforms]
    for dist in dists:
        spec = f"{dist}=={importlib.metadata.version(dist)}"
        if subprocess.run([*binary, *target, spec], capture_output=True).returncode:
            # No wheel (e.g. antlr4-python3-runtime, grad-cam: pure-Python sdists): build one.
            subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), spec], check=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if not member.startswith(PRUNE):
                    archive.extract(member, dest)
    shutil.rmtree(wheels)


def split_file(path: Path, out: Path, part_bytes: int) -> int:
    """Cut `path` into `out/part<k>/<name>.<kkk>` pieces of at most `part_bytes`."""
    count = 0
    with path.open("rb") as src:
        while chunk := src.read(part_bytes):
            count += 1
            part = out / f"part{count}"
            part.mkdir(parents=True, exist_ok=True)
            (part / f"{path.name}.{count:03d}").write_bytes(chunk)
    return count


def _xz_tar(folder: Path, archive: Path) -> Path:
    """`folder` as an xz tar: the xz program on every core where there is one (5 of 6
    minutes on 2 cores went to Python's single-threaded stream), else Python's."""
    if shutil.which("xz") is None:
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            tar.add(folder, arcname=".")
        return archive
    plain = archive.with_suffix("")
    with tarfile.open(plain, "w") as tar:
        tar.add(folder, arcname=".")
    subprocess.run(["xz", "-9", "-T0", str(plain)], check=True)
    return archive


def pack(root: Path, out: Path, part_mib: float) -> int:
    """Encode, fetch, archive and cut; returns the number of parts (calls)."""
    with tempfile.TemporaryDirectory(prefix="devcarry-") as scratch:
        staging = Path(scratch) / "staging"
        count = encode_images(root, staging / "data")
        print(f"encoded {count} images from {root}", file=sys.stderr)
        fetch_packages(MISSING_THERE, staging / "site")
        archive = _xz_tar(staging, Path(scratch) / "carry.tar.xz")
        if out.exists():
            shutil.rmtree(out)
        parts = split_file(archive, out, int(part_mib * 2**20))
    (out / f"part{parts}" / "run.sh").write_text(RUN_SH.format(parts=parts))
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="C-NMC root")
    parser.add_argument("--out", type=Path, default=REPO / ".devcarry")
    parser.add_argument("--part-mib", type=float, default=50.0, help="bytes per call, in MiB")
    parser.add_argument("--decode", nargs=2, type=Path, metavar=("SRC", "DEST"),
                        help="(on the host) decode SRC's WebP images back into DEST")  # fmt: skip
    args = parser.parse_args(argv)
    if args.decode:
        written, same = decode_images(*args.decode)
        print(f"decoded {written} images into {args.decode[1]}; byte-identical: {same}")
        return 0
    if not args.root.is_dir():
        print(f"device_carry: no dataset at {args.root} (--root)", file=sys.stderr)
        return 2
    parts = pack(args.root, args.out, args.part_mib)
    rel = args.out.resolve().relative_to(REPO)
    for k in range(1, parts):
        print(f'call {k}: carry ["{rel}/part{k}"]  command: mkdir -p /tmp/devcarry && '
              f"cp {rel}/part{k}/* /tmp/devcarry/")  # fmt: skip
    print(f'call {parts}: carry ["{rel}/part{parts}"]  command: bash {rel}/part{parts}/run.sh')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
