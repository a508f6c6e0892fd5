"""opcheck on every op, torch.compile without graph breaks, autocast."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconv_ext
from _helpers import make_case

ops = torch.ops.deconv_ext

SAMPLES = [
    (2, 3, 2, 5, 4, 3, dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=1, dilation=(1, 2))),
    (1, 2, 3, 4, 4, 2, dict(stride=(3, 3), padding=(0, 0), output_padding=(2, 1), groups=2, dilation=(1, 1))),
    (0, 2, 2, 3, 3, 3, dict(stride=(1, 1), padding=(1, 1), output_padding=(0, 0), groups=1, dilation=(1, 1))),
]


def _params(p):
    return p["stride"], p["padding"], p["output_padding"], p["groups"], p["dilation"]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sample", SAMPLES, ids=["dilated", "grouped", "batch0"])
def test_opcheck_all_ops(sample, channels_last, device):
    n, cin, cout, h, w, k, p = sample
    x, wt, b = make_case(n, cin, cout, h, w, k, groups=p["groups"], dtype=torch.float32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    params = _params(p)
    y = ops.conv_transpose2d(x, wt, b, *params)
    gy = torch.randn_like(y)
    req = dict(requires_grad=True)
    torch.library.opcheck(ops.conv_transpose2d, (x.clone().requires_grad_(True), wt.clone().requires_grad_(True),
                                                 b.clone().requires_grad_(True), *params))
    torch.library.opcheck(ops.conv_transpose2d, (x, wt, None, *params))
    torch.library.opcheck(ops.conv_transpose2d_grad_input, (gy.clone().requires_grad_(**req),
                                                            wt.clone().requires_grad_(**req), *params))
    torch.library.opcheck(ops.conv_transpose2d_grad_weight, (gy.clone().requires_grad_(**req),
                                                             x.clone().requires_grad_(**req), wt.shape[2:], *params))
    torch.library.opcheck(ops.conv_transpose2d_grad_bias, (gy.clone().requires_grad_(**req),))
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(ops.conv_transpose2d_backward, (gy.clone().requires_grad_(**req), x.clone(),
                                                              wt.clone().requires_grad_(**req), wt.shape[2:], *params,
                                                              mask))
    torch.library.opcheck(ops.conv_transpose2d_backward, (gy, None, wt, wt.shape[2:], *params, [True, False, True]))


class _Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = deconv_ext.ConvTranspose2d(8, 2, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(torch.relu(self.conv(x)))


def _reference_forward(model, x):
    """The same model computed by PyTorch alone (F.conv_transpose2d for our layer)."""
    up = model.up
    return F.conv_transpose2d(torch.relu(model.conv(x)), up.weight, up.bias, up.stride, up.padding,
                              up.output_padding, up.groups, up.dilation)


def _compile_matches_torch(backend, device, dynamic=False):
    """Compiled (fullgraph) forward and backward in float64 equal PyTorch's own eager computation."""
    torch._dynamo.reset()
    model = _Upsampler().to(device, torch.float64)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=dynamic)
    for size in ((5, 6), (7, 4)) if dynamic else ((5, 6),):
        x = torch.randn(2, 3, *size, device=device, dtype=torch.float64, requires_grad=True)
        out = compiled(x)
        out.square().sum().backward()
        grads = [x.grad] + [p.grad for p in model.parameters()]
        x2 = x.detach().clone().requires_grad_(True)
        model.zero_grad()
        ref = _reference_forward(model, x2)
        ref.square().sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for g, r in zip(grads, [x2.grad] + [p.grad for p in model.parameters()]):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)
        model.zero_grad()


def test_compile_aot_eager_fullgraph(device):
    _compile_matches_torch("aot_eager", device)


def test_compile_dynamic_shapes(device):
    _compile_matches_torch("aot_eager", device, dynamic=True)


@pytest.mark.slow
def test_compile_inductor(device):
    _compile_matches_torch("inductor", device)


def test_autocast_cpu_matches_torch():
    x, w, b = make_case(1, 4, 2, 5, 5, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = deconv_ext.conv_transpose2d(x, w, b, stride=2)
        ref = F.conv_transpose2d(x, w, b, stride=2)
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), rtol=2e-2, atol=5e-2)
