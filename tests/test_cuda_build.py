"""The tensor-core and sub-pixel kernels as nvcc builds them (no GPU needed, only nvcc): ptxas' resource report
shows no local-memory spill in any of them, and the GEMM kernels' SASS holds tensor-core instructions (HMMA).

Each file is compiled for sm_90 (or the first arch >= 8.0 of TORCH_CUDA_ARCH_LIST) with the flags the
extension's build uses (setup.py) plus `-Xptxas -v`. Skipped where nvcc is missing.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEMM_FILES = ("forward_gemm", "grad_input_gemm", "grad_weight_gemm")
# file -> (kernel name part, instantiations): 3 dtypes x 2 index widths x 2 layouts; 3 dtypes x 3 strides
KERNELS = {name: ("gemm_kernel", 12) for name in GEMM_FILES}
KERNELS["forward_subpixel"] = ("subpixel_kernel", 9)
NVCC = shutil.which("nvcc")
pytestmark = [pytest.mark.slow, pytest.mark.gpu_free, pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")]


def _arch():
    for a in re.split(r"[ ;]+", os.environ.get("TORCH_CUDA_ARCH_LIST", "")):
        a = a.replace("+PTX", "")
        if a and float(a) >= 8.0:
            return a.replace(".", "")
    return "90"


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    import importlib.util
    spec = importlib.util.find_spec("triton")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "backends", "nvidia", "bin", "cuobjdump")
        if os.path.exists(path):
            return path
    return None


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{file: (ptxas report, object path)}; the three files compile in parallel."""
    out = tmp_path_factory.mktemp("nvcc")
    inc = os.path.join(os.path.dirname(torch.__file__), "include")
    arch = _arch()
    procs = {}
    for name in KERNELS:
        obj = str(out / f"{name}.o")
        cmd = [NVCC, "-c", os.path.join(ROOT, "csrc", "cuda", name + ".cu"), "-o", obj, "-I", inc,
               "-I", os.path.join(inc, "torch", "csrc", "api", "include"), "-I", os.path.join(ROOT, "csrc"),
               "-std=c++20", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
               f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v"]
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), obj)
    results = {}
    for name, (p, obj) in procs.items():
        report = p.communicate(timeout=900)[0]
        assert p.returncode == 0, f"nvcc failed on {name}.cu:\n{report[-3000:]}"
        results[name] = (report, obj)
    return results


def _entries(report):
    """[(function name, its 'Function properties' block)] from ptxas -v."""
    blocks = re.split(r"ptxas info\s*: Compiling entry function ", report)[1:]
    return [(b.split("'")[1], b) for b in blocks]


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_do_not_spill(builds, name):
    part, count = KERNELS[name]
    entries = [(fn, b) for fn, b in _entries(builds[name][0]) if part in fn]
    assert len(entries) == count, f"expected {count} instantiations of the {part}, got {len(entries)}"
    for fn, block in entries:
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", block)
        assert m, f"no spill line for {fn}"
        assert m.groups() == ("0", "0"), f"{fn}: {m.group(0)}"


@pytest.mark.parametrize("name", GEMM_FILES)
def test_gemm_kernels_use_tensor_cores(builds, name):
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA toolkit or triton's copy)")
    sass = subprocess.run([tool, "-sass", builds[name][1]], capture_output=True, text=True, check=True).stdout
    # HMMA.16816 for float16/bfloat16 (m16n8k16), HMMA.1688 for TF32 (m16n8k8)
    assert re.search(r"HMMA\.16816\.F32\.BF16", sass), "no bfloat16 m16n8k16 HMMA"
    assert re.search(r"HMMA\.16816\.F32 ", sass) or re.search(r"HMMA\.16816\.F32\b(?!\.BF16)", sass), "no float16 HMMA"
    assert re.search(r"HMMA\.1688\.F32\.TF32", sass), "no TF32 m16n8k8 HMMA"
    assert "LDSM" in sass, "no ldmatrix (LDSM)"
    if name != "grad_weight_gemm":
        assert "LDGSTS" in sass, "no cp.async (LDGSTS)"
