#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and CuPy: the test suite with CuPy forced, then the benchmarks.
# Sized to finish within about 3 minutes on one GPU. Needs no install: it runs from the checkout.
#   bash scripts/gpu_check.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu_check}
mkdir -p "$out"
export USTUDENTS_DEVICE=cuda PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python -c "from ustudents.backend import describe; print(describe())" || exit 1
status=0
python -m pytest -q -m "not slow" -p no:cacheprovider 2>&1 | tee "$out/tests.log" || status=1
python benchmarks/bench_layers.py --device cuda --repeat 10 --json "$out/bench_layers.json" || status=1
for bench in benchmarks/bench_dense.py benchmarks/bench_teacher.py; do
  [ -f "$bench" ] && { python "$bench" --device cuda --json "$out/$(basename "$bench" .py).json" || status=1; }
done
exit $status
