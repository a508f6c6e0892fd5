#!/usr/bin/env bash
# One-call GPU check of deconv_ext: build for the local GPU, run the test suite but the wheel builds (which then
# runs on CUDA too), compute-sanitizer memcheck and racecheck, bitwise determinism, and the benchmark
# against F.conv_transpose2d (cuDNN): `python -m deconv_ext bench --device cuda` (deconv_ext/bench.py, the
# same runner as the CPU benchmark; shapes deconv_ext.testing.BENCH_GPU; float32 with TF32 off and on,
# float16, bfloat16; forward and forward+backward; speedup = cuDNN time / ours). Needs: a CUDA GPU, nvcc,
# ninja, pytest, compute-sanitizer; no network. Every step runs (a failure is recorded, not fatal); the exit
# status is 0 only if every step passed. Results: ${GPU_CHECK_OUT:-./gpu_check_out}/
#   steps.log (one PASS/FAIL line per step), <step>.log (each step's output; bench.log: the full table), env.txt,
#   bench.md / bench.json (benchmark tables and geometric means), summary.txt (with the geometric means).
# Usage: bash benchmarks/gpu_check.sh          (about 5 minutes on an H100)
set -u
cd "$(dirname "$0")/.."
OUT=${GPU_CHECK_OUT:-./gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export GPU_CHECK_OUT=$OUT
: > "$OUT/steps.log"
FAILED=()
PY=${PYTHON:-python}

# step NAME TIMEOUT_S CMD...: runs CMD with a time limit, output to $OUT/NAME.log, PASS/FAIL to steps.log.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc cmd="$*"
  echo "=== $name: ${cmd%%$'\n'*}" >> "$OUT/steps.log"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local verdict=PASS
  if [ $rc -ne 0 ]; then
    verdict=FAIL
    [ $rc -eq 124 ] && verdict="FAIL (timed out after ${limit}s)"
    FAILED+=("$name")
  fi
  printf '%-12s %s rc=%d %ds\n' "$name" "$verdict" "$rc" $((SECONDS - t0)) | tee -a "$OUT/steps.log"
  [ $rc -ne 0 ] && tail -n 25 "$OUT/$name.log" | sed 's/^/    /'
  return 0
}

# ---- environment ------------------------------------------------------------------------------------
{
  date -u
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 2
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available())" 2>&1
  command -v compute-sanitizer || echo "compute-sanitizer: not on PATH"
  git rev-parse HEAD 2>/dev/null
} > "$OUT/env.txt"
cat "$OUT/env.txt"

ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
if [ -z "$ARCH" ]; then
  ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$ARCH}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
echo "building for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST with MAX_JOBS=$MAX_JOBS"

# ---- steps --------------------------------------------------------------------------------------------
step build 300 env FORCE_CUDA=1 $PY setup.py build_ext --inplace
step cuda_kernels 60 $PY -c "
import torch, deconv_ext
assert torch.cuda.is_available(), 'no GPU visible to torch'
for op in ('conv_transpose2d', 'conv_transpose2d_grad_input', 'conv_transpose2d_grad_weight', 'conv_transpose2d_grad_bias'):
    assert torch._C._dispatch_has_kernel_for_dispatch_key('deconv_ext::' + op, 'CUDA'), op + ' has no CUDA kernel'
print('CUDA kernels registered; build imported from', deconv_ext._C.__file__)"
# gpu_free: the CPU emulator and nvcc-report tests (CI runs them; minutes of CPU, nothing for the GPU)
step pytest 360 $PY -m pytest tests -q -p no:cacheprovider -rs -m "not wheel and not gpu_free" --maxfail=25
step determinism 120 $PY benchmarks/determinism_check.py --runs 10
rm -f "$OUT/bench.md" "$OUT/bench.json"  # no stale tables in the summary if the run fails
step bench 300 $PY -m deconv_ext bench --device cuda --json "$OUT/bench.json" --markdown "$OUT/bench.md"
# Sanitizers last: the slowest and least predictable steps.
SAN=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
step memcheck 240 "$SAN" --tool memcheck --error-exitcode 1 --leak-check no $PY benchmarks/sanitizer_case.py
step racecheck 240 "$SAN" --tool racecheck --error-exitcode 1 $PY benchmarks/sanitizer_case.py

# ---- summary ------------------------------------------------------------------------------------------
{
  cat "$OUT/steps.log" | grep -v '^==='
  [ -f "$OUT/bench.md" ] && sed -n '/^## Geometric mean/,$p' "$OUT/bench.md"  # the last section of bench.md
  if [ ${#FAILED[@]} -eq 0 ]; then echo "ALL STEPS PASSED"; else echo "FAILED STEPS: ${FAILED[*]}"; fi
} > "$OUT/summary.txt"
echo
cat "$OUT/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
