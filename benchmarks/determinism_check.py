"""Bitwise determinism of all four deconv_ext ops: 10 repeated runs must equal the first (torch.equal).

    python benchmarks/determinism_check.py [--device cuda|cpu] [--runs 10]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deconv_ext.testing import Case, run_ops  # noqa: E402

# Larger than the correctness grid, so that reductions really split across threads/blocks.
CASES = [
    Case("dcgan_256_128", 8, 256, 128, 8, 8, 4, 2, 1),
    Case("fsrcnn_last", 2, 56, 1, 64, 64, 9, 3, 4, 2),
    Case("depthwise", 8, 32, 32, 32, 32, 4, 2, 1, groups=32),
    Case("grouped_tail", 4, 12, 18, 17, 13, 3, 2, 1, 1, groups=2),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    failures = 0
    for case in CASES:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x, w, b, gy = (t.to(args.device) for t in case.tensors(dtype, seed=0))
            first = run_ops(x, w, b, gy, case)
            bad = set()
            for _ in range(args.runs - 1):
                for op_name, a in run_ops(x, w, b, gy, case).items():
                    if not torch.equal(a, first[op_name]):
                        bad.add(op_name)
            failures += len(bad)
            print(f"{case.name:14s} {str(dtype):15s} {'ok' if not bad else 'NOT DETERMINISTIC: ' + ', '.join(sorted(bad))}")
    print("determinism:", "ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
