#!/usr/bin/env bash
# Train the shipped teachers (p = 17, 33, 65) with the project's own `ustudents teacher` command:
# distilled from EfficientNet-Lite0, plus compactness. Writes out/teachers/teacher_p<p>.npz and
# .json manifests; scripts/package_teachers.py then stores them as package data. Each run also
# leaves teacher_p<p>.ckpt.npz: `ustudents teacher --resume THAT --iterations MORE --out ...`
# trains it on (in a later session, on a GPU).
#   bash scripts/train_teachers.sh [ITERATIONS_17 ITERATIONS_33 ITERATIONS_65]
# The shipped ones, on a 2-core CPU: p = 17 with lambda_k 1 for 2800 iterations (Lk starts to
# fall after about 1600), p = 33 with lambda_k 20, where Lk falls after a few hundred, for 1200
# (OPENBLAS_NUM_THREADS=1 each, the CPU shared); p = 65 is RECIPE=full's, 600 iterations
# (`RECIPE=full bash scripts/train_teachers.sh 0 0 600`; docs/teachers.md measures it).
# RECIPE=metric (triplet + compactness) or RECIPE=compactness (compactness alone) trains, with the
# same settings otherwise, the teachers they are compared with, into out/metric_only or
# out/compactness_only (package_teachers.py --compare NAME=FOLDER); RECIPE=full (the paper's three
# losses: the shipped recipe plus the triplet, lambda_m 1) into out/full_loss.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${RECIPE:-distill}" in
  distill)     out=out/teachers;         losses=(--distill lite0 --lambda-m 0 --lambda-c 1) ;;
  metric)      out=out/metric_only;      losses=(--distill none --lambda-k 0 --lambda-m 1 --lambda-c 1) ;;
  compactness) out=out/compactness_only; losses=(--distill none --lambda-k 0 --lambda-m 0 --lambda-c 1) ;;
  full)        out=out/full_loss;        losses=(--distill lite0 --lambda-m 1 --lambda-c 1) ;;
  *) echo "RECIPE must be distill, metric, compactness or full, not '$RECIPE'" >&2; exit 2 ;;
esac
mkdir -p "$out"
its=("${1:-2800}" "${2:-1200}" "${3:-600}")
lambda_k=(1 20 20)                           # distillation's weight at p = 17, 33, 65 (distill only)
for i in 0 1 2; do
  p=$((i == 0 ? 17 : i == 1 ? 33 : 65))
  [ "${its[$i]}" -gt 0 ] || continue          # 0 iterations: skip this p
  weight=()
  case "${RECIPE:-distill}" in distill|full) weight=(--lambda-k "${lambda_k[$i]}") ;; esac
  ustudents teacher --p "$p" --iterations "${its[$i]}" --out "$out/teacher_p$p.npz" \
    "${losses[@]}" "${weight[@]}" --seed 0 2>&1 | tee "$out/teacher_p$p.log"
done
