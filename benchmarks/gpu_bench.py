"""GPU benchmark of deconv_ext against F.conv_transpose2d (cuDNN), self-contained.

For each shape and dtype: forward, and forward+backward (grads of input, weight and bias), timed
with CUDA events; the median of the repetitions is reported with the ratio ours / cuDNN (< 1 is
faster) and a geometric mean per (dtype, mode). fp32 runs with TF32 off on both sides, so both
compute true fp32 products. Results go to OUT/bench.{md,json}.

    python benchmarks/gpu_bench.py [--out DIR] [--device cuda|cpu] [--quick]
--device cpu times the CPU kernels against PyTorch's CPU path with a wall clock (a dry run of
this script on machines without a GPU; its ratios say nothing about the GPU kernels).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import deconv_ext  # noqa: E402
from deconv_ext.testing import BENCH, BENCH_QUICK  # noqa: E402

# The benchmark shapes of deconv_ext.testing (the same list `deconv-ext bench` times); tiny ones for the
# CPU dry run.
SHAPES = BENCH
QUICK_CPU_SHAPES = BENCH_QUICK
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def timer(device):
    """Returns time_ms(fn): one timed call of fn (CUDA events on GPU, wall clock on CPU)."""
    if device == "cuda":
        def time_ms(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:
        def time_ms(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    return time_ms


def median_ms(fn, time_ms, warmup, reps, budget_ms):
    for _ in range(warmup):
        fn()
    first = time_ms(fn)
    reps = max(3, min(reps, int(budget_ms / max(first, 1e-3))))
    return statistics.median([first] + [time_ms(fn) for _ in range(reps - 1)])


def make_case(case, dtype, device):
    fan_in = case.C_in // case.groups * case.kernel[0] * case.kernel[1]
    x, w, b, _ = case.tensors(dtype, device=device, seed=0, weight_scale=1 / math.sqrt(fan_in))
    return x, w, b, case.params


def run(args):
    device = args.device
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    time_ms = timer(device)
    shapes = SHAPES if device == "cuda" else QUICK_CPU_SHAPES
    warmup, reps, budget = (3, 10, 100.0) if args.quick else (5, 30, 300.0)
    impls = {"deconv_ext": deconv_ext.conv_transpose2d, "reference": F.conv_transpose2d}
    rows = []
    for case in shapes:
        name = case.name
        for dname in args.dtypes:
            dtype = DTYPES[dname]
            x, w, b, kw = make_case(case, dtype, device)
            gy = torch.randn_like(impls["reference"](x, w, b, **kw))
            xg, wg, bg = (t.detach().requires_grad_(True) for t in (x, w, b))
            row = {"shape": name, "dtype": dname}
            for mode in ("forward", "forward+backward"):
                for impl_name, fn in impls.items():
                    if mode == "forward":
                        def call(fn=fn):
                            with torch.no_grad():
                                fn(x, w, b, **kw)
                    else:
                        def call(fn=fn):
                            torch.autograd.grad(fn(xg, wg, bg, **kw), (xg, wg, bg), gy)
                    row[f"{mode}_{impl_name}_ms"] = median_ms(call, time_ms, warmup, reps, budget)
                row[f"{mode}_ratio"] = row[f"{mode}_deconv_ext_ms"] / row[f"{mode}_reference_ms"]
            rows.append(row)
            print(f"{name:24s} {dname}  fwd {row['forward_deconv_ext_ms']:8.3f} ms vs {row['forward_reference_ms']:8.3f}"
                  f" (x{row['forward_ratio']:.2f})   fwd+bwd {row['forward+backward_deconv_ext_ms']:8.3f} ms vs "
                  f"{row['forward+backward_reference_ms']:8.3f} (x{row['forward+backward_ratio']:.2f})", flush=True)
    geomean = {}
    for dname in args.dtypes:
        for mode in ("forward", "forward+backward"):
            ratios = [r[f"{mode}_ratio"] for r in rows if r["dtype"] == dname]
            geomean[f"{dname} {mode}"] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    return rows, geomean


def write(rows, geomean, args):
    os.makedirs(args.out, exist_ok=True)
    ref = "cuDNN" if args.device == "cuda" else "PyTorch CPU"
    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if args.device == "cuda" else None,
           "tf32": False, "statistic": "median ms", "ratio": f"deconv_ext / {ref} (< 1: deconv_ext faster)"}
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"env": env, "rows": rows, "geomean_ratio": geomean}, f, indent=2)
    lines = [f"# deconv_ext vs F.conv_transpose2d ({ref}) on {env['device']}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; TF32 off; median of CUDA-event timings.",
             "", "| shape | dtype | fwd ours ms | fwd ref ms | fwd ratio | fwd+bwd ours ms | fwd+bwd ref ms | fwd+bwd ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['forward_deconv_ext_ms']:.3f} | {r['forward_reference_ms']:.3f}"
                     f" | {r['forward_ratio']:.2f} | {r['forward+backward_deconv_ext_ms']:.3f} | "
                     f"{r['forward+backward_reference_ms']:.3f} | {r['forward+backward_ratio']:.2f} |")
    lines += ["", "Geometric mean of ratios (ours / reference):", ""]
    lines += [f"- {k}: {v:.2f}" for k, v in geomean.items()]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("GPU_CHECK_OUT", "./gpu_check_out"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device visible (use --device cpu for a dry run)")
    rows, geomean = run(args)
    write(rows, geomean, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
