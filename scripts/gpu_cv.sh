#!/usr/bin/env bash
# Cross-validation of every model plus the ensemble on a GPU host that gets a copy of the
# working tree but no git repository (e.g. a lent machine, after benchmarks/device_carry.py's
# earlier calls): DVC runs the DAG without SCM, `snapshot` freezes the result, and one archive
# of reports/experiments/<name> goes to $OUT (default: the current folder).
#   [STAGES="cv@resnet50 cv@densenet121"] bash scripts/gpu_cv.sh <name> "<note>" key=value ...
#   bash .devcarry/part3/run.sh bash scripts/gpu_cv.sh cnmc_nested_gpu "main at <sha>, H200" \
#        experiment=cnmc_nested dataset.root=/tmp/C-NMC train.num_workers=8
# STAGES (default: every model's CV and the ensemble) are DVC targets; the note should name the
# commit and the machine, which the host cannot read. train.device defaults to cuda, so a host
# without a GPU stops instead of training on its CPU.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
name=$1 note=$2
shift 2
out=${OUT:-.}
read -r -a stages <<<"${STAGES:-cv ensemble_cv}"
start=$SECONDS
python -m pipeline.config write train.device=cuda "$@"
python -m dvc config --local core.no_scm true
python -m dvc repro "${stages[@]}"
minutes=$(((SECONDS - start) / 60))
patterns=(ingest segment crop)
for stage in "${stages[@]}"; do
  case $stage in cv) patterns+=('cv@*') ;; *) patterns+=("$stage") ;; esac
done
python -m pipeline.stages.snapshot "$name" --stages "${patterns[@]}" \
  --note "$note; STAGES=\"${stages[*]}\" bash scripts/gpu_cv.sh $name ... $*: $minutes min wall"
tar -C reports/experiments -cJf "$out/$name.tar.xz" "$name"
echo "gpu_cv: wrote $out/$name.tar.xz"
