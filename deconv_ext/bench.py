"""`deconv-ext bench`: deconv_ext against F.conv_transpose2d on a fixed list of shapes, on the CPU or a CUDA GPU.

Both implementations run in the same process, interleaved call by call (ours, reference, ours, ...),
so background load hits both alike; each time is the median of --repeat calls after warm-up rounds
(CPU: one, wall clock; CUDA: three, CUDA events around each call, after a synchronize). Speedup = PyTorch
time / deconv_ext time (> 1: deconv_ext is faster), on every device; geometric mean and minimum per
(setting, group, mode).
Modes: fwd (forward, no autograd graph), bwd (backward only: grad_input + grad_weight + grad_bias of
a fresh graph each call; the forward is not timed), fwdbwd (forward + backward). GFLOP/s counts
2*N*C_in*(C_out/groups)*kH*kW*H_in*W_in per op (fwd: 1 op, bwd: 2, fwdbwd: 3), the useful work of a
transposed convolution (no multiplications by inserted zeros).

Shapes: deconv_ext.testing.BENCH on the CPU, BENCH_GPU (GPU-sized batches and images) on CUDA, BENCH_QUICK
with --quick (a smoke test on either).

Settings (the columns): on the CPU, one per run: --dtype float32|bfloat16|float16 (inputs, weights and
gradients in that dtype), --channels-last (input in channels_last), --autocast (float32 tensors, both calls
under torch.autocast with bfloat16, as CPU inference and mixed-precision training run).
On CUDA (torch.backends.cudnn.benchmark on), by default four per run: "float32" with TF32 off on both sides
(torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32 False: true fp32 products),
"float32 tf32" with PyTorch's default (cudnn.allow_tf32 True, which deconv_ext's kernels read too), "float16"
and "bfloat16"; --dtype keeps the settings of that dtype, --channels-last applies to each, --autocast runs
the one autocast setting. Default modes: fwd,bwd,fwdbwd on the CPU, fwd,fwdbwd on CUDA.

Peak memory (--memory, default on): each implementation runs the forward of one large case in a fresh
subprocess. On CPU (Linux) the number is the growth of the peak resident set size across that call: the peak
(VmHWM) is reset through /proc/self/clear_refs just before the call and compared with the resident
size (VmRSS) then, after a warm-up call on a tiny input (libraries loaded, allocator primed); it
includes the output tensor itself.
On CUDA it is torch.cuda.max_memory_allocated() during the call, minus the memory held before it.

Output: the table on stdout; --json PATH (everything), --markdown PATH (tables per mode with the settings as
columns, then the geometric means), --plot PATH (the speedups, needs matplotlib). Output paths are checked
before the run.
"""
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from .cli import CommandError, UsageError
from .testing import BENCH as SHAPES, BENCH_GPU as GPU_SHAPES, BENCH_MEMORY as MEMORY_CASE  # noqa: E402
from .testing import BENCH_QUICK as QUICK_SHAPES  # noqa: E402

# The shapes (deconv_ext.testing.BENCH on the CPU, BENCH_GPU on CUDA): group "sr" are the
# super-resolution last layers with the >= 5x forward / >= 3x forward+backward target.
MODES = ("fwd", "bwd", "fwdbwd")
DEFAULT_MODES = {"cpu": MODES, "cuda": ("fwd", "fwdbwd")}
DEFAULT_REPEAT = {"cpu": 7, "cuda": 25}
WARMUP = {"cpu": 1, "cuda": 3}  # untimed rounds before the timed ones (cuDNN autotunes in the first)
GROUPS = ("sr", "other", "all")
MODE_NAMES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward+backward"}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One column of the benchmark: how both implementations are called. `tf32` (CUDA only): the value of
    torch.backends.cudnn.allow_tf32 for both sides (torch.backends.cuda.matmul.allow_tf32 is then False,
    PyTorch's default); None leaves both flags as they are."""
    name: str
    dtype: str = "float32"
    tf32: bool = None
    channels_last: bool = False
    autocast: bool = False

    def call_kwargs(self):
        """Keyword arguments of time_shape / _callable."""
        return dict(dtype=DTYPES[self.dtype], channels_last=self.channels_last, autocast=self.autocast)


# The CUDA columns: (name, dtype, cudnn.allow_tf32; None: PyTorch's flags as they are, which only float32 reads).
CUDA_SETTINGS = (("float32", "float32", False), ("float32 tf32", "float32", True), ("float16", "float16", None),
                 ("bfloat16", "bfloat16", None))


def settings_for(device, dtype=None, channels_last=False, autocast=False):
    """The settings (columns) of one run: one on the CPU (dtype, default float32), the CUDA_SETTINGS on CUDA
    (only those of `dtype` when given); autocast: the one float32-under-autocast(bf16) setting."""
    suffix = (" channels_last" if channels_last else "") + (" autocast(bf16)" if autocast else "")
    if autocast or not str(device).startswith("cuda"):
        dtype = dtype or "float32"
        return [Setting(dtype + suffix, dtype, None, channels_last, autocast)]
    return [Setting(name + suffix, dt, tf32, channels_last) for name, dt, tf32 in CUDA_SETTINGS
            if dtype in (None, dt)]


@contextlib.contextmanager
def backend_flags(setting, device):
    """On CUDA: cudnn.benchmark on and the setting's TF32 flags while the block runs (then put back)."""
    if not str(device).startswith("cuda"):
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    cudnn.benchmark = True
    if setting.tf32 is not None:
        cudnn.allow_tf32, matmul.allow_tf32 = setting.tf32, False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


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


def _seconds(call, cuda):
    """One timed call: CUDA events around it on the current stream (after a synchronize, so the call's own
    launch cost counts, as it does on the CPU), or the wall clock."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def time_shape(shape, mode, device, repeat, warmup=1, **setting):
    """Median seconds per implementation, measured interleaved after `warmup` untimed rounds. `setting`:
    dtype, channels_last, autocast (the backend flags are the caller's: see backend_flags)."""
    cuda = device.startswith("cuda")
    calls = {name: _callable(fn, shape, mode, device, **setting) for name, fn in _implementations().items()}
    times = {name: [] for name in calls}
    for i in range(warmup + repeat):
        for name, (call, prepare) in calls.items():
            if prepare:
                prepare()
            t = _seconds(call, cuda)
            if i >= warmup:
                times[name].append(t)
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default: torch's)")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"timed calls per implementation (default: {DEFAULT_REPEAT['cpu']} on the CPU, "
                             f"{DEFAULT_REPEAT['cuda']} on CUDA)")
    parser.add_argument("--shapes", default=None, help="comma-separated substrings; keep shapes whose name matches")
    parser.add_argument("--modes", default=None,
                        help="comma-separated subset of fwd,bwd,fwdbwd (default: all on the CPU, fwd,fwdbwd on CUDA)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats, no memory measurement")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory case")
    parser.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="write the results as Markdown tables (settings as columns) and geometric means")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES),
                        help="tensor dtype (default: float32 on the CPU; on CUDA all of float32 with TF32 off and "
                             "on, float16, bfloat16)")
    parser.add_argument("--channels-last", action="store_true", help="input in channels_last memory format")
    parser.add_argument("--autocast", action="store_true",
                        help="float32 tensors, both implementations under torch.autocast(bfloat16)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="bar chart of the speedups on a log axis (needs matplotlib)")


def plot(rows, path, title):
    """Speedup per shape (one bar per mode, or per setting and mode) on a log axis, with the 1.0x line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multi = len({r["setting"] for r in rows}) > 1
    series_of = (lambda r: f"{r['setting']} {r['mode']}") if multi else (lambda r: r["mode"])
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    series = list(dict.fromkeys(series_of(r) for r in rows))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(shapes) * len(series)), 4.5))
    for k, name in enumerate(series):
        vals = {r["shape"]: r["speedup"] for r in rows if series_of(r) == name}
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(shapes))]
        ax.bar(xs, [vals.get(sh, float("nan")) for sh in shapes], width, label=name)
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


def summarize(rows, settings, modes):
    """Geometric mean and minimum of the speedups per (setting, group, mode), group "all" included. Keys:
    "group/mode" when the run has one setting (every CPU run), "setting/group/mode" when it has several."""
    multi = len(settings) > 1
    summary = {}
    for s in settings:
        for group in GROUPS:
            for mode in modes:
                vals = [r["speedup"] for r in rows if r["setting"] == s.name and r["mode"] == mode
                        and (group == "all" or r["group"] == group)]
                if vals:
                    key = f"{s.name}/{group}/{mode}" if multi else f"{group}/{mode}"
                    summary[key] = {"setting": s.name, "group": group, "mode": mode, "geomean": geomean(vals),
                                    "min": min(vals), "count": len(vals)}
    return summary


def markdown(meta, rows, summary, memory=None):
    """The results as Markdown: per mode a table of speedups with the settings as columns, the peak memory, and
    last the "## Geometric mean" section (benchmarks/gpu_check.sh prints it from that heading to the end)."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    cell = {(r["shape"], r["setting"], r["mode"]): r for r in rows}
    ref = meta["reference"]
    lines = [f"# deconv_ext vs F.conv_transpose2d ({ref}) on {meta['device_name']}", "",
             f"torch {meta['torch']}" + (f", CUDA {meta['cuda']}, cuDNN {meta['cudnn']}" if meta.get("cuda") else "")
             + f"; median of {meta['repeat']} timed calls ({meta['timer']}) after {meta['warmup']} warm-up "
               f"round(s), the two implementations interleaved.",
             "", f"Speedup = {ref} time / deconv_ext time (> 1: deconv_ext is faster); in brackets: deconv_ext ms "
                 f"/ {ref} ms. Settings: " + "; ".join(meta["setting_notes"]) + "."]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        lines += ["", f"## {MODE_NAMES[mode]}", "", "| shape | " + " | ".join(settings) + " |",
                  "|---|" + "---:|" * len(settings)]
        for shape in shapes:
            cells = []
            for s in settings:
                r = cell.get((shape, s, mode))
                cells.append(f"{r['speedup']:.2f}x ({r['ms_ours']:.3f} / {r['ms_torch']:.3f})" if r else "")
            lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    if memory:
        lines += ["", f"## Peak memory, forward of {memory['shape']} (float32; {memory['method']})", ""]
        lines += [f"- {impl}: {m['peak_bytes'] / 2**20:.1f} MiB (output {m['output_bytes'] / 2**20:.1f} MiB)"
                  for impl, m in memory["results"].items()]
    lines += ["", "## Geometric mean of speedups (min in brackets)", "",
              "| setting | mode | " + " | ".join(GROUPS) + " |", "|---|---|" + "---:|" * len(GROUPS)]
    for s in settings:
        for mode in dict.fromkeys(r["mode"] for r in rows):
            entries = {v["group"]: v for v in summary.values() if v["setting"] == s and v["mode"] == mode}
            lines.append(f"| {s} | {mode} | " + " | ".join(
                f"{entries[g]['geomean']:.2f}x [{entries[g]['min']:.2f}x]" if g in entries else "" for g in GROUPS)
                + " |")
    return "\n".join(lines) + "\n"


def _check_device(name):
    """The torch.device to run on, or a UsageError saying in one line why `name` cannot be used here."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device name (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: the benchmark runs on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device {name}: CUDA is not available here ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if not torch._C._dispatch_has_kernel_for_dispatch_key("deconv_ext::conv_transpose2d", "CUDA"):
            raise UsageError(f"--device {name}: this deconv_ext build has no CUDA kernels (see `deconv-ext info`); "
                             f"rebuild it with FORCE_CUDA=1")
    return dev


def _check_writable(path, option):
    """Before the run: say in one line why the output file `path` could not be written (nothing is created)."""
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a folder; {option} takes a file name")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):  # missing folders are made when the file is written
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CommandError(f"{path}: {existing} is a file, not a folder; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CommandError(f"{path}: cannot write it (permission denied); choose another {option}")


def _write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _meta(device, repeat, warmup, settings):
    cuda = device.startswith("cuda")
    meta = {"device": device, "threads": torch.get_num_threads(), "repeat": repeat, "torch": torch.__version__}
    if len(settings) == 1:
        meta["setting"] = settings[0].name
    meta.update(machine=platform.machine(), processor=platform.processor(), warmup=warmup,
                settings=[dataclasses.asdict(s) for s in settings],
                timer="CUDA events" if cuda else "wall clock",
                reference="cuDNN" if cuda else "PyTorch CPU",
                device_name=torch.cuda.get_device_name(device) if cuda else f"{platform.machine()} CPU, "
                                                                             f"{torch.get_num_threads()} threads",
                cuda=torch.version.cuda if cuda else None,
                cudnn=torch.backends.cudnn.version() if cuda else None)
    notes = []
    for s in settings:
        note = f"{s.name}: {s.dtype}" + (" tensors under autocast(bfloat16)" if s.autocast else "") + \
               (", channels_last input" if s.channels_last else "")
        if s.tf32 is not None:
            note += ", TF32 " + ("on (cudnn.allow_tf32, PyTorch's default)" if s.tf32 else "off on both sides")
        notes.append(note)
    meta["setting_notes"] = notes
    return meta


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    dev = _check_device(device)
    cuda = dev.type == "cuda"
    if cuda and dev.index is not None:
        torch.cuda.set_device(dev)
    kind = "cuda" if cuda else "cpu"
    shapes = QUICK_SHAPES if args.quick else (GPU_SHAPES if cuda else SHAPES)
    repeat = 2 if args.quick else (args.repeat or DEFAULT_REPEAT[kind])
    warmup = 1 if args.quick else WARMUP[kind]
    if args.shapes:
        keys = [k.strip() for k in args.shapes.split(",") if k.strip()]
        shapes = [s for s in shapes if any(k in s.name for k in keys)]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else list(DEFAULT_MODES[kind])
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
    if args.autocast and args.dtype not in (None, "float32"):
        print("deconv-ext bench: --autocast runs float32 tensors under autocast; leave --dtype at float32",
              file=sys.stderr)
        return 2
    for option in ("json", "markdown", "plot"):
        if getattr(args, option):
            _check_writable(getattr(args, option), f"--{option}")
    settings = settings_for(device, args.dtype, args.channels_last, args.autocast)
    multi = len(settings) > 1
    meta = _meta(device, repeat, warmup, settings)
    head = f"device={device} threads={torch.get_num_threads()} repeat={repeat} torch={torch.__version__} "
    if cuda:
        head += (f"gpu={meta['device_name']!r} cuda={meta['cuda']} cudnn={meta['cudnn']} warmup={warmup} "
                 f"timer=cuda-events ")
    print(head + (f"settings={', '.join(s.name for s in settings)}" if multi else f"setting={settings[0].name}"))
    width = max([16] + [len(s.name) for s in shapes])
    sw = max(len(s.name) for s in settings)
    scol = f" {'setting':{sw}s}" if multi else ""
    print(f"{'shape':{width}s}{scol} {'mode':7s} {'ours ms':>9s} {'torch ms':>9s} {'ours GF/s':>9s} "
          f"{'torch GF/s':>10s} {'speedup':>8s}")
    rows = []
    for shape in shapes:
        for setting in settings:
            with backend_flags(setting, device):
                for mode in modes:
                    t = time_shape(shape, mode, device, repeat, warmup, **setting.call_kwargs())
                    flops = shape.flops() * {"fwd": 1, "bwd": 2, "fwdbwd": 3}[mode]
                    row = {"shape": shape.name, "group": shape.group, "setting": setting.name, "mode": mode,
                           "ms_ours": t["deconv_ext"] * 1e3, "ms_torch": t["torch"] * 1e3,
                           "gflops_ours": flops / t["deconv_ext"] / 1e9, "gflops_torch": flops / t["torch"] / 1e9,
                           "speedup": t["torch"] / t["deconv_ext"]}
                    rows.append(row)
                    scell = f" {setting.name:{sw}s}" if multi else ""
                    print(f"{shape.name:{width}s}{scell} {mode:7s} {row['ms_ours']:9.2f} {row['ms_torch']:9.2f} "
                          f"{row['gflops_ours']:9.1f} {row['gflops_torch']:10.1f} {row['speedup']:7.2f}x", flush=True)

    summary = summarize(rows, settings, modes)
    print("\nsummary (geometric mean of speedups; min in brackets)")
    for v in summary.values():
        scell = f" {v['setting']:{sw}s}" if multi else ""
        print(f" {scell} {v['group']:5s} {v['mode']:7s} {v['geomean']:6.2f}x  [min {v['min']:.2f}x over {v['count']}]")

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
        _write(args.json, json.dumps({"meta": meta, "results": rows, "summary": summary, "memory": memory}, indent=1))
    if args.markdown:
        _write(args.markdown, markdown(meta, rows, summary, memory))
        print(f"wrote {args.markdown}")
    if args.plot:
        label = ", ".join(s.name for s in settings)
        plot(rows, args.plot, f"deconv_ext vs F.conv_transpose2d, {device}, {label}"
                              + ("" if cuda else f", {torch.get_num_threads()} threads"))
        print(f"wrote {args.plot}")
    return 0


def main(argv=None):
    """`python -m deconv_ext.bench ...` / benchmarks/bench_cpu.py: the same as `deconv-ext bench ...`."""
    from . import cli

    return cli.main(["bench"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
