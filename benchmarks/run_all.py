"""Throughput and latency of each pipeline part: `python -m benchmarks.run_all [--full-repro]`.

Writes `benchmarks/results/latest.json` (with the machine it ran on) and prints a Markdown
table. Measured:
- segmentation images/s per method, one worker (ALL_DETECT_JOBS=1) and all cores, on real
  ALL-IDB2 (`<repo>/../shared/data/ALL_IDB2/img`) when present, else the synthetic demo;
- training images/s of one epoch of each torchvision network through the real data pipeline
  versus forward+backward on random tensors of the same shape (ratio = how much of the compute
  the data pipeline leaves usable; target >= 0.8), plus `fit` wall time for every model;
- inference latency per image (batch of one) per model;
- `dvc repro` wall time from scratch and with nothing changed: of the default pipeline in a
  `git clone` of the repo with `--full-repro` (~10 min on 2 cores), else of the tiny demo.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from pipeline import paths
from pipeline.config import compose, write_params
from pipeline.io import IMAGE_SUFFIXES, atomic_write_json, read_image
from pipeline.models.base import TrainContext, build_model
from pipeline.models.torchvision_cnn import build_network, make_optimizer
from pipeline.parallel import parallel_map
from pipeline.preprocess.segment import segment_cell
from pipeline.train.data import image_folder, make_loader, train_transform
from pipeline.train.device import resolve_device

REPO = Path(__file__).resolve().parents[1]
REAL_IMAGES = REPO.parent / "shared" / "data" / "ALL_IDB2" / "img"
RESULTS = REPO / "benchmarks" / "results" / "latest.json"
MODELS = ("svm_hog", "resnet50", "resnet50_svm", "densenet121", "yolov8")
PREP_STAGES = ("generate_demo", "ingest", "segment", "crop", "split", "augment")
# A small demo at the default image side: big enough for stable per-image numbers on a CPU.
DEMO = (
    "demo.n_per_class=40",
    "evaluate.bootstrap_samples=100",
    *(f"models.{m}.epochs=1" for m in MODELS if m != "svm_hog"),
)
TINY = (
    *DEMO,
    "demo.n_per_class=16",
    "demo.smear_side=64",
    "crop.size=32",
    "models.svm_hog.hog.image_side=32",
)


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run(command: Sequence[str], cwd: Path, **env: str) -> None:
    """A subprocess with this venv's `python` first on PATH; its output only on failure."""
    full_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "YOLO_OFFLINE": "1",
        **env,
    }
    done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def prepare_demo(root: Path, overrides: Sequence[str]) -> Path:
    """Run the preprocessing stages of a demo workspace in `root` (as DVC would)."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root / "params.yaml", overrides)
    for name in PREP_STAGES:
        run([sys.executable, "-m", f"pipeline.stages.{name}"], root, PYTHONPATH=str(REPO))
    return root


def _segment_file(path: str, cfg: Any) -> bool:
    return segment_cell(read_image(path), cfg).found


def bench_segmentation(images: list[Path], source: str) -> list[dict[str, Any]]:
    rows = []
    for method in ("otsu", "otsu_active_contour"):
        cfg = compose([f"segment.method={method}"]).segment
        for jobs in (1, os.cpu_count() or 1):
            work = partial(parallel_map, partial(_segment_file, cfg=cfg), map(str, images))
            seconds = timed(partial(work, desc=f"segment {method} x{jobs}", jobs=jobs))
            rows.append(
                {
                    "method": method,
                    "jobs": jobs,
                    "images": len(images),
                    "images_per_s": len(images) / seconds,
                    "source": source,
                }
            )
    return rows


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> int:
    """The loop's own work per batch (forward, loss, backward, step); returns images seen."""
    criterion, seen = nn.CrossEntropyLoss(), 0
    model.train()
    for images, targets in batches:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(targets)
    return seen


def bench_training_loop(data_dir: Path, cfg: Any, model_name: str) -> dict[str, Any]:
    """Images/s through ImageFolder + transforms versus on random tensors of the same shape."""
    config = OmegaConf.to_container(cfg.models[model_name], resolve=True)
    size, batch = cfg.crop.size, int(config["batch_size"])
    loader = make_loader(
        image_folder(data_dir, "train", train_transform(size)), batch, shuffle=True, seed=0
    )
    network = build_network(config, pretrained=False)
    optimizer = make_optimizer(config, network.parameters())
    _steps(network, optimizer, [next(iter(loader))])  # warm-up (allocator, kernels)
    start = time.perf_counter()
    seen = _steps(network, optimizer, loader)
    real = seen / (time.perf_counter() - start)
    shapes = [len(targets) for _, targets in loader]
    synthetic = [(torch.randn(n, 3, size, size), torch.randint(0, 2, (n,))) for n in shapes]
    start = time.perf_counter()
    _steps(network, optimizer, synthetic)
    raw = seen / (time.perf_counter() - start)
    return {"model": model_name, "pipeline_images_per_s": real, "raw_images_per_s": raw,
            "ratio": real / raw, "batch_size": batch, "image_size": size}  # fmt: skip


def bench_models(root: Path, cfg: Any) -> list[dict[str, Any]]:
    """One epoch of `fit` per model (wall time, images/s), then per-image inference latency."""
    data_dir = root / paths.prepared(cfg.dataset.name)
    n_train = sum(1 for p in (data_dir / "train").rglob("*") if p.suffix in IMAGE_SUFFIXES)
    test = sorted(p for p in (data_dir / "test").rglob("*") if p.suffix in IMAGE_SUFFIXES)
    test_images = [read_image(p) for p in test[:10]]
    rows = []
    for name in MODELS:
        classifier = build_model(OmegaConf.to_container(cfg.models[name], resolve=True))
        work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        ctx = TrainContext(data_dir=data_dir, work_dir=work_dir, image_size=cfg.crop.size,
                           seed=cfg.seed, device=cfg.train.device, amp=cfg.train.amp)  # fmt: skip
        seconds = timed(partial(classifier.fit, ctx))
        shutil.rmtree(work_dir, ignore_errors=True)
        classifier.predict_proba(test_images[:1])  # warm-up
        latencies = []
        for image in test_images:
            latencies.append(timed(partial(classifier.predict_proba, [image])))
        rows.append(
            {
                "model": name,
                "fit_seconds": seconds,
                "fit_train_images_per_s": n_train / seconds,
                "inference_ms_per_image": 1000 * statistics.median(latencies),
            }
        )
    return rows


def bench_repro(full: bool, scratch: Path) -> dict[str, Any]:
    """`dvc repro` from scratch, then again with nothing changed, in a throw-away repo."""
    repo = scratch / "repro"
    if full:
        run(["git", "clone", "-q", str(REPO), str(repo)], scratch)
    else:
        repo.mkdir()
        shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
        for folder in ("pipeline", "conf"):  # stage deps
            shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__py*"))
        write_params(repo / "params.yaml", TINY)
        run(["git", "init", "-q"], repo)
        run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/repro-mlflow.db"}
    dvc = [sys.executable, "-m", "dvc", "repro"]
    return {
        "pipeline": "default (git clone of HEAD)" if full else "tiny demo",
        "from_scratch_s": timed(partial(run, dvc, repo, **env)),
        "no_change_s": timed(partial(run, dvc, repo, **env)),
    }


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        f"Measured {info['date']} on {info['cpu_count']} CPU cores, device {info['device']}, "
        f"torch {info['torch']}.",
        "",
        "| What | Measure | Value |",
        "|---|---|---|",
    ]
    for r in results["segmentation"]:
        lines.append(f"| segment `{r['method']}`, {r['jobs']} job(s) ({r['source']}, "
                     f"{r['images']} images) | images/s | {r['images_per_s']:.2f} |")  # fmt: skip
    for r in results["training_loop"]:
        lines.append(f"| train {r['model']} ({r['image_size']} px, batch {r['batch_size']}) | "
                     f"images/s data pipeline / random tensors (ratio) | "
                     f"{r['pipeline_images_per_s']:.1f} / {r['raw_images_per_s']:.1f} "
                     f"({r['ratio']:.2f}) |")  # fmt: skip
    for r in results["models"]:
        lines.append(f"| {r['model']} one-epoch `fit` (incl. val, setup) | s (train images/s) | "
                     f"{r['fit_seconds']:.1f} ({r['fit_train_images_per_s']:.1f}) |")  # fmt: skip
        lines.append(f"| {r['model']} inference, batch of 1 | ms/image (median) | "
                     f"{r['inference_ms_per_image']:.1f} |")  # fmt: skip
    repro = results["repro"]
    lines.append(f"| `dvc repro`, {repro['pipeline']}, from scratch | s | "
                 f"{repro['from_scratch_s']:.0f} |")  # fmt: skip
    lines.append(f"| `dvc repro`, {repro['pipeline']}, nothing changed | s | "
                 f"{repro['no_change_s']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--full-repro", action="store_true", help="time the default dvc repro")
    parser.add_argument("--segment-images", type=int, default=40, help="images per method")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="all-detect-bench-") as tmp:
        scratch = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        root = prepare_demo(scratch / "demo", DEMO)
        cfg = compose(list(DEMO))
        if REAL_IMAGES.is_dir():
            source = "ALL-IDB2"
            images = sorted(p for p in REAL_IMAGES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            source = "synthetic demo"
            images = sorted((root / cfg.dataset.root).glob("*.png"))
        results: dict[str, Any] = {"machine": machine()}
        results["machine"]["train_device"] = str(resolve_device(cfg.train.device).device)
        data_dir = root / paths.prepared(cfg.dataset.name)
        sections = {
            "segmentation": partial(bench_segmentation, images[: args.segment_images], source),
            "training_loop": lambda: [
                bench_training_loop(data_dir, cfg, m) for m in ("resnet50", "densenet121")
            ],
            "models": partial(bench_models, root, cfg),
            "repro": partial(bench_repro, args.full_repro, scratch),
        }
        for name, measure in sections.items():  # saved after each: a late failure keeps the rest
            results[name] = measure()
            atomic_write_json(args.out, results)
    print(markdown(results))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
