#!/usr/bin/env bash
# Train every model for one epoch on the demo on CUDA, in a throw-away workspace, and print
# per-model wall seconds and peak GPU memory (torch.cuda.max_memory_allocated of the stage's own
# process). Usage: bash scripts/gpu_check.sh [extra key=value overrides for every stage]
# Exits 2 with a clear message when CUDA is not available; 1 when any model fails.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$REPO/.venv/bin/python" ] && . "$REPO/.venv/bin/activate"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" YOLO_OFFLINE=1 PYTHONUNBUFFERED=1

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is not available to torch $(python -c 'import torch; print(torch.__version__)') on this machine; nothing to check" >&2
    exit 2
fi
python -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

WS="$(mktemp -d -t gpu-check-XXXXXX)"
trap 'rm -rf "$WS"' EXIT
cd "$WS"
export MLFLOW_TRACKING_URI="sqlite:///$WS/mlflow.db"
python -m pipeline.config write "$@" >/dev/null   # params.yaml of the demo (no dvc.yaml here)
for stage in generate_demo ingest segment crop split augment; do
    python -m pipeline.stages.$stage >"$WS/$stage.log" 2>&1 || { tail -20 "$WS/$stage.log"; exit 1; }
done

failed=0
printf '%-13s %10s %14s\n' model seconds peak_gpu_MiB
for model in svm_hog resnet50 resnet50_svm densenet121 yolov8; do
    python - "$model" "$@" >"$WS/train_$model.out" 2>"$WS/train_$model.log" <<'EOF' || failed=1
import sys, time

import torch

from pipeline.stages import train

model, extra = sys.argv[1], sys.argv[2:]
epochs = [] if model == "svm_hog" else [f"models.{model}.epochs=1"]
start = time.perf_counter()
rc = train.main([model, "train.device=cuda", *epochs, *extra])
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated() / 2**20
print(f"{model:<13} {seconds:10.1f} {peak:14.0f}" + ("" if rc == 0 else f"  FAILED (rc {rc})"))
sys.exit(rc)
EOF
    cat "$WS/train_$model.out"
    [ -s "$WS/train_$model.out" ] || { echo "$model: crashed"; tail -20 "$WS/train_$model.log"; }
done
exit $failed
