"""ONNX: a model holding deconv_ext layers exports, through both exporters, to the standard ConvTranspose node
with every attribute, and runs in onnxruntime matching PyTorch."""
import io
import warnings

import pytest
import torch
from torch import nn

import deconv_ext

onnx = pytest.importorskip("onnx", reason="onnx not installed (a test dependency: pip install -r requirements.txt)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (a test dependency: "
                                                "pip install -r requirements.txt)")

CONFIGS = [
    dict(in_channels=3, out_channels=2, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
         groups=2, dilation=(1, 2)),
    dict(in_channels=2, out_channels=4, kernel_size=4, stride=3, padding=2, output_padding=2, bias=False,
         dilation=2),
]
IDS = ["plain", "all-attributes", "no-bias"]


class _Net(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.up = deconv_ext.ConvTranspose2d(**cfg)

    def forward(self, x):
        return torch.relu(self.up(x))


def _export(model, x, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript-based exporter
        if dynamo:
            pytest.importorskip("onnxscript", reason="onnxscript not installed (the dynamo exporter needs it)")
            return torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False)
        return onnx.load_from_string(f.getvalue())


def _attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _check_node(model, cfg):
    nodes = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert len(nodes) == 1 and nodes[0].domain in ("", "ai.onnx"), [n.op_type for n in model.graph.node]
    assert not [n for n in model.graph.node if "deconv" in n.op_type or n.domain not in ("", "ai.onnx")]
    attrs = _attributes(nodes[0])
    padding = _pair(cfg.get("padding", 0))
    expected = dict(strides=_pair(cfg.get("stride", 1)), pads=padding + padding,
                    output_padding=_pair(cfg.get("output_padding", 0)), dilations=_pair(cfg.get("dilation", 1)),
                    group=cfg.get("groups", 1))
    assert {k: attrs.get(k) for k in expected} == expected
    if "kernel_shape" in attrs:
        assert attrs["kernel_shape"] == _pair(cfg["kernel_size"])
    assert len(nodes[0].input) == (3 if cfg.get("bias", True) else 2)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_export_is_conv_transpose_and_runs_in_onnxruntime(cfg, dynamo):
    model = _Net(cfg).eval()
    x = torch.randn(2, cfg["in_channels"], 5, 4)
    onnx_model = _export(model, x, dynamo)
    onnx.checker.check_model(onnx_model)
    _check_node(onnx_model, cfg)
    with torch.no_grad():
        torch.testing.assert_close(_run(onnx_model, x), model(x), rtol=1e-5, atol=1e-5)
        # and it equals PyTorch's own layer on the same weights
        ref = nn.ConvTranspose2d(**cfg)
        ref.load_state_dict(model.up.state_dict())
        torch.testing.assert_close(_run(onnx_model, x), torch.relu(ref(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_export_converted_model_with_output_size_and_unbatched_input(dynamo):
    cfg = CONFIGS[1]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(**cfg)

        def forward(self, x):
            return self.up(x, output_size=[10, 6])

    model = deconv_ext.convert(Net()).eval()
    assert type(model.up) is deconv_ext.ConvTranspose2d
    x = torch.randn(4, 5, 4)
    onnx_model = _export(model, x, dynamo)
    _check_node(onnx_model, dict(cfg, output_padding=(1, 0)))
    with torch.no_grad():
        torch.testing.assert_close(_run(onnx_model, x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_export_conv_transpose1d(dynamo):
    cfg = dict(in_channels=4, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2,
               dilation=2)
    model = deconv_ext.ConvTranspose1d(**cfg).eval()
    x = torch.randn(2, 4, 6)
    onnx_model = _export(model, x, dynamo)
    _check_node(onnx_model, dict(cfg, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), output_padding=(0, 1),
                                 dilation=(1, 2)))
    with torch.no_grad():
        ref = nn.ConvTranspose1d(**cfg)
        ref.load_state_dict(model.state_dict())
        torch.testing.assert_close(_run(onnx_model, x), ref(x), rtol=1e-5, atol=1e-5)


def test_export_scripted_module():
    """A TorchScript module keeps the deconv_ext::conv_transpose2d node: its ONNX symbolic translates it."""
    cfg = CONFIGS[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        model = torch.jit.script(_Net(cfg).eval())
    assert "deconv_ext::conv_transpose2d" in str(model.inlined_graph)
    x = torch.randn(2, cfg["in_channels"], 5, 4)
    onnx_model = _export(model, x, dynamo=False)
    _check_node(onnx_model, cfg)
    with torch.no_grad():
        torch.testing.assert_close(_run(onnx_model, x), model(x), rtol=1e-5, atol=1e-5)
