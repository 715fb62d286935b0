#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): every model on C-NMC fold 0 at 224 px on
# CUDA for a short budget, plus one DDP epoch when several GPUs are visible; writes
# benchmarks/results/gpu_check.json (or --out). Exits 2 when CUDA is absent.
#   bash scripts/gpu_check.sh [--root /abs/C-NMC] [--epochs N] [--out file] [key=value ...]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$REPO/.venv/bin/python" ] && . "$REPO/.venv/bin/activate"
cd "$REPO"
exec python -m benchmarks.gpu_check "$@"
