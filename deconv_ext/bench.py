"""`deconv-ext bench`: deconv_ext against F.conv_transpose2d on a fixed list of shapes.

Both implementations run in the same process, interleaved call by call (ours, reference, ours, ...),
so background load hits both alike; each time is the median of --repeat calls after one warm-up.
Modes: fwd (forward, no autograd graph), bwd (backward only: grad_input + grad_weight + grad_bias of
a fresh graph each call; the forward is not timed), fwdbwd (forward + backward). GFLOP/s counts
2*N*C_in*(C_out/groups)*kH*kW*H_in*W_in per op (fwd: 1 op, bwd: 2, fwdbwd: 3), the useful work of a
transposed convolution (no multiplications by inserted zeros).

Peak memory (--memory, default on): each implementation runs the forward of one large case in a fresh
subprocess. On CPU (Linux) the number is the growth of the peak resident set size across that call: the peak
(VmHWM) is reset through /proc/self/clear_refs just before the call and compared with the resident
size (VmRSS) then, after a warm-up call on a tiny input (libraries loaded, allocator primed); it
includes the output tensor itself.
On CUDA it is torch.cuda.max_memory_allocated() during the call, minus the memory held before it.

Settings: --dtype float32|bfloat16|float16 (inputs, weights and gradients in that dtype), --channels-last
(input in channels_last), --autocast (float32 tensors, both calls under torch.autocast with bfloat16, as
CPU inference and mixed-precision training run). --plot PATH draws the speedups (needs matplotlib).
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import contextlib

import torch
import torch.nn.functional as F

from .testing import BENCH as SHAPES, BENCH_MEMORY as MEMORY_CASE, BENCH_QUICK as QUICK_SHAPES  # noqa: E402

# The shapes (deconv_ext.testing.BENCH, shared with benchmarks/gpu_bench.py): group "sr" are the
# super-resolution last layers with the >= 5x forward / >= 3x forward+backward target.
MODES = ("fwd", "bwd", "fwdbwd")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _make(case, device, requires_grad, dtype=torch.float32, channels_last=False):
    layout = "channels_last" if channels_last else "contiguous"
    x, w, b, _ = case.tensors(dtype, device=device, seed=0, weight_scale=0.1, layout=layout)
    return tuple(t.requires_grad_(requires_grad) for t in (x, w, b))


def _context(device, autocast):
    if not autocast:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def _implementations():
    from .functional import conv_transpose2d

    return {"deconv_ext": conv_transpose2d, "torch": F.conv_transpose2d}


def _callable(fn, shape, mode, device, dtype=torch.float32, channels_last=False, autocast=False):
    params = shape.params
    x, w, b = _make(shape, device, mode != "fwd", dtype, channels_last)
    if mode == "fwd":
        def call():
            with torch.no_grad(), _context(device, autocast):
                fn(x, w, b, **params)
        return call, None
    if mode == "fwdbwd":
        def call():
            with _context(device, autocast):
                y = fn(x, w, b, **params)
            torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
        return call, None

    state = {}

    def prepare():  # untimed: a fresh graph for the next backward
        with _context(device, autocast):
            state["y"] = fn(x, w, b, **params)
        state["gy"] = torch.ones_like(state["y"])

    def call():
        torch.autograd.grad(state["y"], (x, w, b), state["gy"])
    return call, prepare


def time_shape(shape, mode, device, repeat, **setting):
    """Median seconds per implementation, measured interleaved. `setting`: dtype, channels_last, autocast."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls = {name: _callable(fn, shape, mode, device, **setting) for name, fn in _implementations().items()}
    times = {name: [] for name in calls}
    for i in range(repeat + 1):  # the first round is the warm-up
        for name, (call, prepare) in calls.items():
            if prepare:
                prepare()
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# ---- peak memory, one subprocess per implementation ------------------------------------------------------
_MEMORY_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from deconv_ext import bench
impl, device, threads = {impl!r}, {device!r}, {threads}
torch.set_num_threads(threads)
fn = bench._implementations()[impl]
shape = bench.MEMORY_CASE
params = shape.params
tiny = shape.replace(N=1, H=4, W=4)
with torch.no_grad():
    fn(*bench._make(tiny, device, False), **params)  # load libraries, prime the allocator
    x, w, b = bench._make(shape, device, False)
    if device.startswith("cuda"):
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        y = fn(x, w, b, **params); torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident set size
        before = status("VmRSS")
        y = fn(x, w, b, **params)
        peak = status("VmHWM") - before
print(json.dumps({{"peak_bytes": peak, "output_bytes": y.numel() * y.element_size(),
                  "input_bytes": x.numel() * x.element_size()}}))
"""


def measure_memory(shape, device, threads):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for impl in _implementations():
        assert shape == MEMORY_CASE, "the child process measures MEMORY_CASE"
        code = _MEMORY_CHILD.format(root=root, impl=impl, device=device, threads=threads)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"memory measurement for {impl} failed:\n{proc.stderr}")
        out[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ---- command line ---------------------------------------------------------------------------------------------
def add_arguments(parser):
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default: torch's)")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per implementation (default: 7)")
    parser.add_argument("--shapes", default=None, help="comma-separated substrings; keep shapes whose name matches")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of fwd,bwd,fwdbwd")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats, no memory measurement")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory case")
    parser.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="tensor dtype (default: float32)")
    parser.add_argument("--channels-last", action="store_true", help="input in channels_last memory format")
    parser.add_argument("--autocast", action="store_true",
                        help="float32 tensors, both implementations under torch.autocast(bfloat16)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="bar chart of the speedups on a log axis (needs matplotlib)")


def plot(rows, path, title):
    """Speedup per shape (one bar per mode) on a log axis, with the 1.0x line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(shapes) * len(modes)), 4.5))
    for k, mode in enumerate(modes):
        vals = {r["shape"]: r["speedup"] for r in rows if r["mode"] == mode}
        xs = [i + (k - (len(modes) - 1) / 2) * width for i in range(len(shapes))]
        ax.bar(xs, [vals.get(sh, float("nan")) for sh in shapes], width, label=mode)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, rotation=45, ha="right")
    ax.set_ylabel("speedup (PyTorch time / deconv_ext time)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("deconv-ext bench: CUDA is not available", file=sys.stderr)
        return 2
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeat = 2 if args.quick else args.repeat
    if args.shapes:
        keys = [k.strip() for k in args.shapes.split(",") if k.strip()]
        shapes = [s for s in shapes if any(k in s.name for k in keys)]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not shapes:
        print(f"deconv-ext bench: nothing to run (unknown modes {bad})" if bad else "deconv-ext bench: no shape matches",
              file=sys.stderr)
        return 2

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("deconv-ext bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    if args.autocast and args.dtype != "float32":
        print("deconv-ext bench: --autocast runs float32 tensors under autocast; leave --dtype at float32",
              file=sys.stderr)
        return 2
    setting = dict(dtype=DTYPES[args.dtype], channels_last=args.channels_last, autocast=args.autocast)
    label = args.dtype + (" channels_last" if args.channels_last else "") + (" autocast(bf16)" if args.autocast else "")
    print(f"device={device} threads={torch.get_num_threads()} repeat={repeat} torch={torch.__version__} "
          f"setting={label}")
    print(f"{'shape':16s} {'mode':7s} {'ours ms':>9s} {'torch ms':>9s} {'ours GF/s':>9s} {'torch GF/s':>10s} {'speedup':>8s}")
    rows = []
    for shape in shapes:
        for mode in modes:
            t = time_shape(shape, mode, device, repeat, **setting)
            flops = shape.flops() * {"fwd": 1, "bwd": 2, "fwdbwd": 3}[mode]
            row = {"shape": shape.name, "group": shape.group, "mode": mode, "ms_ours": t["deconv_ext"] * 1e3,
                   "ms_torch": t["torch"] * 1e3, "gflops_ours": flops / t["deconv_ext"] / 1e9,
                   "gflops_torch": flops / t["torch"] / 1e9, "speedup": t["torch"] / t["deconv_ext"]}
            rows.append(row)
            print(f"{shape.name:16s} {mode:7s} {row['ms_ours']:9.2f} {row['ms_torch']:9.2f} {row['gflops_ours']:9.1f} "
                  f"{row['gflops_torch']:10.1f} {row['speedup']:7.2f}x", flush=True)

    summary = {}
    print("\nsummary (geometric mean of speedups; min in brackets)")
    for group in ("sr", "other", "all"):
        for mode in modes:
            vals = [r["speedup"] for r in rows if r["mode"] == mode and (group == "all" or r["group"] == group)]
            if vals:
                summary[f"{group}/{mode}"] = {"geomean": geomean(vals), "min": min(vals), "count": len(vals)}
                print(f"  {group:5s} {mode:7s} {geomean(vals):6.2f}x  [min {min(vals):.2f}x over {len(vals)}]")

    memory = None
    if args.memory and not args.quick:
        memory = {"shape": MEMORY_CASE.name, "dims": (MEMORY_CASE.N, MEMORY_CASE.C_in, MEMORY_CASE.C_out,
                                                  MEMORY_CASE.H, MEMORY_CASE.W),
                  "method": "peak RSS growth (VmHWM after reset - VmRSS) in a fresh subprocess" if device == "cpu"
                  else "torch.cuda.max_memory_allocated growth",
                  "results": measure_memory(MEMORY_CASE, device, torch.get_num_threads())}
        print(f"\npeak memory, forward of {MEMORY_CASE.name} {memory['dims']} ({memory['method']}):")
        for impl, m in memory["results"].items():
            print(f"  {impl:11s} {m['peak_bytes'] / 2**20:8.1f} MiB  (output {m['output_bytes'] / 2**20:.1f} MiB, "
                  f"input {m['input_bytes'] / 2**20:.1f} MiB)")

    if args.json:
        meta = {"device": device, "threads": torch.get_num_threads(), "repeat": repeat, "torch": torch.__version__,
                "setting": label,
                "machine": platform.machine(), "processor": platform.processor()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows, "summary": summary, "memory": memory}, f, indent=1)
    if args.plot:
        plot(rows, args.plot, f"deconv_ext vs F.conv_transpose2d, {device}, {label}, "
                              f"{torch.get_num_threads()} threads")
        print(f"wrote {args.plot}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="deconv-ext bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
