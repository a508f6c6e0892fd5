"""CUDA-specific tests of the deconv_ext kernels (skipped where no GPU is visible).

The device-parametrized suite covers semantics on every device; this file checks what only the
CUDA backend can get wrong: the four ops over the correctness grid (deconv_ext.testing.GRID) x layouts
x dtypes (half types included) against the float64 reference and the CPU op's layouts, bitwise
determinism, device errors, streams, autocast, and the 64-bit index path.
"""
import pytest
import torch
import torch.nn.functional as F

import deconv_ext
from deconv_ext import dispatch
from deconv_ext.testing import GEMM_GRID, GRID, SUBPIXEL_GRID, TF32_ROUNDOFF, Case, Reference, run_ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ops = torch.ops.deconv_ext

CASES = {c.name: c for c in GRID}
LAYOUTS = ["contiguous", "channels_last", "strided"]
HAS_TENSOR_CORE_PATH = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def cuda(*tensors):
    return [None if t is None else t.cuda() for t in tensors]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=["f64", "f32", "f16", "bf16"])
def test_matches_cpu_and_pytorch(case, layout, dtype):
    """All four ops on CUDA against the float64 reference (the tolerance rule of deconv_ext.testing), with
    the same result layout as the CPU op."""
    x, w, b, gy = case.tensors(dtype, device="cpu", layout=layout)
    cpu = run_ops(x, w, b, gy, case)
    got = run_ops(*case.tensors(dtype, device="cuda", layout=layout), case)
    for op_name, value in got.items():
        assert value.device.type == "cuda" and value.dtype == dtype, op_name
        assert value.stride() == cpu[op_name].stride(), f"{op_name}: layout differs from the CPU op"
    Reference(x, w, b, gy, **case.params).check_all(got, context=f" [{case}, {layout}, cuda]")


@pytest.mark.skipif(not HAS_TENSOR_CORE_PATH, reason="the tensor-core path needs sm_80+")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", GEMM_GRID + GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["tf32", "f16", "bf16"])
def test_gemm_path_matches_pytorch(case, layout, dtype, monkeypatch):
    """Every op forced onto the tensor cores (float32 as TF32: its input rounding is allowed for)."""
    monkeypatch.setenv("DECONV_EXT_CUDA_PATH", "gemm")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x, w, b, gy = case.tensors(dtype, device="cuda", layout=layout)
    got = run_ops(x, w, b, gy, case)
    ref = Reference(x, w, b, gy, **case.params)
    roundoff = TF32_ROUNDOFF if dtype == torch.float32 else 0.0
    for op_name, value in got.items():
        ref.check(op_name, value, context=f" [{case}, {layout}, gemm]", input_roundoff=roundoff)
    again = run_ops(x, w, b, gy, case)
    for op_name in got:
        assert torch.equal(again[op_name], got[op_name]), f"{op_name}: not bitwise reproducible"


SUBPIXEL_CASES = SUBPIXEL_GRID + [CASES[n] for n in ("fsrcnn", "fsrcnn_wide", "rgb_out", "kernel_1x1")]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", SUBPIXEL_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
def test_subpixel_path_matches_pytorch(case, layout, dtype, monkeypatch):
    """The few-output-channel forward (and the simt gradients it comes with), forced."""
    monkeypatch.setenv("DECONV_EXT_CUDA_PATH", "subpixel")
    x, w, b, gy = case.tensors(dtype, device="cuda", layout=layout)
    got = run_ops(x, w, b, gy, case)
    Reference(x, w, b, gy, **case.params).check_all(got, context=f" [{case}, {layout}, subpixel]")
    assert torch.equal(run_ops(x, w, b, gy, case)["forward"], got["forward"])


@pytest.mark.parametrize("path", ["simt", "gemm"])
@pytest.mark.parametrize("case", [GEMM_GRID[0], GEMM_GRID[3], CASES["dilation_gt_stride"]], ids=str)
def test_index64_path(case, path, monkeypatch):
    """The 64-bit index instantiations (normally past 2^30 elements), forced by DECONV_EXT_CUDA_INDEX64."""
    if path == "gemm" and not HAS_TENSOR_CORE_PATH:
        pytest.skip("the tensor-core path needs sm_80+")
    monkeypatch.setenv("DECONV_EXT_CUDA_PATH", path)
    monkeypatch.setenv("DECONV_EXT_CUDA_INDEX64", "1")
    dtype = torch.bfloat16 if path == "gemm" else torch.float64
    x, w, b, gy = case.tensors(dtype, device="cuda")
    Reference(x, w, b, gy, **case.params).check_all(run_ops(x, w, b, gy, case), context=f" [{case}, {path}]")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_deterministic(dtype):
    """Ten repeated runs of every op are bitwise equal (no atomics; fixed reduction order)."""
    case = Case("deterministic", 8, 32, 16, 24, 24, 4, 2, 1)
    args = case.tensors(dtype, device="cuda")
    first = run_ops(*args, case)
    for _ in range(9):
        again = run_ops(*args, case)
        for op_name in first:
            assert torch.equal(again[op_name], first[op_name]), op_name


def test_autograd_and_gradcheck():
    case = CASES["groups_tail"]
    x, w, _, _ = case.tensors(torch.float64, device="cuda")
    args = [x.requires_grad_(True), w.requires_grad_(True)]
    fn = lambda x_, w_: deconv_ext.conv_transpose2d(x_, w_, None, **case.params)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_empty_batch_gives_zero_grads():
    case = CASES["batch0"]
    x, w, b, gy = case.tensors(torch.float64, device="cuda")
    got = run_ops(x, w, b, gy, case)
    assert got["forward"].shape[0] == 0 and got["grad_input"].shape[0] == 0
    assert torch.equal(got["grad_weight"], torch.zeros_like(w))
    assert torch.equal(got["grad_bias"], torch.zeros_like(b))


def test_path_query_and_forcing(monkeypatch):
    case = CASES["dcgan"]
    x, w, b, gy = case.tensors(torch.float32, device="cuda")
    assert dispatch.cuda_path(x, w, **case.params) == "simt"  # 16 -> 8 channels: below the GEMM rule
    big = Case("dcgan_big", 2, 32, 16, 4, 4, 4, stride=2, padding=1)
    xb, wb, _, _ = big.tensors(torch.float16, device="cuda")
    assert dispatch.cuda_path(xb, wb, **big.params) == ("gemm" if HAS_TENSOR_CORE_PATH else "simt")
    monkeypatch.setenv("DECONV_EXT_CUDA_PATH", "tensor_core_someday")
    with pytest.raises(RuntimeError, match="DECONV_EXT_CUDA_PATH: expected one of auto, simt, gemm, subpixel"):
        ops.conv_transpose2d(x, w, b, *case.op_args)


def test_mixed_devices_raise():
    case = CASES["basic"]
    params = case.op_args
    x, w, b, gy = case.tensors(torch.float64)
    xc, wc, bc, gyc = cuda(x, w, b, gy)
    with pytest.raises(RuntimeError, match="expected weight to be on the same device as input"):
        ops.conv_transpose2d(xc, w, bc, *params)
    with pytest.raises(RuntimeError, match="expected weight to be on the same device as input"):
        ops.conv_transpose2d(x, wc, None, *params)
    with pytest.raises(RuntimeError, match="expected bias to be on the same device as input"):
        ops.conv_transpose2d(xc, wc, b, *params)
    with pytest.raises(RuntimeError, match="same device as grad_output"):
        ops.conv_transpose2d_grad_input(gyc, w, *params)
    with pytest.raises(RuntimeError, match="expected grad_output to be on the same device as input"):
        ops.conv_transpose2d_grad_weight(gyc, x, list(w.shape[2:]), *params)
    with pytest.raises(RuntimeError, match="same device"):
        deconv_ext.conv_transpose2d(xc, w)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_raise_and_second_gpu_works():
    case = CASES["basic"]
    x, w, b, gy = case.tensors(torch.float64)
    with pytest.raises(RuntimeError, match="same device"):
        ops.conv_transpose2d(x.to("cuda:0"), w.to("cuda:1"), None, *case.op_args)
    got = run_ops(*(t.to("cuda:1") for t in (x, w, b, gy)), case)
    for op_name, value in got.items():
        assert value.device == torch.device("cuda:1")
    Reference(x, w, b, gy, **case.params).check_all(got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_matches_pytorch_dtype(dtype):
    case = CASES["dcgan"]
    x, w, b, gy = case.tensors(torch.float32, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        ours = deconv_ext.conv_transpose2d(x, w, b, **case.params)
        theirs = F.conv_transpose2d(x, w, b, **case.params)
    assert ours.dtype == theirs.dtype == dtype
    # autocast ran the op on the inputs rounded to dtype: judge it there
    ref = Reference(*(t.to(dtype) for t in (x, w, b, gy)), **case.params)
    ref.check("forward", ours)


def test_runs_on_current_stream():
    case = CASES["dcgan"]
    x, w, b, gy = case.tensors(torch.float64)
    xc, wc, bc = cuda(x, w, b)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = ops.conv_transpose2d(xc, wc, bc, *case.op_args)
    stream.synchronize()
    Reference(x, w, b, gy, **case.params).check("forward", y)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
                    reason="needs a GPU with >= 40 GiB")
def test_more_than_2_31_elements():
    """A 1x1 kernel over a 32768^2 image with 3 output channels: 3 * 2^30 output elements (64-bit path)."""
    side = 32768
    gen = torch.Generator(device="cuda").manual_seed(0)
    # Small values keep the 2^30-term sums of grad_weight/grad_bias inside fp16's range.
    x = torch.randn(1, 1, side, side, device="cuda", dtype=torch.float16, generator=gen) * 2**-9
    w = torch.tensor([0.5, -1.25, 2.0], device="cuda", dtype=torch.float16).reshape(1, 3, 1, 1)
    params = ([1, 1], [0, 0], [0, 0], 1, [1, 1])
    y = ops.conv_transpose2d(x, w, None, *params)
    assert y.shape == (1, 3, side, side) and y.numel() > 2**31
    for c in range(3):  # an fp16*fp16 product is exact in float: both sides round it once
        assert torch.equal(y[0, c], x[0, 0] * w[0, c, 0, 0]), c
    gx = ops.conv_transpose2d_grad_input(y, w, *params)
    want = sum(y[0, c].float() * w[0, c, 0, 0].float() for c in range(3))
    torch.testing.assert_close(gx[0, 0].float(), want, rtol=2e-3, atol=1e-5)
    del want, gx
    gb = ops.conv_transpose2d_grad_bias(y)
    gw = ops.conv_transpose2d_grad_weight(y, x, [1, 1], *params)
    xf = x.flatten().float()
    for c in range(3):
        yc = y[0, c].flatten().float()
        torch.testing.assert_close(gb[c].float(), yc.sum(), rtol=5e-3, atol=0.1)
        torch.testing.assert_close(gw[0, c, 0, 0].float(), torch.dot(xf, yc), rtol=5e-3, atol=0.1)
