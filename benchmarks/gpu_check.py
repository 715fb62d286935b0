"""The prepared GPU check: every model trained and evaluated for a short budget on C-NMC fold 0
at the paper's 224 px, on CUDA, in a throw-away workspace; one DDP epoch of resnet50 when more
than one GPU is visible. Timings, peak GPU memory and test metrics go to one JSON.

    python -m benchmarks.gpu_check                      # ../shared/data/C-NMC beside the repo
    python -m benchmarks.gpu_check --root /abs/C-NMC --epochs 3 --out gpu_check.json
    python -m benchmarks.gpu_check --demo --device cpu --side 32   # a dry run of the script

Weights: random initialisation (`pretrained: none`), so the metrics after a short budget are
a smoke test of the hardware path, not results. Exits 2 when CUDA is asked for and absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "C-NMC"
RESULTS = REPO / "benchmarks" / "results" / "gpu_check.json"
MODELS = ("svm_hog", "resnet50", "resnet50_svm", "densenet121", "yolov8")
PREP = ("ingest", "segment", "crop", "split", "augment")
DEMO_PREP = ("generate_demo", *PREP)
# Runs one stage in its own process and prints its wall seconds and peak GPU memory as JSON.
STAGE_PROBE = """
import json, sys, time
import torch
from importlib import import_module
stage, args = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
rc = import_module(f"pipeline.stages.{stage}").main(args)
cuda = torch.cuda.is_available()
print("GPU_CHECK " + json.dumps({"rc": rc, "seconds": round(time.perf_counter() - start, 2),
      "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None}))
"""


def _stage(workspace: Path, stage: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", STAGE_PROBE, stage, *args],
        cwd=workspace, env=env, capture_output=True, text=True,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("GPU_CHECK ")]
    if not lines or json.loads(lines[-1][10:])["rc"] != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        return {"rc": done.returncode or 1, "error": tail}
    return json.loads(lines[-1][10:])


def _metrics(workspace: Path, dataset: str, model: str) -> dict[str, float]:
    path = workspace / "reports" / "metrics" / dataset / f"{model}.json"
    if not path.exists():
        return {}
    scores = json.loads(path.read_text())
    return {
        k: scores[k] for k in ("accuracy", "f1_weighted", "balanced_accuracy", "n") if k in scores
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="C-NMC root")
    parser.add_argument("--demo", action="store_true", help="the generated demo, not C-NMC")
    parser.add_argument("--side", type=int, default=224, help="crop side (paper: 224)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per CNN (YOLO: x3)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available to torch {torch.__version__}", file=sys.stderr)
        return 2
    if not args.demo and not args.root.is_dir():
        print(f"gpu_check: no C-NMC at {args.root} (--root, or --demo)", file=sys.stderr)
        return 2
    dataset = "synthetic" if args.demo else "cnmc"
    base = [] if args.demo else ["experiment=cnmc_scratch", f"dataset.root={args.root.resolve()}"]
    base += [f"crop.size={args.side}", "train.threads=null"]
    if args.device.startswith("cuda"):  # decoding in the main process starves a GPU
        base.append(f"train.num_workers={min(8, os.cpu_count() or 1)}")
    base += args.overrides
    epochs = [f"models.{m}.epochs={args.epochs}" for m in MODELS[1:4]]
    epochs.append(f"models.yolov8.epochs={3 * args.epochs}")
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if gpus:
        device = torch.cuda.get_device_name(0)
    else:  # the processor's model name (platform.processor() is often just "x86_64"); the
        # import loads MLflow, which a GPU check need not wait for
        from pipeline.tracking import cpu_model

        device = cpu_model()
    result: dict[str, Any] = {
        "what": f"{dataset} at {args.side} px, random init, {args.epochs} epoch(s) per CNN",
        "device": device,
        "gpus": gpus,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "overrides": base,
        "stages": {},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        workspace = Path(scratch)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace / 'mlflow.db'}"
        subprocess.run(
            [sys.executable, "-m", "pipeline.config", "write", *base, *epochs],
            cwd=workspace, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for stage in DEMO_PREP if args.demo else PREP:
            result["stages"][stage] = _stage(workspace, stage)
            _write(args.out, result, None)
            if result["stages"][stage]["rc"] != 0:
                print(result["stages"][stage]["error"], file=sys.stderr)
                return _write(args.out, result, 1)
        for model in MODELS:
            device = f"train.device={args.device}"
            row = {"train": _stage(workspace, "train", model, device)}
            if row["train"]["rc"] == 0:
                row["evaluate"] = _stage(workspace, "evaluate", model, device)
                row["test"] = _metrics(workspace, dataset, model)
            result["models"][model] = row
            _write(args.out, result, None)
            print(f"gpu_check {model}: {json.dumps(row)[:300]}", flush=True)
        if gpus > 1:
            ids = ",".join(str(i) for i in range(gpus))
            result["ddp_resnet50_one_epoch"] = _stage(
                workspace, "train", "resnet50", f"train.device={ids}", "models.resnet50.epochs=1"
            )
    failed = any(row["train"]["rc"] != 0 for row in result["models"].values())
    return _write(args.out, result, int(failed))


def _write(out: Path, result: dict[str, Any], rc: int | None) -> int:
    """Rewrite the whole JSON after every step, `rc` null until the end, so that a run cut
    off by a machine's time limit still leaves what it measured."""
    from pipeline.io import atomic_write_json

    result["rc"] = rc
    atomic_write_json(out, result)
    if rc is not None:
        print(f"gpu_check: wrote {out} (rc {rc})")
    return rc or 0


if __name__ == "__main__":
    raise SystemExit(main())
