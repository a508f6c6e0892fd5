"""Bitwise determinism of all four deconv_ext ops: 10 repeated runs must equal the first (torch.equal).

    python benchmarks/determinism_check.py [--device cuda|cpu] [--runs 10]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import deconv_ext  # noqa: E402,F401

ops = torch.ops.deconv_ext
# (N, C_in, H, W), C_out, kernel, stride, padding, output_padding, groups
CASES = {
    "dcgan_256_128": ((8, 256, 8, 8), 128, 4, 2, 1, 0, 1),
    "fsrcnn_last": ((2, 56, 64, 64), 1, 9, 3, 4, 2, 1),
    "depthwise": ((8, 32, 32, 32), 32, 4, 2, 1, 0, 32),
    "grouped_tail": ((4, 12, 17, 13), 18, 3, 2, 1, 1, 2),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    failures = 0
    for name, ((N, cin, H, W), cout, k, s, p, op, g) in CASES.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(N, cin, H, W, generator=gen).to(args.device, dtype)
            w = torch.randn(cin, cout // g, k, k, generator=gen).to(args.device, dtype)
            b = torch.randn(cout, generator=gen).to(args.device, dtype)
            params = ([s, s], [p, p], [op, op], g, [1, 1])
            y = ops.conv_transpose2d(x, w, b, *params)
            gy = torch.randn(y.shape, generator=gen).to(args.device, dtype)

            def once():
                return [ops.conv_transpose2d(x, w, b, *params), ops.conv_transpose2d_grad_input(gy, w, *params),
                        ops.conv_transpose2d_grad_weight(gy, x, [k, k], *params), ops.conv_transpose2d_grad_bias(gy)]

            first = once()
            bad = set()
            for _ in range(args.runs - 1):
                for op_name, a, b0 in zip(("forward", "grad_input", "grad_weight", "grad_bias"), once(), first):
                    if not torch.equal(a, b0):
                        bad.add(op_name)
            failures += len(bad)
            print(f"{name:14s} {str(dtype):15s} {'ok' if not bad else 'NOT DETERMINISTIC: ' + ', '.join(sorted(bad))}")
    print("determinism:", "ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
