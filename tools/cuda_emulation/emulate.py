"""Run the CUDA kernels' exact source on the CPU and compare them with PyTorch (no GPU needed).

The kernel files of both CUDA paths (csrc/cuda/{forward,grad_input,grad_weight}.cu: "simt";
csrc/cuda/*_gemm.cu with igemm.cuh: "gemm", the tensor cores) are copied with three mechanical edits: the
CUDA headers are dropped, `kernel<...><<<grid, block, smem, stream>>>(args)` becomes a call of
emu::launch (emu_cuda.h: one std::thread per CUDA thread, real barriers for __syncthreads and warp
shuffles), and the stream is a dummy. The inline PTX of mma.cuh (mma.sync, ldmatrix, cp.async, TF32
rounding) is replaced by emu_mma.h, written from the PTX ISA's per-lane fragment layouts, the warp meeting
at a barrier for each. The launchers, kernels and index math are otherwise compiled unchanged, so a wrong
index, fragment, bound or reduction order shows up here as on a GPU.
Slow (threads per CUDA thread), so shapes are tiny: deconv_ext.testing.GRID plus launch-geometry and
GEMM-tile cases, judged by deconv_ext.testing.Reference (minutes on 2 cores, mostly compiling).
Usage: python tools/cuda_emulation/emulate.py
The 64-bit index path (normally taken only past 2^30 elements) runs with DECONV_EXT_CUDA_INDEX64=1, and
EMU_MUTATE="old=>new" plants a bug anywhere under csrc/ (tests/test_emulator.py checks that one is caught).
"""
import itertools
import os
import re
import sys
import tempfile

import torch
from torch.utils.cpp_extension import load

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from deconv_ext.testing import GEMM_GRID, GRID, SUBPIXEL_GRID, TF32_ROUNDOFF, Case, Reference  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def mutate(text):
    # EMU_MUTATE="old=>new" plants a bug (in any file under csrc/), to check that the comparison would catch it.
    if os.environ.get("EMU_MUTATE"):
        old, new = os.environ["EMU_MUTATE"].split("=>")
        text = text.replace(old, new)
    return text


def transform(text):
    text = re.sub(r"#include <c10/cuda/[^>]+>\n", "", text)
    text = text.replace("c10::cuda::getCurrentCUDAStream()", "0").replace("C10_CUDA_KERNEL_LAUNCH_CHECK()", "(void)0")

    def launch(m):
        kernel, config = m.group(1), m.group(2)
        # grad_bias and the GEMM tiles need every block; the rest are grid-stride loops
        cap = 0 if any(k in kernel for k in ("grad_bias", "gemm_kernel", "subpixel_kernel")) else 3
        return f"::emu::launch({config}, {cap}u, [](auto... emu_a) {{ {kernel}(emu_a...); }}, "

    text, n = re.subn(r"(\b\w+_kernel<[^<>]*>)\s*<<<(.*?)>>>\(", launch, text, flags=re.S)
    assert n > 0
    return '#include "emu_cuda.h"\n' + text


CUDA_FILES = ("forward", "grad_input", "grad_weight", "forward_gemm", "grad_input_gemm", "grad_weight_gemm",
              "forward_subpixel")


def build(name="deconv_emu"):
    """Compiles csrc/ (a copy, with EMU_MUTATE applied) for the CPU as module `name`; returns it (forward,
    grad_input, grad_weight taking a trailing path "simt", "gemm" or "subpixel", and grad_bias)."""
    out = tempfile.mkdtemp(prefix="deconv_emu_")
    src = os.path.join(out, "csrc")
    mutated = False
    for dirpath, _, files in os.walk(os.path.join(ROOT, "csrc")):
        dest = os.path.join(src, os.path.relpath(dirpath, os.path.join(ROOT, "csrc")))
        os.makedirs(dest, exist_ok=True)
        for file in files:
            with open(os.path.join(dirpath, file)) as f:
                text = f.read()
            new = mutate(text)
            mutated |= new != text
            with open(os.path.join(dest, file), "w") as f:
                f.write(new)
    if os.environ.get("EMU_MUTATE") and not mutated:
        raise ValueError("EMU_MUTATE: the text to replace occurs in no file under csrc/")
    sources = [os.path.join(HERE, "bindings.cpp"), os.path.join(src, "conv_transpose2d.cpp")]
    for stem in CUDA_FILES:
        with open(os.path.join(src, "cuda", stem + ".cu")) as f:
            text = transform(f.read())
        path = os.path.join(src, "cuda", stem + "_emu.cpp")
        with open(path, "w") as f:
            f.write(text)
        sources.append(path)
    flags = os.environ.get("EMU_CFLAGS", "").split()
    return load(name, sources, extra_include_paths=[HERE, os.path.join(src, "cuda"), src],
                extra_cflags=["-O1", "-w"] + flags, extra_ldflags=flags, build_directory=out, verbose=False)


# The suite's correctness grid plus the launch geometries only the CUDA kernels have.
CASES = GRID + [
    Case("grid_stride_loops", 3, 4, 4, 17, 13, 2, stride=2),
    Case("split_reductions", 2, 1, 1, 40, 40, 2, stride=2),  # grad_weight/grad_bias in parts (= 3)
]
GEMM_CASES = GEMM_GRID
# The sub-pixel forward: the grid's cases it serves, and its own.
SUBPIXEL_CASES = SUBPIXEL_GRID + [c for c in GRID if c.name in ("fsrcnn", "fsrcnn_wide", "rgb_out", "kernel_1x1")]
# Per path, the dtypes it serves (the GEMM path takes float32 as TF32).
PATH_DTYPES = {"simt": (torch.float64, torch.float32, torch.bfloat16),
               "gemm": (torch.float32, torch.float16, torch.bfloat16),
               "subpixel": (torch.float32, torch.float16, torch.bfloat16)}


def run_case(mod, case, dtype, path, layout="contiguous"):
    """Checks the four emulated ops on one case against PyTorch; returns the list of failure messages."""
    x, w, b, gy = case.tensors(dtype, seed=0, layout=layout)
    args = case.op_args
    got = {"forward": mod.forward(x, w, b, *args, path), "grad_input": mod.grad_input(gy, w, *args, path),
           "grad_weight": mod.grad_weight(gy, x, list(case.kernel), *args, path), "grad_bias": mod.grad_bias(gy)}
    ref = Reference(x, w, b, gy, **case.params)
    # TF32 rounds float32 inputs to 10 mantissa bits inside the kernel: that error is the kernel's own.
    roundoff = TF32_ROUNDOFF if path == "gemm" and dtype == torch.float32 else 0.0
    failures = []
    for op_name, value in got.items():
        try:
            ref.check(op_name, value, context=f" [{case}, {dtype}, {path}, {layout}]", input_roundoff=roundoff)
        except AssertionError as e:
            failures.append(str(e))
    # same inputs twice: bitwise equal (fixed reduction order)
    if not torch.equal(mod.grad_weight(gy, x, list(case.kernel), *args, path), got["grad_weight"]):
        failures.append(f"grad_weight [{case}, {dtype}, {path}]: not bitwise equal run to run")
    if not torch.equal(mod.forward(x, w, b, *args, path), got["forward"]):
        failures.append(f"forward [{case}, {dtype}, {path}]: not bitwise equal run to run")
    return failures


def main():
    mod = build()
    failures, checks = [], 0
    for path in ("simt", "gemm", "subpixel"):
        cases = {"simt": CASES, "gemm": CASES + GEMM_CASES, "subpixel": SUBPIXEL_CASES}[path]
        for case, dtype in itertools.product(cases, PATH_DTYPES[path]):
            found = run_case(mod, case, dtype, path)
            checks += 4
            failures += found
            for f in found:
                print("FAIL", f)
    print(f"emulated CUDA kernels: {checks - len(failures)}/{checks} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
