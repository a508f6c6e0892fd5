"""CUDA-specific tests of the deconv_ext kernels (skipped where no GPU is visible).

The device-parametrized suite covers semantics on every device; this file checks what only the
CUDA backend can get wrong: agreement with the CPU kernels and with PyTorch over awkward shapes
and layouts, half-precision accuracy judged against PyTorch's own half error, bitwise
determinism, device errors, autocast, and the 64-bit index path.
"""
import pytest
import torch
import torch.nn.functional as F

import deconv_ext

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ops = torch.ops.deconv_ext

# (N, C_in, C_out, groups, H, W, kernel, stride, padding, output_padding, dilation, bias)
CONFIGS = {
    "basic": (2, 4, 6, 1, 5, 4, (3, 3), (2, 2), (1, 1), (1, 0), (1, 1), True),
    "dcgan": (2, 16, 8, 1, 4, 4, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), True),
    "groups_tail": (2, 6, 10, 2, 4, 5, (3, 2), (3, 1), (2, 0), (2, 0), (1, 2), False),
    "fsrcnn": (1, 8, 1, 1, 7, 6, (9, 9), (3, 3), (4, 4), (2, 2), (1, 1), True),
    "depthwise": (2, 8, 8, 8, 5, 5, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), True),
    "input_1x1": (3, 5, 7, 1, 1, 1, (2, 3), (1, 1), (0, 0), (0, 0), (1, 1), True),
    "dilation": (1, 4, 4, 1, 4, 4, (3, 3), (2, 3), (1, 0), (1, 2), (3, 2), True),
    "stride_gt_kernel": (2, 4, 8, 2, 4, 3, (2, 2), (4, 4), (0, 1), (3, 0), (1, 1), False),
    "unet": (2, 16, 8, 1, 6, 6, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), True),
    "long_reduction": (4, 3, 2, 1, 48, 40, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), True),
    "batch0": (0, 4, 6, 2, 5, 5, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), True),
}
LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]


def make_inputs(cfg, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    N, cin, cout, g, H, W, k, s, p, op, d, has_bias = cfg
    x = torch.randn(N, cin, H, W, generator=gen, dtype=torch.float64)
    w = torch.randn(cin, cout // g, *k, generator=gen, dtype=torch.float64)
    b = torch.randn(cout, generator=gen, dtype=torch.float64) if has_bias else None
    params = (list(s), list(p), list(op), g, list(d))
    y_shape = F.conv_transpose2d(x, w, b, s, p, op, g, d).shape
    gy = torch.randn(y_shape, generator=gen, dtype=torch.float64)
    return x, w, b, gy, params


def to_layout(t, layout, device, dtype):
    t = t.to(device=device, dtype=dtype)
    if t.dim() != 4 or layout == "contiguous":
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], device=device, dtype=dtype)
    wide[..., ::2] = t
    return wide[..., ::2]  # same values, non-unit last stride


def run_ops(x, w, b, gy, params):
    """The four ops called directly (so each is tested on its own)."""
    k = list(w.shape[2:])
    return {
        "forward": ops.conv_transpose2d(x, w, b, *params),
        "grad_input": ops.conv_transpose2d_grad_input(gy, w, *params),
        "grad_weight": ops.conv_transpose2d_grad_weight(gy, x, k, *params),
        "grad_bias": ops.conv_transpose2d_grad_bias(gy),
    }


def reference(x, w, b, gy, params, device="cpu", dtype=torch.float64):
    """PyTorch's own results (F.conv_transpose2d and its autograd) for the same four quantities."""
    s, p, op, g, d = params
    x = x.to(device, dtype).requires_grad_(True)
    w = w.to(device, dtype).requires_grad_(True)
    b = b.to(device, dtype).requires_grad_(True) if b is not None else None
    y = F.conv_transpose2d(x, w, b, s, p, op, g, d)
    gy = gy.to(device, dtype)
    gx, gw = torch.autograd.grad(y, (x, w), gy, allow_unused=True)
    return {
        "forward": y.detach(),
        "grad_input": torch.zeros_like(x) if gx is None else gx,
        "grad_weight": torch.zeros_like(w) if gw is None else gw,
        "grad_bias": gy.sum((0, 2, 3)),
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_cpu_and_pytorch(name, layout, dtype):
    x, w, b, gy, params = make_inputs(CONFIGS[name])
    want = reference(x, w, b, gy, params)
    cpu = run_ops(*(to_layout(t, layout, "cpu", dtype) if t is not None else None for t in (x, w, b, gy)), params)
    got = run_ops(*(to_layout(t, layout, "cuda", dtype) if t is not None else None for t in (x, w, b, gy)), params)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for op_name, value in got.items():
        assert value.device.type == "cuda" and value.dtype == dtype, op_name
        assert value.shape == want[op_name].shape, op_name
        assert value.stride() == cpu[op_name].stride(), f"{op_name}: layout differs from the CPU op"
        torch.testing.assert_close(value.cpu().double(), want[op_name], **tol, msg=lambda m: f"{op_name}: {m}")
        torch.testing.assert_close(value.cpu(), cpu[op_name], **tol, msg=lambda m: f"{op_name} vs CPU: {m}")


@pytest.mark.parametrize("name", ["basic", "dcgan", "fsrcnn", "depthwise", "groups_tail", "long_reduction"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_is_fair(name, dtype):
    """Our error vs an fp64 reference is at most ~3x the error of PyTorch's own half computation."""
    x, w, b, gy, params = make_inputs(CONFIGS[name])
    # Both sides start from the same rounded inputs, so only the computation's error is compared.
    x, w, gy = x.to(dtype).double(), w.to(dtype).double(), gy.to(dtype).double()
    b = b.to(dtype).double() if b is not None else None
    exact = reference(x, w, b, gy, params)
    theirs = reference(x, w, b, gy, params, device="cuda", dtype=dtype)
    ours = run_ops(*(t.to("cuda", dtype) if t is not None else None for t in (x, w, b, gy)), params)
    eps = torch.finfo(dtype).eps
    for op_name, value in ours.items():
        assert value.dtype == dtype
        scale = exact[op_name].abs().max().item() if exact[op_name].numel() else 0.0
        err_ours = (value.cpu().double() - exact[op_name]).abs().max().item() if value.numel() else 0.0
        err_theirs = (theirs[op_name].cpu().double() - exact[op_name]).abs().max().item() if value.numel() else 0.0
        assert err_ours <= 3 * err_theirs + eps * scale, (op_name, err_ours, err_theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_deterministic(dtype):
    """Ten repeated runs of every op are bitwise equal (no atomics; fixed reduction order)."""
    cfg = (8, 32, 16, 1, 24, 24, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), True)
    x, w, b, gy, params = make_inputs(cfg)
    args = [t.to("cuda", dtype) for t in (x, w, b, gy)]
    first = run_ops(*args, params)
    for _ in range(9):
        again = run_ops(*args, params)
        for op_name in first:
            assert torch.equal(again[op_name], first[op_name]), op_name


def test_autograd_and_gradcheck():
    x, w, b, gy, params = make_inputs(CONFIGS["groups_tail"])
    s, p, op, g, d = params
    args = [t.cuda().requires_grad_(True) for t in (x, w)]
    fn = lambda x_, w_: deconv_ext.conv_transpose2d(x_, w_, None, s, p, op, g, d)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_empty_batch_gives_zero_grads():
    x, w, b, gy, params = make_inputs(CONFIGS["batch0"])
    got = run_ops(x.cuda(), w.cuda(), b.cuda(), gy.cuda(), params)
    assert got["forward"].shape[0] == 0 and got["grad_input"].shape[0] == 0
    assert torch.equal(got["grad_weight"], torch.zeros_like(w).cuda())
    assert torch.equal(got["grad_bias"], torch.zeros_like(b).cuda())


def test_mixed_devices_raise():
    x, w, b, gy, params = make_inputs(CONFIGS["basic"])
    xc, wc, bc, gyc = (t.cuda() for t in (x, w, b, gy))
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
    x, w, b, gy, params = make_inputs(CONFIGS["basic"])
    with pytest.raises(RuntimeError, match="same device"):
        ops.conv_transpose2d(x.to("cuda:0"), w.to("cuda:1"), None, *params)
    got = run_ops(*(t.to("cuda:1") for t in (x, w, b, gy)), params)
    want = reference(x, w, b, gy, params)
    for op_name, value in got.items():
        assert value.device == torch.device("cuda:1")
        torch.testing.assert_close(value.cpu(), want[op_name])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_matches_pytorch_dtype(dtype):
    x, w, b, gy, params = make_inputs(CONFIGS["dcgan"])
    s, p, op, g, d = params
    x, w, b = (t.float().cuda() for t in (x, w, b))
    with torch.autocast("cuda", dtype=dtype):
        ours = deconv_ext.conv_transpose2d(x, w, b, s, p, op, g, d)
        theirs = F.conv_transpose2d(x, w, b, s, p, op, g, d)
    assert ours.dtype == theirs.dtype == dtype
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=5e-2, atol=5e-2)


def test_runs_on_current_stream():
    x, w, b, gy, params = make_inputs(CONFIGS["dcgan"])
    xc, wc, bc = (t.cuda() for t in (x, w, b))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = ops.conv_transpose2d(xc, wc, bc, *params)
    stream.synchronize()
    torch.testing.assert_close(y.cpu(), reference(x, w, b, gy, params)["forward"])


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
