#!/usr/bin/env bash
# Train the shipped teachers (p = 17, 33, 65) with the project's own `ustudents teacher` command:
# distilled from EfficientNet-Lite0, plus compactness. Writes out/teachers/teacher_p<p>.npz and
# .json manifests; scripts/package_teachers.py then stores them as package data.
#   bash scripts/train_teachers.sh [ITERATIONS_17 ITERATIONS_33 ITERATIONS_65]
# The shipped ones: OPENBLAS_NUM_THREADS=1 on a shared 2-core CPU, 1200, 1200 and 300 iterations.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/teachers
its=("${1:-1200}" "${2:-1200}" "${3:-300}")
for i in 0 1 2; do
  p=$((i == 0 ? 17 : i == 1 ? 33 : 65))
  ustudents teacher --p "$p" --iterations "${its[$i]}" --out "out/teachers/teacher_p$p.npz" \
    --distill lite0 --lambda-k 1 --lambda-m 0 --lambda-c 1 --seed 0 2>&1 | tee "out/teachers/teacher_p$p.log"
done
