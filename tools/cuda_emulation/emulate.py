"""Run the CUDA kernels' exact source on the CPU and compare them with PyTorch (no GPU needed).

csrc/cuda/{forward,grad_input,grad_weight}.cu are copied with three mechanical edits: the CUDA
headers are dropped, `kernel<...><<<grid, block, smem, stream>>>(args)` becomes a call of
emu::launch (emu_cuda.h: one std::thread per CUDA thread, real barriers for __syncthreads and
warp shuffles), and the stream is a dummy. The launchers, kernels and index math are otherwise
compiled unchanged, so a wrong index, bound or reduction order shows up here as on a GPU.
Slow (threads per CUDA thread), so shapes are tiny: deconv_ext.testing.GRID plus two launch-geometry
cases, judged by deconv_ext.testing.Reference (about 5 minutes on 2 cores, mostly compiling).
Usage: python tools/cuda_emulation/emulate.py
The 64-bit index path (normally taken only past 2^30 elements) runs with
    EMU_MUTATE="const bool small = fits_int32=>const bool small = !fits_int32" python tools/cuda_emulation/emulate.py
"""
import itertools
import os
import re
import sys
import tempfile

import torch
from torch.utils.cpp_extension import load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from deconv_ext.testing import GRID, Case, Reference  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CUDA_SRC = os.path.join(ROOT, "csrc", "cuda")


def transform(text):
    # EMU_MUTATE="old=>new" plants a bug, to check that the comparison below would catch it.
    if os.environ.get("EMU_MUTATE"):
        old, new = os.environ["EMU_MUTATE"].split("=>")
        text = text.replace(old, new)
    text = re.sub(r"#include <c10/cuda/[^>]+>\n", "", text)
    text = text.replace("c10::cuda::getCurrentCUDAStream()", "0").replace("C10_CUDA_KERNEL_LAUNCH_CHECK()", "(void)0")

    def launch(m):
        kernel, config = m.group(1), m.group(2)
        cap = 0 if "grad_bias" in kernel else 3  # grad_bias needs every block; the rest are grid-stride
        return f"::emu::launch({config}, {cap}u, [](auto... emu_a) {{ {kernel}(emu_a...); }}, "

    text, n = re.subn(r"(\b\w+_kernel<[^<>]*>)\s*<<<(.*?)>>>\(", launch, text, flags=re.S)
    assert n > 0
    return '#include "emu_cuda.h"\n' + text


def build():
    out = tempfile.mkdtemp(prefix="deconv_emu_")
    sources = [os.path.join(HERE, "bindings.cpp"), os.path.join(ROOT, "csrc", "conv_transpose2d.cpp")]
    for name in ("forward", "grad_input", "grad_weight"):
        with open(os.path.join(CUDA_SRC, name + ".cu")) as f:
            text = transform(f.read())
        path = os.path.join(out, name + "_emu.cpp")
        with open(path, "w") as f:
            f.write(text)
        sources.append(path)
    return load("deconv_emu", sources, extra_include_paths=[HERE, CUDA_SRC, os.path.join(ROOT, "csrc")],
                extra_cflags=["-O1", "-w"] + os.environ.get("EMU_CFLAGS", "").split(), extra_ldflags=os.environ.get("EMU_CFLAGS", "").split(), build_directory=out, verbose=False)


# The suite's correctness grid plus the launch geometries only the CUDA kernels have.
CASES = GRID + [
    Case("grid_stride_loops", 3, 4, 4, 17, 13, 2, stride=2),
    Case("split_reductions", 2, 1, 1, 40, 40, 2, stride=2),  # grad_weight/grad_bias in parts (= 3)
]


def main():
    mod = build()
    failures = checks = 0
    for case, dtype in itertools.product(CASES, (torch.float64, torch.float32, torch.bfloat16)):
        x, w, b, gy = case.tensors(dtype, seed=0)
        args = case.op_args
        got = {"forward": mod.forward(x, w, b, *args), "grad_input": mod.grad_input(gy, w, *args),
               "grad_weight": mod.grad_weight(gy, x, list(case.kernel), *args), "grad_bias": mod.grad_bias(gy)}
        ref = Reference(x, w, b, gy, **case.params)
        for op_name, value in got.items():
            checks += 1
            try:
                ref.check(op_name, value, context=f" [{case}, {dtype}]")
            except AssertionError as e:
                failures += 1
                print("FAIL", e)
        # same inputs twice: bitwise equal (fixed reduction order)
        assert torch.equal(mod.grad_weight(gy, x, list(case.kernel), *args), got["grad_weight"])
        assert torch.equal(mod.grad_bias(gy), got["grad_bias"])
    print(f"emulated CUDA kernels: {checks - failures}/{checks} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
