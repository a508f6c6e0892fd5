"""A small case calling all four deconv_ext ops, for compute-sanitizer (memcheck, racecheck).

The cases are deconv_ext.testing.GRID (every kernel variant: channel-blocked and unblocked, partial
channel blocks, groups, stride > kernel, dilation, split two-pass reductions, batch 0) in float32 and
float16 on the path the dispatcher picks (the SR cases take the sub-pixel forward), then GEMM_GRID forced
onto the tensor cores (DECONV_EXT_CUDA_PATH=gemm; GPUs of compute capability 8.0+) in float16 and float32
(TF32): its shared-memory stages, cp.async and ldmatrix are what racecheck is for. Judged by
deconv_ext.testing.Reference. Inputs are made on the CPU so that the sanitizer sees few kernels besides
ours. Exits non-zero if a result is wrong.
    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitizer_case.py
    python benchmarks/sanitizer_case.py --device cpu     # dry run without a GPU
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deconv_ext import dispatch  # noqa: E402
from deconv_ext.testing import GEMM_GRID, GRID, TF32_ROUNDOFF, Reference, run_ops  # noqa: E402


def check(device, dtype, cases=GRID, roundoff=0.0):
    ok = True
    for case in cases:
        x, w, b, gy = case.tensors(dtype, seed=0)
        ref = Reference(x, w, b, gy, **case.params)
        got = run_ops(*(None if t is None else t.to(device) for t in (x, w, b, gy)), case)
        for op_name, value in got.items():
            try:
                ref.check(op_name, value, context=f" [{case}, {dtype}]", input_roundoff=roundoff)
            except AssertionError as e:
                print("FAIL", e)
                ok = False
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    ok = all([check(args.device, dtype) for dtype in (torch.float32, torch.float16)])
    if args.device == "cuda" and torch.cuda.get_device_capability() >= (8, 0):
        torch.backends.cudnn.allow_tf32 = True
        # GEMM_GRID covers the tile tails, phases, split-K and groups; racecheck is slow on shared-memory-heavy
        # kernels, so the grid's cases (on the GEMM path in tests/test_cuda.py) are left out here.
        with dispatch.forced(cuda_path="gemm"):
            ok &= check("cuda", torch.float16, GEMM_GRID)
            ok &= check("cuda", torch.float32, GEMM_GRID, TF32_ROUNDOFF)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print("sanitizer case:", "ok" if ok else "WRONG RESULTS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
