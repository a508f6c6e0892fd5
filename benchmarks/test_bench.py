"""pytest-benchmark tests: a few representative shapes, deconv_ext and F.conv_transpose2d side by side.

    python -m pytest benchmarks/test_bench.py --benchmark-group-by=param:shape

(needs the pytest-benchmark plugin; skipped without it). Shapes and timing helpers come from
deconv_ext/bench.py, so both runners measure the same thing.
"""
import pytest

from deconv_ext import bench

pytest.importorskip("pytest_benchmark")

SHAPES = {s.name: s for s in bench.SHAPES}
REPRESENTATIVE = ["fsrcnn_x3", "fsrcnn_rgb_x2", "dcgan_128_64", "depthwise"]


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("impl", ["deconv_ext", "torch"])
@pytest.mark.parametrize("shape", REPRESENTATIVE)
def test_conv_transpose2d(benchmark, shape, impl, mode):
    fn = bench._implementations()[impl]
    call, prepare = bench._callable(fn, SHAPES[shape], mode, "cpu")
    benchmark.extra_info["gflop"] = SHAPES[shape].flops() * (3 if mode == "fwdbwd" else 1) / 1e9
    benchmark(call)
