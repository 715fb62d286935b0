"""Throughput, latency and memory of each pipeline part, measured so a reader can trust them:
`python -m benchmarks.run_all [--dataset synthetic|cnmc] [--repeats 3] [--full-repro]`.

Every timing is one untimed warm-up run, then `--repeats` timed runs, reported as the median
and the range [min, max]. The script refuses (exit 2) when the 1-minute load average is above
`--max-load` (default: a quarter of the cores), since other work on the machine makes every
number slower by an unknown amount; `--allow-busy` runs anyway and records `"busy": true`. The
load average at start and end is always recorded (the end value includes this run's own load).

Measured (N = all cores, `os.cpu_count()`):
- `pool_startup`: a cold `parallel_map` of 8 no-op items at N workers in a fresh process
  (the smallest call that starts the pool; fewer items run inline), then the same call again
  with the pool warm; the difference is the start-up every stage process pays once;
- `segmentation`: images/s per method in this process at 1 and N workers (pool warm, so
  per-image throughput apart from the start-up) on ALL-IDB2 (`<repo>/../shared/data/ALL_IDB2`)
  when present, else the synthetic demo;
- `stages`: each per-image DVC stage (ingest, segment, crop, split, augment) run as DVC runs it,
  `python -m pipeline.stages.<name>` in a scratch workspace with its own params.yaml, with
  ALL_DETECT_JOBS=1 and =N: wall time (interpreter start, imports and pool start included),
  images/s, and peak RSS. `peak_rss_mib` is the stage process's `ru_maxrss` from `os.wait4`
  in a small launcher process (a child forked from this torch-holding one would inherit its
  RSS as high-water mark): the largest single process among the stage and its reaped workers,
  a maximum, not a sum. `peak_tree_rss_mib` is the RSS summed over the stage's process tree,
  sampled every 0.1 s (psutil): it can miss a short peak and counts shared pages per process;
- `training_loop`: training images/s of each torchvision network over the first batches
  holding `--train-images` images (256) through the real data pipeline versus
  forward+backward on random tensors of the same shape (ratio = how much of the compute the
  data pipeline leaves usable; target >= 0.9), at the dataset's configured input side;
- `models` (demo only): one-epoch `fit` wall time per model, and inference latency per image;
- `repro` (demo only): `dvc repro` wall time from scratch and with nothing changed, each run
  in a fresh repo: a `git clone` of HEAD with `--full-repro` (the default pipeline), else a
  tiny demo pipeline.

`--dataset cnmc` runs `stages` and `training_loop` on C-NMC fold 0 (`--cnmc-root`, default
`<repo>/../shared/data/C-NMC`) with `experiment=cnmc_scratch` (64 px). Writes `--out`
(`benchmarks/results/latest.json`, one section per dataset: a run replaces its own dataset's
section and keeps the other's) after each section, and at the end the Markdown tables beside
it (`latest.md`) and this run's table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import OmegaConf
from torch import nn

from pipeline import manifest, paths, tracking
from pipeline.config import compose, write_params
from pipeline.io import IMAGE_SUFFIXES, atomic_write_json, atomic_write_text, read_image
from pipeline.models.base import build_model
from pipeline.models.torchvision_cnn import build_network, make_optimizer
from pipeline.parallel import parallel_map
from pipeline.preprocess.segment import segment_cell
from pipeline.train.context import TrainContext
from pipeline.train.data import image_folder, make_loader, train_transform
from pipeline.train.device import resolve_device

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_IMAGES = SHARED_DATA / "ALL_IDB2" / "img"
CNMC_ROOT = SHARED_DATA / "C-NMC"
RESULTS = REPO / "benchmarks" / "results" / "latest.json"
MODELS = ("svm_hog", "resnet50", "resnet50_svm", "densenet121", "yolov8")
NETWORKS = ("resnet50", "densenet121")  # the training-loop comparison
STAGES = ("ingest", "segment", "crop", "split", "augment")  # per-image stages, dvc.yaml order
DATASETS = ("synthetic", "cnmc")
SECTIONS = ("pool_startup", "segmentation", "stages", "training_loop", "models", "repro")
DEMO_ONLY = ("models", "repro")
EXIT_REFUSED = 2
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
# Starts argv[2:], reaps it with os.wait4 and writes its wall seconds and ru_maxrss to argv[1].
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
child.returncode = rc = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as report:
    json.dump({"rc": rc, "seconds": seconds, "maxrss": usage.ru_maxrss}, report)
"""
# Run in a fresh process: the cold call starts the worker pool, the second reuses it.
POOL_PROBE = """
import json, sys, time
from pipeline.parallel import parallel_map
seconds = []
for _ in range(2):
    start = time.perf_counter()
    parallel_map(abs, range(8), desc="pool probe", jobs=int(sys.argv[1]))
    seconds.append(time.perf_counter() - start)
print("POOL " + json.dumps(seconds))
"""


class Refused(Exception):
    """The benchmark would measure something other than what it claims (exit 2)."""


def timed(func: Callable[[], Any]) -> float:
    """Wall seconds of one call (perf_counter: monotonic, the finest clock)."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def repeat(func: Callable[[], T], repeats: int) -> list[T]:
    """One untimed warm-up call (caches, pools, lazy imports), then `repeats` kept calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    func()
    return [func() for _ in range(repeats)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements: one number hides how much a run varies."""
    if not values:
        raise ValueError("no measurements to summarise")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def flat(key: str, values: Sequence[float]) -> dict[str, Any]:
    """`key` = the median (the value earlier results held) and `key_range` = [min, max]."""
    summary = spread(values)
    return {key: summary["median"], f"{key}_range": [summary["min"], summary["max"]]}


def check_load(max_load: float, allow_busy: bool) -> dict[str, Any]:
    """The load record for the results; raises `Refused` on a busy machine unless allowed."""
    cores = os.cpu_count() or 1
    load = list(os.getloadavg())
    busy = load[0] > max_load
    if busy and not allow_busy:
        raise Refused(
            f"refusing to benchmark a busy machine: 1-minute load {load[0]:.2f} > --max-load "
            f"{max_load:.2f} ({cores} cores); wait for it to drop or pass --allow-busy"
        )
    return {"busy": busy, "load": {"start": load, "max_load": max_load, "cores": cores}}


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, this venv's `python` first on PATH, the repo importable."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "DVC_NO_ANALYTICS": "1",
        "YOLO_OFFLINE": "1",
        **extra,
    }


def run(command: Sequence[str], cwd: Path, **env: str) -> None:
    """A subprocess; its output only on failure."""
    done = subprocess.run(command, cwd=cwd, env=child_env(**env), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def _tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sample the summed RSS of the descendants of `pid` into `peak[0]` until `stop`."""
    try:
        import psutil
    except ImportError:  # optional: peak_tree_rss_mib is then null
        return
    try:
        launcher = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            for process in launcher.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += process.memory_info().rss
        except psutil.Error:
            return
        peak[0] = max(peak[0], total)
        stop.wait(0.1)


def run_measured(command: Sequence[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `command` and return its wall seconds, peak RSS (MiB) and stdout.

    Peak RSS is the `ru_maxrss` that `os.wait4` returns for the command's process: the largest
    of it and the descendants it reaped (its pool workers), not their sum. A forked child
    starts with its parent's RSS as its high-water mark, so the command is started by a small
    launcher process (LAUNCHER), not by this one, which holds torch. `getrusage(RUSAGE_CHILDREN)`
    deltas cannot work: it is a high-water mark over every child ever reaped.
    """
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        report, out, err = Path(tmp) / "report.json", Path(tmp) / "out", Path(tmp) / "err"
        stop, peak = threading.Event(), [0]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            launcher = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(report), *command],
                cwd=cwd, env=env, stdout=stdout, stderr=stderr,
            )  # fmt: skip
            sampler = threading.Thread(target=_tree_rss, args=(launcher.pid, stop, peak))
            sampler.start()
            launcher.wait()
            stop.set()
            sampler.join()
        output = out.read_text(errors="replace")
        measured = json.loads(report.read_text()) if report.is_file() else {"rc": None}
        if measured["rc"] != 0 or launcher.returncode != 0:
            tail = output[-3000:] + err.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command)} failed ({measured['rc']}):\n{tail}")
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "seconds": measured["seconds"],
        "peak_rss_mib": measured["maxrss"] * unit / 2**20,
        "peak_tree_rss_mib": peak[0] / 2**20 if peak[0] else None,
        "stdout": output,
    }


def machine() -> dict[str, Any]:
    """What the numbers depend on besides the code: hardware, versions, thread settings."""
    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": tracking.cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        # thread and worker settings inherited from the caller change every number
        "env": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ALL_DETECT_JOBS")
        },
    }


def workspace(root: Path, overrides: Sequence[str]) -> Path:
    """A scratch folder with its own params.yaml, as DVC would run stages in."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root / "params.yaml", overrides)
    return root


def bench_pool_startup(jobs: int, repeats: int) -> dict[str, Any]:
    """Start-up of the worker pool, apart from any per-image work: each run a fresh process."""

    def once() -> list[float]:
        probe = run_measured([sys.executable, "-c", POOL_PROBE, str(jobs)], REPO, child_env())
        line = next(x for x in probe["stdout"].splitlines() if x.startswith("POOL "))
        return json.loads(line.removeprefix("POOL "))

    runs = repeat(once, repeats)
    return {
        "jobs": jobs,
        "items": 8,
        **flat("cold_s", [cold for cold, _ in runs]),
        **flat("warm_s", [warm for _, warm in runs]),
        **flat("startup_s", [cold - warm for cold, warm in runs]),
    }


def _segment_file(path: str, cfg: Any) -> bool:
    return segment_cell(read_image(path), cfg).found


def bench_segmentation(
    images: list[Path], source: str, jobs_list: Sequence[int], repeats: int
) -> list[dict[str, Any]]:
    """Per-image segmentation throughput; the warm-up starts the pool, so it is not timed."""
    rows = []
    for method in ("otsu", "otsu_active_contour"):
        cfg = compose([f"segment.method={method}"]).segment
        for jobs in jobs_list:
            work = partial(
                parallel_map,
                partial(_segment_file, cfg=cfg),
                [str(p) for p in images],
                desc=f"segment {method} x{jobs}",
                jobs=jobs,
            )
            seconds = repeat(partial(timed, work), repeats)
            rows.append(
                {
                    "method": method,
                    "jobs": jobs,
                    "images": len(images),
                    **flat("images_per_s", [len(images) / s for s in seconds]),
                    "source": source,
                }
            )
    return rows


def _count(path: Path) -> int | None:
    """Rows of a manifest table, None when the stage did not write it."""
    return len(manifest.read(path)) if path.is_file() else None


def bench_stages(
    root: Path, dataset: str, jobs_list: Sequence[int], repeats: int
) -> list[dict[str, Any]]:
    """Each per-image stage as its own process in `root`, at each worker count.

    Stages run in dvc.yaml order; each run replaces the stage's outputs atomically, so the
    next stage always reads a complete input.
    """
    rows = []
    for name in STAGES:
        for jobs in jobs_list:
            command = [sys.executable, "-m", f"pipeline.stages.{name}"]
            env = child_env(ALL_DETECT_JOBS=str(jobs))
            runs = repeat(partial(run_measured, command, root, env), repeats)
            images = _count(root / paths.manifest(dataset)) or 0
            seconds = [r["seconds"] for r in runs]
            trees = [r["peak_tree_rss_mib"] for r in runs if r["peak_tree_rss_mib"]]
            rows.append(
                {
                    "stage": name,
                    "jobs": jobs,
                    "images": images,
                    **flat("seconds", seconds),
                    **flat("images_per_s", [images / s for s in seconds]),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                    "peak_tree_rss_mib": max(trees) if trees else None,
                }
            )
            if name == "augment":
                rows[-1]["images_written"] = _count(root / paths.prepared(dataset) / "manifest.csv")
    return rows


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable) -> list[int]:
    """The loop's own work per batch (forward, loss, backward, step); returns the batch sizes."""
    criterion, sizes = nn.CrossEntropyLoss(), []
    model.train()
    for images, targets in batches:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sizes.append(len(targets))
    return sizes


def bench_training_loop(
    data_dir: Path, cfg: Any, model_name: str, repeats: int, max_images: int
) -> dict[str, Any]:
    """Images/s through ImageFolder + transforms versus on random tensors of the same shape,
    over the first batches holding `max_images` (whole batches; the epoch if smaller)."""
    config = OmegaConf.to_container(cfg.models[model_name], resolve=True)
    size, batch = cfg.crop.size, int(config["batch_size"])
    max_batches = -(-max_images // batch)
    loader = make_loader(
        image_folder(data_dir, "train", train_transform(size)), batch, shuffle=True, seed=0
    )
    network = build_network(config, pretrained=False)
    optimizer = make_optimizer(config, network.parameters())
    sizes: list[int] = []

    def pipeline_pass() -> float:
        start = time.perf_counter()
        sizes[:] = _steps(network, optimizer, itertools.islice(loader, max_batches))
        return sum(sizes) / (time.perf_counter() - start)

    real = repeat(pipeline_pass, repeats)
    synthetic = [(torch.randn(n, 3, size, size), torch.randint(0, 2, (n,))) for n in sizes]
    raw = repeat(
        lambda: sum(sizes) / timed(partial(_steps, network, optimizer, synthetic)), repeats
    )
    pipeline_median, raw_median = statistics.median(real), statistics.median(raw)
    return {
        "model": model_name,
        **flat("pipeline_images_per_s", real),
        **flat("raw_images_per_s", raw),
        "ratio": pipeline_median / raw_median,
        "batch_size": batch,
        "batches": len(sizes),
        "image_size": size,
        "torch_threads": torch.get_num_threads(),
    }


def _fit(config: dict[str, Any], cfg: Any, data_dir: Path) -> tuple[Any, float]:
    """A fresh classifier fitted in its own work folder (no checkpoint to resume from), with
    the train stage's context; returns it and the fit seconds."""
    classifier = build_model(config)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-fit-"))
    try:
        ctx = TrainContext.from_config(cfg, data_dir, work_dir)
        return classifier, timed(partial(classifier.fit, ctx))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _latency_ms(classifier: Any, images: Sequence[Any]) -> float:
    """Median ms per image, one image per call (a service's batch of one)."""
    return 1000 * statistics.median(
        timed(partial(classifier.predict_proba, [image])) for image in images
    )


def bench_models(root: Path, cfg: Any, repeats: int) -> list[dict[str, Any]]:
    """One epoch of `fit` per model (wall time, images/s), then per-image inference latency."""
    data_dir = root / paths.prepared(cfg.dataset.name)
    n_train = sum(1 for p in (data_dir / "train").rglob("*") if p.suffix in IMAGE_SUFFIXES)
    test = sorted(p for p in (data_dir / "test").rglob("*") if p.suffix in IMAGE_SUFFIXES)
    test_images = [read_image(p) for p in test[:10]]
    rows = []
    for name in MODELS:
        config = OmegaConf.to_container(cfg.models[name], resolve=True)
        fits = repeat(partial(_fit, config, cfg, data_dir), repeats)
        seconds = [s for _, s in fits]
        classifier = fits[-1][0]
        rows.append(
            {
                "model": name,
                **flat("fit_seconds", seconds),
                "fit_train_images_per_s": n_train / statistics.median(seconds),
                **flat(
                    "inference_ms_per_image",
                    repeat(partial(_latency_ms, classifier, test_images), repeats),
                ),
            }
        )
    return rows


def _repro_repo(full: bool, repo: Path) -> Path:
    """A throw-away repo to `dvc repro` in: a clone of HEAD, or the tiny demo pipeline."""
    if full:
        run(["git", "clone", "-q", str(REPO), str(repo)], repo.parent)
        return repo
    repo.mkdir()
    shutil.copy2(REPO / "dvc.yaml", repo / "dvc.yaml")
    for folder in ("pipeline", "conf"):  # stage deps
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__py*"))
    write_params(repo / "params.yaml", TINY)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    return repo


def bench_repro(full: bool, scratch: Path, repeats: int) -> dict[str, Any]:
    """`dvc repro` from scratch, then again with nothing changed, in a fresh repo each time."""
    counter = itertools.count()

    def once() -> tuple[float, float]:
        index = next(counter)  # warm-up included: each run its own repo and store
        repo = _repro_repo(full, scratch / f"repro-{index}")
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/repro-{index}-mlflow.db"}
        dvc = [sys.executable, "-m", "dvc", "repro"]
        result = timed(partial(run, dvc, repo, **env)), timed(partial(run, dvc, repo, **env))
        shutil.rmtree(repo, ignore_errors=True)
        return result

    timings = repeat(once, repeats)
    return {
        "pipeline": "default (git clone of HEAD)" if full else "tiny demo",
        **flat("from_scratch_s", [a for a, _ in timings]),
        **flat("no_change_s", [b for _, b in timings]),
    }


def _fmt(row: dict[str, Any], key: str, digits: int = 1) -> str:
    """'median [min, max]' of a `flat` key."""
    low, high = row[f"{key}_range"]
    return f"{row[key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _lines(results: dict[str, Any]) -> Iterator[str]:
    info, load = results["machine"], results["load"]
    settings = results["settings"]
    yield (
        f"Measured {info['date']} on {info['cpu_count']} CPU cores, device {info['device']}, "
        f"torch {info['torch']}; dataset {settings['dataset']}; median [min, max] of "
        f"{settings['repeats']} runs after 1 warm-up."
    )
    end = load.get("end")
    yield (
        f"1-minute load at start {load['start'][0]:.2f}"
        + (f", at end {end[0]:.2f}" if end else "")
        + ("; BUSY machine (--allow-busy): numbers are pessimistic." if results["busy"] else ".")
    )
    yield ""
    yield "| What | Measure | Value |"
    yield "|---|---|---|"
    if p := results.get("pool_startup"):
        what = f"worker pool start-up, {p['jobs']} workers (cold minus warm call)"
        yield f"| {what} | s | {_fmt(p, 'startup_s', 2)} |"
    for r in results.get("segmentation", []):
        what = (
            f"segment `{r['method']}` in-process, {r['jobs']} job(s) "
            f"({r['source']}, {r['images']} images, pool warm)"
        )
        yield f"| {what} | images/s | {_fmt(r, 'images_per_s', 2)} |"
    for r in results.get("stages", []):
        what = f"stage `{r['stage']}`, {r['jobs']} job(s), {r['images']} images"
        tree = "-" if r["peak_tree_rss_mib"] is None else f"{r['peak_tree_rss_mib']:.0f}"
        yield f"| {what} | s | {_fmt(r, 'seconds')} |"
        yield f"| {what} | images/s | {_fmt(r, 'images_per_s')} |"
        rss = f"{r['peak_rss_mib']:.0f} / {tree}"
        yield f"| {what} | peak RSS MiB, largest process / tree | {rss} |"
    for r in results.get("training_loop", []):
        what = (
            f"train {r['model']} ({r['image_size']} px, "
            f"{r['batches']} batches of {r['batch_size']})"
        )
        yield (
            f"| {what} | images/s data pipeline / random tensors (ratio of medians) | "
            f"{_fmt(r, 'pipeline_images_per_s')} / {_fmt(r, 'raw_images_per_s')} "
            f"({r['ratio']:.2f}) |"
        )
    for r in results.get("models", []):
        yield (
            f"| {r['model']} one-epoch `fit` (incl. val, setup) | s (train images/s) | "
            f"{_fmt(r, 'fit_seconds')} ({r['fit_train_images_per_s']:.1f}) |"
        )
        latency = _fmt(r, "inference_ms_per_image")
        yield f"| {r['model']} inference, batch of 1 | ms/image | {latency} |"
    if repro := results.get("repro"):
        what = f"`dvc repro`, {repro['pipeline']}"
        yield f"| {what}, from scratch | s | {_fmt(repro, 'from_scratch_s', 0)} |"
        yield f"| {what}, nothing changed | s | {_fmt(repro, 'no_change_s')} |"


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table (the sections that ran)."""
    return "\n".join(_lines(results))


def markdown_by_dataset(saved: dict[str, dict[str, Any]]) -> str:
    """One titled table per dataset of a results file."""
    return "\n\n".join(f"## {name}\n\n{markdown(results)}" for name, results in saved.items())


def read_saved(out: Path) -> dict[str, dict[str, Any]]:
    """The per-dataset sections already in `out` ({} when it does not exist yet). Anything else
    there is refused rather than overwritten: it is not this script's to lose."""
    if not out.exists():
        return {}
    try:
        saved = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise Refused(f"{out} is not a readable results file ({exc}); pass another --out") from None
    if not (isinstance(saved, dict) and set(saved) <= set(DATASETS)):
        raise Refused(f"{out} is not laid out by dataset {DATASETS}; pass another --out")
    return saved


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each option's default."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; defaults scale with the cores (--max-load) where they should."""
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic",
                        help="synthetic: the generated demo; cnmc: C-NMC fold 0 (stages and "
                             "training loop only)")  # fmt: skip
    parser.add_argument("--cnmc-root", type=Path, default=CNMC_ROOT, help="C-NMC folder")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--max-load", type=float, default=0.25 * cores,
                        help="refuse above this 1-minute load average (cores / 4)")  # fmt: skip
    parser.add_argument("--allow-busy", action="store_true",
                        help="run above --max-load anyway; the results say busy: true")  # fmt: skip
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="sections")
    parser.add_argument("--full-repro", action="store_true", help="time the default dvc repro")
    parser.add_argument("--segment-images", type=int, default=40, help="images per method")
    parser.add_argument("--train-images", type=int, default=256,
                        help="training-loop images per timed pass (whole batches)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Refuse early (exit 2) when the numbers could not be trusted, else measure and save."""
    args = parse_args(argv)
    cnmc = args.dataset == "cnmc"
    try:
        if cnmc and not (args.cnmc_root / "training_data" / "fold_0").is_dir():
            raise Refused(f"--dataset cnmc: no C-NMC fold 0 at {args.cnmc_root / 'training_data'}")
        others = read_saved(args.out)  # refused before measuring, not after
        state = check_load(args.max_load, args.allow_busy)
    except Refused as exc:
        print(f"benchmarks.run_all: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    os.environ.setdefault("YOLO_OFFLINE", "1")
    jobs_list = sorted({1, os.cpu_count() or 1})
    sections = [s for s in SECTIONS if s not in args.skip and not (cnmc and s in DEMO_ONLY)]
    if cnmc:
        overrides = ("experiment=cnmc_scratch", f"dataset.root={args.cnmc_root.resolve()}")
    else:
        overrides = DEMO
    cfg = compose(list(overrides))
    results: dict[str, Any] = {"machine": machine(), **state}
    results["machine"]["train_device"] = str(resolve_device(cfg.train.device).device)
    with tempfile.TemporaryDirectory(prefix="all-detect-bench-") as tmp:
        scratch = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        root = workspace(scratch / "workspace", overrides)
        if not cnmc:
            run([sys.executable, "-m", "pipeline.stages.generate_demo"], root)
        if REAL_IMAGES.is_dir():
            source = "ALL-IDB2"
            images = sorted(p for p in REAL_IMAGES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            source = "synthetic demo"
            images = [] if cnmc else sorted((root / cfg.dataset.root).glob("*.png"))
        data_dir = root / paths.prepared(cfg.dataset.name)
        measures: dict[str, Callable[[], Any]] = {
            "pool_startup": partial(bench_pool_startup, max(jobs_list), args.repeats),
            "segmentation": partial(
                bench_segmentation, images[: args.segment_images], source, jobs_list, args.repeats
            ),
            "stages": partial(bench_stages, root, cfg.dataset.name, jobs_list, args.repeats),
            "training_loop": lambda: [
                bench_training_loop(data_dir, cfg, m, args.repeats, args.train_images)
                for m in NETWORKS
            ],
            "models": partial(bench_models, root, cfg, args.repeats),
            "repro": partial(bench_repro, args.full_repro, scratch, args.repeats),
        }
        if "segmentation" in sections and not images:
            sections.remove("segmentation")  # C-NMC is segmented already; no ALL-IDB2 here
        results["settings"] = {"dataset": args.dataset, "overrides": list(overrides),
                               "repeats": args.repeats, "warmup_runs": 1, "jobs": jobs_list,
                               "sections": sections, "segment_images": args.segment_images,
                               "train_images": args.train_images}  # fmt: skip
        try:
            for name in sections:  # saved after each: a late failure keeps the rest
                if name in ("training_loop", "models") and not data_dir.is_dir():
                    for stage in STAGES:  # `stages` skipped: prepare the dataset untimed
                        run([sys.executable, "-m", f"pipeline.stages.{stage}"], root)
                results[name] = measures[name]()
                atomic_write_json(args.out, {**others, args.dataset: results})
        finally:
            results["load"]["end"] = list(os.getloadavg())
            saved = {**others, args.dataset: results}
            atomic_write_json(args.out, saved)
    atomic_write_text(args.out.with_suffix(".md"), markdown_by_dataset(saved) + "\n")
    print(markdown(results))
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
