"""gradcheck / gradgradcheck in float64, and only the requested gradients are computed."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import deconv_ext
from _helpers import make_case

CASES = [
    (2, 2, 3, 4, 3, 3, dict(stride=2, padding=1, output_padding=1)),
    (1, 2, 2, 3, 4, (2, 3), dict(stride=(3, 1), dilation=(1, 2), padding=(0, 1))),
    (2, 1, 2, 3, 3, 3, dict(groups=2, stride=2, dilation=2, output_padding=1)),
    (1, 2, 1, 2, 2, 3, dict(stride=4)),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c[-1]))
def test_gradcheck_and_gradgradcheck(case, bias, device):
    n, cin, cout, h, w, k, params = case
    x, wt, b = make_case(n, cin, cout, h, w, k, groups=params.get("groups", 1), bias=bias, device=device)
    inputs = tuple(t.requires_grad_(True) for t in (x, wt, b) if t is not None)

    def fn(*args):
        return deconv_ext.conv_transpose2d(args[0], args[1], args[2] if bias else None, **params)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_unbatched_gradcheck(device):
    x, w, b = make_case(1, 2, 2, 3, 3, 3, device=device)
    args = (x[0].requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda *a: deconv_ext.conv_transpose2d(*a, stride=2), args)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []  # (op name, args)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func.overloadpacket), args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True),
                                   (True, True, True)])
def test_only_requested_gradients_are_computed(needs, device):
    """A backward is one call of the fused op, its output mask the gradients asked for (which alone come back)."""
    x, w, b = make_case(2, 3, 2, 4, 4, 3, device=device)
    for t, need in zip((x, w, b), needs):
        t.requires_grad_(need)
    y = deconv_ext.conv_transpose2d(x, w, b, stride=2)
    with _OpLog() as log:
        y.sum().backward()
    calls = [(op, args) for op, args in log.calls if "deconv_ext" in op]
    assert [op.split(".")[-1] for op, _ in calls] == ["conv_transpose2d_backward"]
    assert list(calls[0][1][-1]) == list(needs)
    for t, need in zip((x, w, b), needs):
        assert (t.grad is not None) == need


def test_double_backward_takes_the_single_ops(device):
    """With create_graph the backward calls the single ops (each differentiable), not the fused one."""
    x, w, b = make_case(2, 3, 2, 4, 4, 3, device=device)
    for t in (x, w, b):
        t.requires_grad_(True)
    y = deconv_ext.conv_transpose2d(x, w, b, stride=2)
    with _OpLog() as log:
        gx, gw, gb = torch.autograd.grad(y.square().sum(), (x, w, b), create_graph=True)
    kinds = {op.split(".")[-1] for op, _ in log.calls if "deconv_ext" in op}
    assert kinds == {"conv_transpose2d_grad_input", "conv_transpose2d_grad_weight", "conv_transpose2d_grad_bias"}
    assert gx.requires_grad and gw.requires_grad and gb.requires_grad


def test_saves_only_what_backward_needs(device):
    """With only weight requiring grad, the weight itself is not saved (only the input is)."""
    x, w, b = make_case(1, 2, 2, 3, 3, 3, device=device)
    w.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        deconv_ext.conv_transpose2d(x, w, b).sum()
    assert len(saved) == 1 and saved[0] is x
