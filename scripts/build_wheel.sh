#!/usr/bin/env bash
# Build a release wheel of deconv_ext against the torch installed for $PYTHON.
#
#   scripts/build_wheel.sh cpu  [OUT_DIR]    CPU-only (USE_CUDA=0)           -> deconv_ext-0.1.0+pt2.14cpu-cp310-abi3-linux_x86_64.whl
#   scripts/build_wheel.sh cuda [OUT_DIR]    CPU + CUDA kernels (FORCE_CUDA=1) -> deconv_ext-0.1.0+pt2.14cu130-cp310-abi3-linux_x86_64.whl
#
# OUT_DIR defaults to wheelhouse/. The wheel is built with the torch (and its CUDA) that $PYTHON imports, and
# only runs with a torch of the same major.minor; its local version tag names both (+pt2.14cu130).
# One wheel serves every CPython >= the torch's floor (abi3). Environment:
#   PYTHON                 interpreter whose torch to build against (default: python)
#   TORCH_CUDA_ARCH_LIST   cuda only; default below: SASS for Turing 7.5, Ampere 8.0/8.6, Ada 8.9, Hopper 9.0,
#                          Blackwell 10.0/12.0 (CUDA 13 dropped < 7.5; SASS sm_XY also runs on X.Z for Z >= Y,
#                          so 8.7, 10.3, 12.1 are covered), plus PTX 12.0 that the driver JIT-compiles on newer
#                          GPUs. Not covered: 11.0 (Thor, aarch64 only). `nvcc --list-gpu-code` lists what
#                          your nvcc can build; `deconv-ext info` shows how each visible GPU is served.
#   MAX_JOBS               parallel compile jobs (default 2)
set -euo pipefail

DEFAULT_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"

variant="${1:-}"
out_dir="${2:-wheelhouse}"
python="${PYTHON:-python}"
case "$variant" in
  cpu)  export USE_CUDA=0 ;;
  cuda) export USE_CUDA=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$DEFAULT_CUDA_ARCH_LIST}"
        echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" ;;
  *)    echo "usage: $0 cpu|cuda [OUT_DIR]" >&2; exit 2 ;;
esac
export MAX_JOBS="${MAX_JOBS:-2}"

cd "$(dirname "$0")/.."
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
# build/lib* is what gets packed: clear it so no file of an earlier build (a removed module, the other
# variant's build record) rides along. build/temp* stays: ninja rebuilds only what changed.
rm -rf build/lib.* build/bdist.*

"$python" -m pip wheel --no-build-isolation --no-deps --disable-pip-version-check -w "$out_dir" .
wheel="$(ls -t "$out_dir"/deconv_ext-*.whl | head -n 1)"
echo "built $wheel"
