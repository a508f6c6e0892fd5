"""Run the CUDA kernels' exact source on the CPU and compare them with PyTorch (no GPU needed).

csrc/cuda/{forward,grad_input,grad_weight}.cu are copied with three mechanical edits: the CUDA
headers are dropped, `kernel<...><<<grid, block, smem, stream>>>(args)` becomes a call of
emu::launch (emu_cuda.h: one std::thread per CUDA thread, real barriers for __syncthreads and
warp shuffles), and the stream is a dummy. The launchers, kernels and index math are otherwise
compiled unchanged, so a wrong index, bound or reduction order shows up here as on a GPU.
Slow (threads per CUDA thread), so shapes are tiny (about 4 minutes on 2 cores, mostly compiling).
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
import torch.nn.functional as F
from torch.utils.cpp_extension import load

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


def configs():
    # (N, C_in, C_out, groups, H, W, k, stride, padding, output_padding, dilation, bias)
    yield 2, 4, 6, 1, 5, 4, (3, 3), (2, 2), (1, 1), (1, 0), (1, 1), True
    yield 1, 8, 8, 1, 3, 3, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), True     # CB=4 blocks, DCGAN-like
    yield 2, 6, 10, 2, 4, 5, (3, 2), (3, 1), (2, 0), (2, 0), (1, 2), False   # cog=5: clamped tail block
    yield 1, 3, 1, 1, 6, 6, (9, 9), (3, 3), (4, 4), (2, 2), (1, 1), True     # FSRCNN-like
    yield 2, 4, 4, 4, 5, 5, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), True     # depthwise
    yield 1, 5, 7, 1, 1, 1, (2, 3), (1, 1), (0, 0), (0, 0), (1, 1), True     # 1x1 input
    yield 1, 4, 4, 1, 4, 4, (3, 3), (2, 3), (1, 0), (1, 2), (3, 2), True     # dilation > stride, gcd != 1
    yield 1, 4, 8, 2, 4, 3, (2, 2), (4, 4), (0, 1), (3, 0), (1, 1), False    # stride > kernel: empty outputs
    yield 0, 4, 4, 1, 3, 3, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), True     # empty batch
    yield 3, 4, 4, 1, 17, 13, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), True   # grid-stride loops
    yield 2, 1, 1, 1, 40, 40, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), True   # split reductions (parts = 3)


def main():
    mod = build()
    failures = 0
    for cfg, dtype in itertools.product(list(configs()), (torch.float64, torch.float32, torch.bfloat16)):
        N, cin, cout, g, H, W, k, s, p, op, d, has_bias = cfg
        x = torch.randn(N, cin, H, W, dtype=torch.float64)
        w = torch.randn(cin, cout // g, *k, dtype=torch.float64)
        b = torch.randn(cout, dtype=torch.float64) if has_bias else None
        x.requires_grad_(True)
        w.requires_grad_(True)
        ref = F.conv_transpose2d(x, w, b, s, p, op, g, d)
        gy = torch.randn_like(ref)
        gx_ref, gw_ref = torch.autograd.grad(ref, (x, w), gy, allow_unused=True)
        gx_ref = torch.zeros_like(x) if gx_ref is None else gx_ref
        gw_ref = torch.zeros_like(w) if gw_ref is None else gw_ref
        gb_ref = gy.sum((0, 2, 3))
        xd, wd, gyd = x.detach().to(dtype), w.detach().to(dtype), gy.to(dtype)
        bd = b.to(dtype) if b is not None else None
        args = (list(s), list(p), list(op), g, list(d))
        got = {
            "forward": mod.forward(xd, wd, bd, *args),
            "grad_input": mod.grad_input(gyd, wd, *args),
            "grad_weight": mod.grad_weight(gyd, xd, list(k), *args),
            "grad_bias": mod.grad_bias(gyd),
        }
        want = {"forward": ref.detach(), "grad_input": gx_ref, "grad_weight": gw_ref, "grad_bias": gb_ref}
        tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 6e-2}[dtype]
        for op_name, value in got.items():
            ok = value.shape == want[op_name].shape and torch.allclose(value.double(), want[op_name], rtol=tol,
                                                                         atol=tol * 4)
            if not ok:
                failures += 1
                err = (value.double() - want[op_name]).abs().max().item() if value.shape == want[op_name].shape \
                    else f"shape {tuple(value.shape)} vs {tuple(want[op_name].shape)}"
                print(f"FAIL {op_name} {dtype} {cfg}: max err {err}")
        # same inputs twice: bitwise equal (fixed reduction order)
        assert torch.equal(mod.grad_weight(gyd, xd, list(k), *args), got["grad_weight"])
        assert torch.equal(mod.grad_bias(gyd), got["grad_bias"])
    total = len(list(configs())) * 3 * 4
    print(f"emulated CUDA kernels: {total - failures}/{total} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
