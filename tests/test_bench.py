"""Smoke test of the benchmark runner (`deconv-ext bench --quick`): runs, prints, writes valid JSON."""
import json

import pytest
import torch

from deconv_ext import bench, cli


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # `bench --threads 1` sets the process-wide count
    yield
    torch.set_num_threads(threads)


def test_quick_bench_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["shape"] for r in data["results"]} == {s.name for s in bench.QUICK_SHAPES}
    assert {r["mode"] for r in data["results"]} == set(bench.MODES)
    for r in data["results"]:
        assert r["ms_ours"] > 0 and r["ms_torch"] > 0 and r["speedup"] > 0
    assert data["summary"]["all/fwd"]["count"] == len(bench.QUICK_SHAPES)
    assert "speedup" in capsys.readouterr().out


def test_shape_filter_and_modes(tmp_path):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--shapes", "depthwise", "--modes", "fwd", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["shape"], r["mode"]) for r in data["results"]] == [("depthwise", "fwd")]
    assert cli.main(["bench", "--quick", "--shapes", "no-such-shape"]) == 2


def test_geomean():
    assert abs(bench.geomean([2.0, 8.0]) - 4.0) < 1e-12


def test_settings_and_plot(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "speedup.png"
    for extra in (["--dtype", "bfloat16"], ["--dtype", "float16", "--channels-last"], ["--autocast"]):
        assert cli.main(["bench", "--quick", "--modes", "fwd,fwdbwd", "--json", str(out)] + extra) == 0
        data = json.loads(out.read_text())
        assert data["meta"]["setting"].split()[0] in ("bfloat16", "float16", "float32")
        assert all(r["speedup"] > 0 for r in data["results"])
    assert cli.main(["bench", "--quick", "--shapes", "depthwise", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["bench", "--quick", "--autocast", "--dtype", "float16"]) == 2


def test_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert cli.main(["bench", "--quick", "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot needs matplotlib (pip install matplotlib)" in capsys.readouterr().err


# ---- one runner for the CPU and CUDA: shapes, settings, outputs, errors -------------------------------------------
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from deconv_ext.testing import BENCH_GPU, Reference, run_ops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def test_gpu_shapes_are_valid_and_named_for_what_they_are():
    assert bench.GPU_SHAPES is BENCH_GPU and len({c.name for c in BENCH_GPU}) == len(BENCH_GPU)
    for case in BENCH_GPU:
        x = torch.empty(case.N, case.C_in, case.H, case.W, device="meta")
        w = torch.empty(case.C_in, case.C_out // case.groups, *case.kernel, device="meta")
        assert tuple(F.conv_transpose2d(x, w, **case.params).shape) == case.output_shape(), case
        assert f"_{case.C_in}_{case.C_out}_" in case.name or case.name.startswith("fsrcnn"), case
        assert f"_{case.H}x{case.W}_b{case.N}" in case.name, case
        assert case.group == ("sr" if case.kernel == (9, 9) else "other"), case
    # the FSRCNN last layer at x2/x3/x4 (k9, padding 4, output_padding scale-1) on whole images and on patches
    fsrcnn = {(c.stride[0], c.N) for c in BENCH_GPU if c.name.startswith("fsrcnn") and c.C_out == 1
              and c.padding == (4, 4) and c.output_padding[0] == c.stride[0] - 1}
    assert fsrcnn == {(s, n) for s in (2, 3, 4) for n in (1, 16)}


@pytest.mark.parametrize("case", BENCH_GPU, ids=str)
def test_gpu_shapes_run_at_tiny_scale(case):
    """Each shape's channels and parameters, on a 1x3x4 input: ours agrees with PyTorch (all four ops)."""
    tiny = case.replace(N=1, H=3, W=4)
    x, w, b, gy = tiny.tensors(torch.float32, weight_scale=0.1)
    Reference(x, w, b, gy, **tiny.params).check_all(run_ops(x, w, b, gy, tiny))


def test_settings_per_device():
    assert [(s.name, s.dtype, s.tf32) for s in bench.settings_for("cpu")] == [("float32", "float32", None)]
    (s,) = bench.settings_for("cpu", "bfloat16", channels_last=True)
    assert (s.name, s.call_kwargs()) == ("bfloat16 channels_last", dict(dtype=torch.bfloat16, channels_last=True,
                                                                         autocast=False))
    assert [(s.name, s.dtype, s.tf32) for s in bench.settings_for("cuda")] == [
        ("float32", "float32", False), ("float32 tf32", "float32", True), ("float16", "float16", None),
        ("bfloat16", "bfloat16", None)]
    assert [s.name for s in bench.settings_for("cuda:1", "float32")] == ["float32", "float32 tf32"]
    assert [s.name for s in bench.settings_for("cuda", "float16", channels_last=True)] == ["float16 channels_last"]
    (s,) = bench.settings_for("cuda", autocast=True)
    assert (s.name, s.autocast, s.tf32) == ("float32 autocast(bf16)", True, None)
    assert bench.DEFAULT_MODES == {"cpu": ("fwd", "bwd", "fwdbwd"), "cuda": ("fwd", "fwdbwd")}


def test_backend_flags_set_tf32_and_cudnn_benchmark_then_restore():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    off, on, half = bench.settings_for("cuda")[:3]
    try:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = False, True, True
        with bench.backend_flags(off, "cuda"):
            assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (True, False, False)
        with bench.backend_flags(on, "cuda"):
            assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (True, True, False)
        with bench.backend_flags(half, "cuda"):
            assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (True, True, True)
        assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (False, True, True)
        with bench.backend_flags(off, "cpu"):  # the CPU run leaves PyTorch's flags alone
            assert (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (False, True, True)
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = before


def _no_timing(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "time_shape", lambda *a, **k: calls.append(a) or 1 / 0)
    return calls


def _one_error_line(capsys):
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("deconv-ext") and "Traceback" not in err[0], err
    return err[0]


def test_cuda_unavailable_is_one_line(monkeypatch, capsys):
    calls = _no_timing(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--device", "cuda"]) == 2
    line = _one_error_line(capsys)
    assert "--device cuda: CUDA is not available here" in line and "--device cpu" in line
    assert cli.main(["bench", "--device", "gpu"]) == 2
    assert "--device gpu: not a device name" in _one_error_line(capsys)
    assert calls == []


def test_cuda_unavailable_through_the_entry_point():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DECONV_EXT_DEBUG", None)
    res = subprocess.run([sys.executable, "-m", "deconv_ext", "bench", "--device", "cuda"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "", (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("deconv-ext: error: --device cuda: CUDA is not "
                                                                 "available here"), res.stderr


@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_output_paths_checked_before_the_run(tmp_path, monkeypatch, capsys, option):
    calls = _no_timing(monkeypatch)
    (tmp_path / "blocker").write_text("")
    assert cli.main(["bench", "--quick", option, str(tmp_path / "blocker" / "b.out")]) == 1
    line = _one_error_line(capsys)
    assert "blocker/b.out" in line and f"choose another {option}" in line
    assert cli.main(["bench", "--quick", option, str(tmp_path)]) == 1
    assert f"is a folder; {option} takes a file name" in _one_error_line(capsys)
    assert calls == []  # refused before anything was timed


def test_several_settings_json_and_markdown(tmp_path, monkeypatch, capsys):
    """The CUDA run's shape (several settings per run) on the CPU: two float settings as columns."""
    settings = [bench.Setting("float32"), bench.Setting("bfloat16", "bfloat16")]
    monkeypatch.setattr(bench, "settings_for", lambda *a, **k: settings)
    js, md = tmp_path / "out" / "b.json", tmp_path / "out" / "b.md"  # missing folders are made
    assert cli.main(["bench", "--quick", "--shapes", "fsrcnn,depthwise", "--modes", "fwd,fwdbwd",
                     "--json", str(js), "--markdown", str(md)]) == 0
    data = json.loads(js.read_text())
    keys = [(r["shape"], r["setting"], r["mode"]) for r in data["results"]]
    assert sorted(keys) == sorted((sh, s, m) for sh in ("fsrcnn_x3", "depthwise") for s in ("float32", "bfloat16")
                                  for m in ("fwd", "fwdbwd"))
    assert all(abs(r["speedup"] - r["ms_torch"] / r["ms_ours"]) < 1e-9 * r["speedup"] for r in data["results"])
    assert "setting" not in data["meta"] and [s["name"] for s in data["meta"]["settings"]] == ["float32", "bfloat16"]
    for s in ("float32", "bfloat16"):
        entry = data["summary"][f"{s}/all/fwd"]
        speedups = [r["speedup"] for r in data["results"] if r["setting"] == s and r["mode"] == "fwd"]
        assert entry["count"] == 2 and abs(entry["geomean"] - bench.geomean(speedups)) < 1e-12
        assert entry["min"] == min(speedups)
    text = md.read_text()
    assert "| shape | float32 | bfloat16 |" in text and "## forward+backward" in text
    # benchmarks/gpu_check.sh prints bench.md from the geometric-mean heading to the end into summary.txt
    heading = re.search(r"sed -n '/\^(.+?)/,\$p' \"\$OUT/bench.md\"", open(GPU_CHECK).read()).group(1)
    tail = text[text.index("\n" + heading) + 1:]
    assert [line.split(" | ")[:2] for line in tail.splitlines() if line.startswith("| float32 |")] == [
        ["| float32", "fwd"], ["| float32", "fwdbwd"]]
    assert "speedup" in capsys.readouterr().out


def test_gpu_check_runs_the_one_benchmark():
    assert not os.path.exists(os.path.join(ROOT, "benchmarks", "gpu_bench.py"))
    script = open(GPU_CHECK).read()
    assert "gpu_bench" not in script
    (line,) = [ln for ln in script.splitlines() if ln.startswith("step bench ")]
    argv = shlex.split(line.replace('"$OUT', '"OUTDIR'))
    assert argv[3:9] == ["$PY", "-m", "deconv_ext", "bench", "--device", "cuda"]
    args = cli.build_parser().parse_args(argv[6:])  # every option it passes exists
    assert (args.device, args.json, args.markdown) == ("cuda", "OUTDIR/bench.json", "OUTDIR/bench.md")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_cuda_bench(tmp_path):
    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--device", "cuda", "--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["timer"] == "CUDA events" and data["meta"]["reference"] == "cuDNN"
    assert {(r["setting"], r["mode"]) for r in data["results"]} == {
        (s, m) for s in ("float32", "float32 tf32", "float16", "bfloat16") for m in ("fwd", "fwdbwd")}
    assert all(r["speedup"] > 0 for r in data["results"])
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32) == flags
