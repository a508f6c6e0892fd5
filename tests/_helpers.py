"""Reference comparisons shared by the tests: deconv_ext against F.conv_transpose2d."""
import torch
import torch.nn.functional as F

import deconv_ext

TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
}


def make_case(n, cin, cout_g, h, w, k, groups=1, bias=True, dtype=torch.float64, device="cpu"):
    """Input, weight, bias for a transposed convolution; k is an int or (kH, kW)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(n, cin * groups, h, w, dtype=dtype, device=device)
    wt = torch.randn(cin * groups, cout_g, kh, kw, dtype=dtype, device=device)
    b = torch.randn(cout_g * groups, dtype=dtype, device=device) if bias else None
    return x, wt, b


def forward_and_grads(fn, x, w, b, gy=None, **params):
    """Output and gradients of fn(x, w, b, **params) for the tensors given (copies, so refs can share)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    args = leaves + ([None] if b is None else [])
    y = fn(*args, **params)
    if gy is None:
        gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, gy) if y.numel() > 0 else [torch.zeros_like(t) for t in leaves]
    return y, grads, gy


def check_against_torch(x, w, b, tol=None, **params):
    """deconv_ext.conv_transpose2d equals F.conv_transpose2d: output, dtype, layout and every gradient."""
    tol = tol or TOL[x.dtype]
    ref, ref_grads, gy = forward_and_grads(F.conv_transpose2d, x, w, b, **params)
    out, grads, _ = forward_and_grads(deconv_ext.conv_transpose2d, x, w, b, gy=gy, **params)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, **tol)
    for name, g, r in zip(("input", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(g, r, **tol, msg=lambda m, name=name: f"grad of {name}: {m}")
    return out, ref
