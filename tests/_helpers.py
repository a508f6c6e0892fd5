"""Test helpers on top of deconv_ext.testing (the one case type and the one comparison with PyTorch)."""
import torch

import deconv_ext
from deconv_ext.testing import Reference


def make_case(n, cin, cout_g, h, w, k, groups=1, bias=True, dtype=torch.float64, device="cpu"):
    """Input, weight, bias for a transposed convolution; k is an int or (kH, kW); cin and cout_g per group."""
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


def check_against_torch(x, w, b, **params):
    """deconv_ext.conv_transpose2d through autograd equals F.conv_transpose2d: output (shape and dtype as F
    gives them) and every gradient, within the tolerance rule of deconv_ext.testing.Reference."""
    ref_out = torch.nn.functional.conv_transpose2d(x, w, b, **params)
    out, grads, gy = forward_and_grads(deconv_ext.conv_transpose2d, x, w, b, **params)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    batched = (lambda t: t.unsqueeze(0)) if x.dim() == 3 else (lambda t: t)
    ref = Reference(batched(x), w, b, batched(gy), **params)
    results = {"forward": batched(out), "grad_input": batched(grads[0]), "grad_weight": grads[1]}
    if b is not None:
        results["grad_bias"] = grads[2]
    ref.check_all(results)
    return out, ref_out
