"""CPU benchmark of deconv_ext against F.conv_transpose2d: `python benchmarks/bench_cpu.py [options]`.

A thin wrapper of `deconv-ext bench --device cpu` (deconv_ext/bench.py holds the shapes, the method and
the options); results of a run on the 2-core development machine are in benchmarks/results_cpu.json.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deconv_ext import bench  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--device" or a.startswith("--device=") for a in argv):
        argv = ["--device", "cpu"] + argv
    sys.exit(bench.main(argv))
