"""The CUDA kernels' own source, run on the CPU by tools/cuda_emulation (no GPU needed), against PyTorch.

Both CUDA paths: "simt" (forward.cu, grad_input.cu, grad_weight.cu) and "gemm" (the tensor-core implicit
GEMM, igemm.cuh + *_gemm.cu, whose mma.sync / ldmatrix / cp.async run as the emulator's implementations of
the PTX fragment layouts, emu_mma.h). Every dtype each path serves, the correctness grid, the GEMM's tile
tails and phase cases, groups, dilation, batch 0, and the 64-bit index path (DECONV_EXT_CUDA_INDEX64=1).
A planted bug (EMU_MUTATE) must make the comparison fail. Building the emulator takes a few minutes.
"""
import os
import shutil
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "cuda_emulation"))
import emulate  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.gpu_free, pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                                   reason="no C++ compiler for the emulator")]

# The GEMM path on the GEMM cases and the grid, less the cases whose long reductions or many phases make
# thousands of emulated tile passes (minutes each here; tests/test_cuda.py runs them on a GPU).
SLOW_HERE = {"long_reduction", "fsrcnn", "fsrcnn_wide", "rgb_out", "grid_stride_loops", "split_reductions"}
GEMM_ALL = emulate.GEMM_CASES + [c for c in emulate.CASES if c.name not in SLOW_HERE]


@pytest.fixture(scope="module")
def emu():
    return emulate.build()


def _ids(cases):
    return [c.name for c in cases]


@pytest.mark.parametrize("dtype", emulate.PATH_DTYPES["gemm"], ids=str)
@pytest.mark.parametrize("case", GEMM_ALL, ids=_ids(GEMM_ALL))
def test_gemm_path(emu, case, dtype):
    assert emulate.run_case(emu, case, dtype, "gemm") == []


@pytest.mark.parametrize("dtype", emulate.PATH_DTYPES["simt"], ids=str)
@pytest.mark.parametrize("case", emulate.CASES, ids=_ids(emulate.CASES))
def test_simt_path(emu, case, dtype):
    assert emulate.run_case(emu, case, dtype, "simt") == []


@pytest.mark.parametrize("dtype", emulate.PATH_DTYPES["subpixel"], ids=str)
@pytest.mark.parametrize("case", emulate.SUBPIXEL_CASES, ids=_ids(emulate.SUBPIXEL_CASES))
def test_subpixel_path(emu, case, dtype):
    assert emulate.run_case(emu, case, dtype, "subpixel") == []


CHANNELS_LAST = [c for c in GEMM_ALL if c.name in ("gemm_tiles_tails", "gemm_phases_dilated", "gemm_no_tap_phases",
                                                  "gemm_split_k", "gemm_groups", "dcgan", "stride_gt_kernel", "batch0")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CHANNELS_LAST, ids=_ids(CHANNELS_LAST))
def test_gemm_path_channels_last(emu, case, dtype):
    """channels_last images reach the GEMM kernels as they are (their NHWC instantiations)."""
    assert emulate.run_case(emu, case, dtype, "gemm", layout="channels_last") == []


INDEX64 = [c for c in emulate.GEMM_CASES + emulate.CASES
           if c.name in ("gemm_tiles_tails", "gemm_split_k", "dilation_gt_stride", "groups_tail")]


@pytest.mark.parametrize("path", ["simt", "gemm"])
@pytest.mark.parametrize("case", INDEX64, ids=_ids(INDEX64))
def test_index64_path(emu, case, path, monkeypatch):
    monkeypatch.setenv("DECONV_EXT_CUDA_INDEX64", "1")
    dtype = torch.bfloat16 if path == "gemm" else torch.float64
    assert emulate.run_case(emu, case, dtype, path) == []
    if path == "gemm":
        assert emulate.run_case(emu, case, dtype, path, layout="channels_last") == []


def test_gemm_rejects_float64(emu):
    case = emulate.GEMM_CASES[0]
    x, w, b, _ = case.tensors(torch.float64)
    with pytest.raises(RuntimeError, match="float16, bfloat16 and float32"):
        emu.forward(x, w, b, *case.op_args, "gemm")


# A planted bug the tests above must catch: ldmatrix rows taken from the wrong k half, so the A fragments
# pair the wrong elements (a kernel that still runs, with plausible-looking results).
MUTATION = ("mma::ldmatrix_x4_trans(af[i], &As[buf][ks + (q >> 1) * 8 + r][wm + i * 16 + (q & 1) * 8])"
            "=>mma::ldmatrix_x4_trans(af[i], &As[buf][ks + (q & 1) * 8 + r][wm + i * 16 + (q >> 1) * 8])")


def test_planted_bug_is_caught(monkeypatch):
    with open(os.path.join(ROOT, "csrc", "cuda", "igemm.cuh")) as f:
        assert MUTATION.split("=>")[0] in f.read(), "the planted bug no longer applies to igemm.cuh"
    monkeypatch.setenv("EMU_MUTATE", MUTATION)
    mod = emulate.build("deconv_emu_mutated")
    failures = emulate.run_case(mod, emulate.GEMM_CASES[0], torch.bfloat16, "gemm")
    assert any("forward" in f for f in failures), failures
