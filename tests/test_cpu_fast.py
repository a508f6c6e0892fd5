"""The CPU fast paths (csrc/cpu/fast_paths.h) against F.conv_transpose2d: forward and all three gradients.

Configurations are drawn from a seeded generator so that each dispatch condition is hit on both sides
of its boundary: direct forward and backward (float32, C_out/groups <= 4; the backward kernels block
over 8 or 4 input channels, so partial blocks are covered too) vs GEMM, float64 (GEMM or generic),
widths that are not a multiple of the vector
width, tiny images, channels_last inputs, batch 0. Plus thread-count and run-to-run determinism, and
the AVX2 / baseline variants of the direct kernels (selected with DECONV_EXT_CPU_ISA in a subprocess).
"""
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from deconv_ext.functional import conv_transpose2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_config(rng, cout_max, cin_max):
    groups = rng.choice([1, 1, 1, 2, 3])
    cin = groups * rng.randint(1, cin_max)
    cout = groups * rng.randint(1, cout_max)
    if rng.random() < 0.15:  # depthwise (and channel multiplier 2)
        groups = cin = rng.randint(1, 6)
        cout = cin * rng.choice([1, 2])
    k = (rng.randint(1, 9), rng.randint(1, 9))
    s = (rng.randint(1, 4), rng.randint(1, 4))
    d = (rng.randint(1, 3), rng.randint(1, 3))
    p = (rng.randint(0, 4), rng.randint(0, 4))
    op = tuple(rng.randint(0, max(s[i], d[i]) - 1) for i in range(2))
    H, W = rng.randint(1, 10), rng.randint(1, 37)
    N = rng.choice([0, 1, 1, 2, 3])
    out = [(x - 1) * s[i] - 2 * p[i] + (k[i] - 1) * d[i] + op[i] + 1 for i, x in enumerate((H, W))]
    if min(out) <= 0:
        return None
    return dict(N=N, cin=cin, cout=cout, groups=groups, k=k, stride=s, padding=p, output_padding=op,
                dilation=d, H=H, W=W, bias=rng.random() < 0.5, channels_last=rng.random() < 0.2)


def check(cfg, dtype, tol):
    c = cfg
    x = torch.randn(c["N"], c["cin"], c["H"], c["W"], dtype=torch.float64)
    w = torch.randn(c["cin"], c["cout"] // c["groups"], *c["k"], dtype=torch.float64)
    b = torch.randn(c["cout"], dtype=torch.float64) if c["bias"] else None
    args = (c["stride"], c["padding"], c["output_padding"], c["groups"], c["dilation"])
    ref = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    y_ref = F.conv_transpose2d(ref[0], ref[1], ref[2] if b is not None else None, *args)
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, ref, gy, allow_unused=True)
    ours = [t.to(dtype) for t in (x, w, b) if t is not None]
    if c["channels_last"]:
        ours[0] = ours[0].contiguous(memory_format=torch.channels_last)
    ours = [t.requires_grad_() for t in ours]
    y = conv_transpose2d(ours[0], ours[1], ours[2] if b is not None else None, *args)
    g = torch.autograd.grad(y, ours, gy.to(dtype), allow_unused=True)
    for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, *g), (y_ref, *g_ref)):
        if r is None or r.numel() == 0:
            continue
        a = torch.zeros_like(r) if a is None else a.double()
        scale = max(1.0, r.abs().max().item())
        err = (a - r).abs().max().item()
        assert err <= tol * scale, f"{name}: max error {err:.3g} (scale {scale:.3g}) for {cfg}"


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("path,cout_max,cin_max", [
    ("direct", 4, 7),       # C_out/groups <= 4: direct forward and backward (float32), channel blocks < 8
    ("mixed", 4, 12),       # the same with full and partial blocks of 8 (grad_input) or 4 (grad_weight) channels
    ("gemm", 12, 12),       # GEMM everywhere once C_out/groups > 4
])
def test_random_configs(path, cout_max, cin_max, dtype, tol):
    rng = random.Random(hash((path, str(dtype))) % 1000)
    count = 0
    while count < 25:
        cfg = random_config(rng, cout_max, cin_max)
        if cfg is not None:
            check(cfg, dtype, tol)
            count += 1


@pytest.mark.parametrize("cin,cout,k,s,p,op,H,W", [
    (56, 1, 9, 3, 4, 2, 13, 37),   # FSRCNN x3: direct forward and backward; W not a multiple of 8/16
    (32, 1, 9, 4, 4, 3, 7, 17),    # FSRCNN-s x4
    (64, 3, 9, 2, 4, 1, 9, 33),    # RGB output
    (5, 4, 4, 2, 1, 0, 6, 129),    # direct backward, wide rows: several strips per row
    (8, 5, 3, 1, 1, 0, 5, 15),     # first shape past the direct forward
    (3, 2, 1, 1, 0, 0, 1, 1),      # 1x1 image, 1x1 kernel
    (3, 8, 9, 2, 4, 1, 40, 41),    # GEMM column buffer above its 1M budget: chunks of rows of one image
])
def test_boundaries(cin, cout, k, s, p, op, H, W):
    for dtype, tol in ((torch.float32, 2e-4), (torch.float64, 1e-10)):
        check(dict(N=2, cin=cin, cout=cout, groups=1, k=(k, k), stride=(s, s), padding=(p, p),
                   output_padding=(op, op), dilation=(1, 1), H=H, W=W, bias=True, channels_last=False), dtype, tol)


@pytest.mark.parametrize("cin,cout,groups,k,s,p,op,H,W", [
    (9, 1, 1, 9, 3, 4, 2, 4, 17),     # one block of 8 + 1 channel (grad_input), 2 x 4 + 1 (grad_weight)
    (13, 2, 1, 9, 2, 4, 1, 3, 7),     # 8 + 4 + 1
    (6, 3, 1, 5, 4, 2, 3, 2, 33),     # a partial block only: 4 + 2
    (17, 4, 1, 3, 2, 1, 1, 2, 1),     # 1-pixel-wide rows
    (24, 2, 2, 9, 3, 4, 2, 3, 15),    # two groups of 12 channels
    (16, 1, 1, 9, 4, 4, 3, 2, 40),    # two full blocks; strips of 2 vectors with a tail
    (5, 2, 1, 9, 2, 4, 1, 3, 32),     # rows of whole vectors: grad_weight reads x in place
    (8, 1, 1, 9, 3, 4, 2, 20, 70),    # grad_weight: several blocks of rows, each kh's valid rows cut by them
])
def test_direct_backward_channel_blocks(cin, cout, groups, k, s, p, op, H, W):
    cfg = dict(N=2, cin=cin, cout=cout, groups=groups, k=(k, k), stride=(s, s), padding=(p, p),
               output_padding=(op, op), dilation=(1, 1), H=H, W=W, bias=True, channels_last=False)
    check(cfg, torch.float32, 1e-4)
    x, w, b = torch.randn(2, cin, H, W), torch.randn(cin, cout // groups, k, k), torch.randn(cout)
    args = (s, p, op, groups, 1)
    for a, a2 in zip(_all_outputs(x, w, b, args), _all_outputs(x, w, b, args)):
        assert torch.equal(a, a2)  # run to run: bitwise


def _all_outputs(x, w, b, args):
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    y = conv_transpose2d(xs, ws, bs, *args)
    return (y.detach(), *torch.autograd.grad(y, (xs, ws, bs), torch.ones_like(y) * 0.5))


@pytest.mark.parametrize("cin,cout,groups", [(24, 1, 1), (6, 3, 3), (16, 12, 2)])
def test_threads_and_repeat(cin, cout, groups):
    x = torch.randn(2, cin, 11, 27)
    w = torch.randn(cin, cout // groups, 5, 5)
    b = torch.randn(cout)
    args = (3, 2, 1, groups, 1)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _all_outputs(x, w, b, args)
        torch.set_num_threads(2)
        two = _all_outputs(x, w, b, args)
        again = _all_outputs(x, w, b, args)
    finally:
        torch.set_num_threads(old)
    for a, b_, c in zip(one, two, again):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)  # thread count: float tolerance
        assert torch.equal(b_, c)  # run to run: bitwise


_ISA_SCRIPT = """
import random, sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_cpu_fast import random_config, check
torch.manual_seed(0); rng = random.Random(7); n = 0
while n < 15:
    cfg = random_config(rng, 4, 12)
    if cfg is not None:
        check(cfg, torch.float32, 2e-4); n += 1
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ISA override is read from the environment")
@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_isa_variants(isa):
    env = dict(os.environ, DECONV_EXT_CPU_ISA=isa)
    code = _ISA_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
