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
