"""Forward and all gradients against F.conv_transpose2d over shapes, parameters, dtypes and layouts."""
import random

import pytest
import torch
import torch.nn.functional as F

import deconv_ext
from _helpers import check_against_torch, make_case
from deconv_ext.testing import GRID

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_torch(case, bias, dtype, device):
    """Through autograd, as users call it: output and the three gradients (deconv_ext.testing.GRID)."""
    x, w, b, _ = case.replace(bias=bias).tensors(dtype, device=device, seed=0)
    check_against_torch(x, w, b, **case.params)


@pytest.mark.parametrize("layout", ["channels_last_input", "channels_last_weight", "channels_last_both",
                                    "sliced", "permuted", "expanded_batch"])
def test_layouts(layout, device):
    x, w, b = make_case(3, 4, 3, 6, 7, 3, dtype=torch.float64, device=device)
    if layout in ("channels_last_input", "channels_last_both"):
        x = x.contiguous(memory_format=torch.channels_last)
    if layout in ("channels_last_weight", "channels_last_both"):
        w = w.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        x = torch.randn(3, 8, 12, 14, dtype=torch.float64, device=device)[:, ::2, 1::2, ::2]
        w = torch.randn(4, 6, 3, 3, dtype=torch.float64, device=device)[:, 1::2]
    if layout == "permuted":
        x = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    if layout == "expanded_batch":
        x = x[:1].expand(3, -1, -1, -1)
    assert not x.is_contiguous() or not w.is_contiguous() or layout == "expanded_batch"
    out, ref = check_against_torch(x, w, b, stride=2, padding=1, output_padding=1)
    if device == "cuda":
        # PyTorch's CUDA float64 path (no cuDNN) returns contiguous results whatever the inputs; ours follows
        # the cuDNN/CPU rule for every dtype, since the meta kernel (which must agree) cannot see the device.
        x, w = x.float(), w.float()
        out, ref = deconv_ext.conv_transpose2d(x, w, stride=2), F.conv_transpose2d(x, w, stride=2)
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert out.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt), fmt


def test_unbatched(device):
    x, w, b = make_case(1, 3, 2, 5, 4, 3, dtype=torch.float64, device=device)
    out, ref = check_against_torch(x[0], w, b, stride=2, padding=1)
    assert out.shape == ref.shape and out.dim() == 3


@pytest.mark.parametrize("layout", ["channels_last_input", "channels_last_weight"])
def test_batch_zero_layout_is_pytorchs(layout):
    # PyTorch's forward returns NCHW for an empty batch whatever the operands' layouts (checked on the CPU).
    # (Its empty grad_input takes the input's layout, which our grad_input op cannot see: not compared.)
    x, w, b = make_case(0, 3, 2, 5, 4, 3, dtype=torch.float32, device="cpu")
    if layout == "channels_last_input":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        w = w.contiguous(memory_format=torch.channels_last)
    ours, theirs = deconv_ext.conv_transpose2d(x, w, b, stride=2), F.conv_transpose2d(x, w, b, stride=2)
    assert ours.stride() == theirs.stride()


def test_batch_zero(device):
    x, w, b = make_case(0, 3, 2, 5, 4, 3, dtype=torch.float64, device=device)
    x.requires_grad_(True)
    w.requires_grad_(True)
    out = deconv_ext.conv_transpose2d(x, w, b, stride=2)
    assert out.shape == F.conv_transpose2d(x, w, b, stride=2).shape
    out.sum().backward()
    assert x.grad.shape == x.shape
    torch.testing.assert_close(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_accumulate_in_float(dtype, device):
    """Low precision: our error vs a float64 reference is at most ~2x PyTorch's own error."""
    x, w, b = make_case(2, 16, 3, 9, 9, 5, dtype=torch.float64, device=device)
    params = dict(stride=2, padding=2, output_padding=1)
    exact = F.conv_transpose2d(x, w, b, **params)
    ours = deconv_ext.conv_transpose2d(x.to(dtype), w.to(dtype), b.to(dtype), **params)
    theirs = F.conv_transpose2d(x.to(dtype), w.to(dtype), b.to(dtype), **params)
    assert ours.dtype == dtype
    err_ours = (ours.double() - exact).abs().max().item()
    err_theirs = (theirs.double() - exact).abs().max().item()
    assert err_ours <= 2 * err_theirs + 1e-3 * exact.abs().max().item()
    # gradients run too and stay close to the float64 ones
    xs, ws = x.to(dtype).requires_grad_(True), w.to(dtype).requires_grad_(True)
    deconv_ext.conv_transpose2d(xs, ws, None, **params).sum().backward()
    xd, wd = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    F.conv_transpose2d(xd, wd, None, **params).sum().backward()
    for g, r in ((xs.grad, xd.grad), (ws.grad, wd.grad)):
        assert (g.double() - r).abs().max() <= 3e-2 * r.abs().max()


def _random_config(rng):
    s = (rng.randint(1, 4), rng.randint(1, 4))
    d = (rng.randint(1, 3), rng.randint(1, 3))
    k = (rng.randint(1, 5), rng.randint(1, 5))
    p = (rng.randint(0, 4), rng.randint(0, 4))
    op = tuple(rng.randint(0, max(si, di) - 1) for si, di in zip(s, d))
    groups = rng.choice([1, 1, 2, 3])
    shape = (rng.randint(1, 3), rng.randint(1, 3) * groups, rng.randint(1, 7), rng.randint(1, 7))
    return shape, k, dict(stride=s, padding=p, output_padding=op, dilation=d, groups=groups), rng.random() < 0.7


def test_random_configurations(device):
    """Seeded property test: any configuration F accepts gives the same output and gradients."""
    rng = random.Random(1234)
    checked = 0
    while checked < 150:
        (n, cin, h, w_), k, params, bias = _random_config(rng)
        g = params["groups"]
        x, w, b = make_case(n, cin // g, rng.randint(1, 3), h, w_, k, groups=g, bias=bias, device=device)
        try:
            F.conv_transpose2d(x, w, b, **params)
        except RuntimeError:
            with pytest.raises(RuntimeError):  # whatever F rejects, we reject as well
                deconv_ext.conv_transpose2d(x, w, b, **params)
            continue
        check_against_torch(x, w, b, **params)
        checked += 1
