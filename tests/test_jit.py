"""TorchScript (torch.jit.script, torch.jit.trace) and torch.export of the deconv_ext layers: they keep
running the deconv_ext op and match PyTorch's layers."""
import io
import warnings

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import deconv_ext

TIGHT = dict(rtol=1e-9, atol=1e-9)  # float64

CONFIGS = [
    dict(in_channels=3, out_channels=2, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
         groups=2, dilation=(1, 2), bias=False),
]
CONFIGS_1D = [dict(in_channels=4, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2,
                   dilation=2)]


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _pair(cls, cfg):
    """(ours, PyTorch's) with the same weights, float64."""
    ours = cls(**cfg).double()
    ref = getattr(nn, cls.__name__)(**cfg).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        return torch.jit.script(module)


def _inputs(cfg, one_d):
    spatial = (7,) if one_d else (5, 4)
    return [torch.randn(2, cfg["in_channels"], *spatial, dtype=torch.float64),
            torch.randn(cfg["in_channels"], *spatial, dtype=torch.float64)]  # batched, unbatched


@pytest.mark.parametrize("cls, cfg", [(deconv_ext.ConvTranspose2d, c) for c in CONFIGS]
                         + [(deconv_ext.ConvTranspose1d, c) for c in CONFIGS_1D])
def test_script_runs_our_op_and_matches_torch(cls, cfg):
    ours, ref = _pair(cls, cfg)
    scripted = _script(ours)
    assert "deconv_ext::conv_transpose2d" in str(scripted.inlined_graph)
    assert "aten::conv_transpose" not in str(scripted.inlined_graph)
    for x in _inputs(cfg, cls is deconv_ext.ConvTranspose1d):
        with _OpLog() as log:
            out = scripted(x)
        assert "deconv_ext.conv_transpose2d" in log.ops
        torch.testing.assert_close(out, ref(x), **TIGHT)
    # gradients through the scripted module
    x = _inputs(cfg, cls is deconv_ext.ConvTranspose1d)[0].requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    scripted(x).square().sum().backward()
    ref(x_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TIGHT)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TIGHT)


def test_script_output_size_save_and_load():
    ours, ref = _pair(deconv_ext.ConvTranspose2d, CONFIGS[1])
    scripted = _script(ours)
    x = _inputs(CONFIGS[1], False)[0]
    torch.testing.assert_close(scripted(x, output_size=[10, 6]), ref(x, output_size=[10, 6]), **TIGHT)
    with pytest.raises(torch.jit.Error, match="output size"):
        scripted(x, output_size=[20, 6])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    assert "deconv_ext::conv_transpose2d" in str(loaded.inlined_graph)
    torch.testing.assert_close(loaded(x), ref(x), **TIGHT)


def test_script_a_converted_model():
    net = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2), nn.ReLU(), nn.ConvTranspose1d(4, 2, 3)).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    expected = net[1](net[0](x))
    scripted = _script(deconv_ext.convert(net))
    torch.testing.assert_close(scripted[1](scripted[0](x)), expected, **TIGHT)


def test_trace_runs_our_op():
    ours, ref = _pair(deconv_ext.ConvTranspose2d, CONFIGS[1])
    x = _inputs(CONFIGS[1], False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(ours, (x,))
    assert "deconv_ext::conv_transpose2d" in str(traced.inlined_graph)
    torch.testing.assert_close(traced(x), ref(x), **TIGHT)


@pytest.mark.parametrize("cls, cfg", [(deconv_ext.ConvTranspose2d, CONFIGS[1]),
                                      (deconv_ext.ConvTranspose1d, CONFIGS_1D[0])])
def test_torch_export_keeps_our_op(cls, cfg):
    ours, ref = _pair(cls, cfg)
    x = _inputs(cfg, cls is deconv_ext.ConvTranspose1d)[0]
    for program in (torch.export.export(ours, (x,)), torch.export.export(ours, (x,)).run_decompositions()):
        targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
        assert torch.ops.deconv_ext.conv_transpose2d.default in targets, targets
        torch.testing.assert_close(program.module()(x), ref(x), **TIGHT)
