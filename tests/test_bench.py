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
