"""A small case calling all four deconv_ext ops, for compute-sanitizer (memcheck, racecheck).

Covers each kernel variant: channel-blocked and unblocked, a partial channel block, groups,
stride > kernel, dilation, split (two-pass) reductions, fp32 and fp16. Inputs are made on the
CPU so that the sanitizer sees few kernels besides ours. Exits non-zero if a result is wrong.
    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/sanitizer_case.py
    python benchmarks/sanitizer_case.py --device cpu     # dry run without a GPU
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import deconv_ext  # noqa: E402,F401

ops = torch.ops.deconv_ext
# (N, C_in, C_out, groups, H, W, kernel, stride, padding, output_padding, dilation)
CASES = [
    (2, 8, 8, 1, 5, 5, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),    # channel blocks of 4
    (2, 6, 10, 2, 4, 5, (3, 2), (3, 1), (2, 0), (2, 0), (1, 2)),   # partial block, groups, dilation
    (1, 4, 4, 4, 6, 6, (2, 2), (4, 4), (0, 1), (3, 0), (1, 1)),    # depthwise, stride > kernel
    (2, 1, 1, 1, 48, 48, (3, 3), (3, 3), (1, 1), (2, 2), (1, 1)),  # split reductions
]


def check(device, dtype):
    ok = True
    for N, cin, cout, g, H, W, k, s, p, op, d in CASES:
        x = torch.randn(N, cin, H, W, dtype=torch.float64)
        w = torch.randn(cin, cout // g, *k, dtype=torch.float64)
        b = torch.randn(cout, dtype=torch.float64)
        params = (list(s), list(p), list(op), g, list(d))
        y_ref = F.conv_transpose2d(x, w, b, s, p, op, g, d)
        gy = torch.randn_like(y_ref)
        xd, wd, bd, gyd = (t.to(device=device, dtype=dtype) for t in (x, w, b, gy))
        got = [ops.conv_transpose2d(xd, wd, bd, *params), ops.conv_transpose2d_grad_input(gyd, wd, *params),
               ops.conv_transpose2d_grad_weight(gyd, xd, list(k), *params), ops.conv_transpose2d_grad_bias(gyd)]
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        gx_ref, gw_ref = torch.autograd.grad(F.conv_transpose2d(xr, wr, b, s, p, op, g, d), (xr, wr), gy)
        want = [y_ref, gx_ref, gw_ref, gy.sum((0, 2, 3))]
        tol = 1e-3 if dtype == torch.float32 else 5e-2
        for name, a, e in zip(("forward", "grad_input", "grad_weight", "grad_bias"), got, want):
            a = a.cpu().double()
            scale = max(1.0, e.abs().max().item())
            if not torch.allclose(a, e, rtol=tol, atol=tol * scale):
                print(f"FAIL {name} {dtype} case {(N, cin, cout, g, H, W, k, s, p, op, d)}: "
                      f"max err {(a - e).abs().max().item():.3g}")
                ok = False
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    torch.manual_seed(0)
    ok = all([check(args.device, dtype) for dtype in (torch.float32, torch.float16)])
    if args.device == "cuda":
        torch.cuda.synchronize()
    print("sanitizer case:", "ok" if ok else "WRONG RESULTS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
