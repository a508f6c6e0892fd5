"""Bad input raises a Python exception naming the argument and what was expected."""
import pytest
import torch

import deconv_ext

ops = torch.ops.deconv_ext


def _args(device, dtype=torch.float32):
    x = torch.randn(2, 4, 5, 5, device=device, dtype=dtype)
    w = torch.randn(4, 3, 3, 3, device=device, dtype=dtype)
    b = torch.randn(3, device=device, dtype=dtype)
    return x, w, b


CASES = [
    # (description, mutate(x, w, b) -> (args, kwargs), exception, match)
    ("input rank", lambda x, w, b: ((x[0, 0], w, b), {}), RuntimeError, r"input.*3-D .*4-D"),
    ("input 5-D", lambda x, w, b: ((x[None], w, b), {}), RuntimeError, r"input.*5-D"),
    ("weight rank", lambda x, w, b: ((x, w[0], b), {}), RuntimeError, r"weight.*4-D"),
    ("channel mismatch", lambda x, w, b: ((x[:, :3], w, b), {}), RuntimeError, r"input to have 4 channels.*got 3"),
    ("groups divide", lambda x, w, b: ((x, w, None), {"groups": 3}), RuntimeError, r"divisible by groups"),
    ("groups zero", lambda x, w, b: ((x, w, None), {"groups": 0}), RuntimeError, r"groups to be positive"),
    ("bias size", lambda x, w, b: ((x, w, b[:2]), {}), RuntimeError, r"bias to have 3 elements.*got 2"),
    ("bias rank", lambda x, w, b: ((x, w, b[None]), {}), RuntimeError, r"bias.*1-D"),
    ("negative padding", lambda x, w, b: ((x, w, b), {"padding": -1}), RuntimeError, r"padding.*non-negative"),
    ("zero stride", lambda x, w, b: ((x, w, b), {"stride": 0}), RuntimeError, r"stride.*positive"),
    ("negative stride", lambda x, w, b: ((x, w, b), {"stride": (1, -2)}), RuntimeError, r"stride.*positive"),
    ("zero dilation", lambda x, w, b: ((x, w, b), {"dilation": 0}), RuntimeError, r"dilation.*positive"),
    ("output_padding too large", lambda x, w, b: ((x, w, b), {"stride": 2, "output_padding": 2}),
     RuntimeError, r"output_padding.*smaller than max\(stride, dilation\)"),
    ("negative output_padding", lambda x, w, b: ((x, w, b), {"output_padding": -1}), RuntimeError,
     r"output_padding.*non-negative"),
    ("empty output", lambda x, w, b: ((x, w, b), {"padding": 4}), RuntimeError, r"positive output size"),
    ("empty input plane", lambda x, w, b: ((x[:, :, :0], w, b), {}), RuntimeError, r"input to have non-zero spatial"),
    ("empty weight", lambda x, w, b: ((x[:, :0], w[:0], b), {}), RuntimeError, r"weight to have non-zero sizes"),
    ("padding string", lambda x, w, b: ((x, w, b), {"padding": "same"}), TypeError,
     r"padding to be an int or a pair of ints"),
    ("stride triple", lambda x, w, b: ((x, w, b), {"stride": (1, 2, 3)}), TypeError,
     r"stride to be an int or a pair"),
    ("float dilation", lambda x, w, b: ((x, w, b), {"dilation": 1.5}), TypeError, r"dilation"),
    ("groups float", lambda x, w, b: ((x, w, b), {"groups": 1.0}), TypeError, r"groups to be an int"),
    ("weight dtype", lambda x, w, b: ((x, w.double(), b), {}), RuntimeError,
     r"weight to have the same dtype as input"),
    ("bias dtype", lambda x, w, b: ((x, w, b.double()), {}), RuntimeError, r"bias to have the same dtype as input"),
    ("integer dtype", lambda x, w, b: ((x.long(), w.long(), None), {}), RuntimeError,
     r"input to be a floating-point tensor"),
    ("complex dtype", lambda x, w, b: ((x.cfloat(), w.cfloat(), None), {}), RuntimeError,
     r"input to be a floating-point tensor"),
    ("input not tensor", lambda x, w, b: ((x.tolist(), w, b), {}), TypeError, r"input to be a Tensor"),
    ("bias not tensor", lambda x, w, b: ((x, w, 1.0), {}), TypeError, r"bias to be a Tensor or None"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments(case, device):
    _, mutate, exc, match = case
    args, kwargs = mutate(*_args(device))
    with pytest.raises(exc, match=match):
        deconv_ext.conv_transpose2d(*args, **kwargs)


def test_bad_arguments_direct_op_calls():
    """The checks live below the dispatcher: direct torch.ops calls are checked too, incl. backward ops."""
    x, w, b = _args("cpu")
    with pytest.raises(RuntimeError, match=r"input.*4-D"):
        ops.conv_transpose2d(x[0], w, b, [1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"stride to have 2 elements"):
        ops.conv_transpose2d(x, w, b, [1, 1, 1], [0, 0], [0, 0], 1, [1, 1])
    gy = torch.randn(2, 3, 7, 7)
    with pytest.raises(RuntimeError, match=r"grad_output to have 6 channels"):
        ops.conv_transpose2d_grad_input(gy, w.repeat(1, 2, 1, 1), [1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"not an output size"):
        ops.conv_transpose2d_grad_input(torch.randn(2, 3, 8, 7), w, [2, 2], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"grad_output to have spatial size 7"):
        ops.conv_transpose2d_grad_weight(torch.randn(2, 3, 8, 7), x, [3, 3], [1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"kernel_size.*positive"):
        ops.conv_transpose2d_grad_weight(gy, x, [0, 3], [1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"grad_output.*4-D"):
        ops.conv_transpose2d_grad_bias(gy[0])


@pytest.mark.parametrize("where", ["cpu", "meta"])
def test_bad_arguments_of_the_fused_backward(where):
    """conv_transpose2d_backward names what its output mask needs, and checks as the single ops do."""
    x, w, _ = _args(where)
    gy = torch.randn(2, 3, 7, 7, device=where)
    params = ([1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(RuntimeError, match=r"asks for grad_input, which needs weight, but weight is None"):
        ops.conv_transpose2d_backward(gy, x, None, [3, 3], *params, [True, False, False])
    with pytest.raises(RuntimeError, match=r"asks for grad_weight, which needs input, but input is None"):
        ops.conv_transpose2d_backward(gy, None, w, [3, 3], *params, [False, True, True])
    with pytest.raises(RuntimeError, match=r"kernel_size to be the weight's \(3, 3\), got \[3, 2\]"):
        ops.conv_transpose2d_backward(gy, x, w, [3, 2], *params, [True, True, False])
    with pytest.raises(RuntimeError, match=r"grad_output to have spatial size 7"):
        ops.conv_transpose2d_backward(gy[..., :6], x, w, [3, 3], *params, [False, True, False])
    with pytest.raises(RuntimeError, match=r"grad_output.*4-D"):
        ops.conv_transpose2d_backward(gy[0], None, None, [3, 3], *params, [False, False, True])
    assert ops.conv_transpose2d_backward(gy, None, None, [3, 3], *params, [False, False, False]) == (None,) * 3


def test_errors_under_meta_and_compile():
    """Meta tensors and torch.compile tracing (fake tensors) raise the same message: the meta kernels
    share the checks."""
    x, w, b = _args("meta")
    with pytest.raises(RuntimeError, match=r"bias to have 3 elements"):
        deconv_ext.conv_transpose2d(x, w, b[:1])
    torch._dynamo.reset()
    compiled = torch.compile(deconv_ext.conv_transpose2d, backend="aot_eager", fullgraph=True)
    x, w, b = _args("cpu")
    with pytest.raises(Exception, match=r"bias to have 3 elements \(out_channels = weight.size\(1\) \* groups\), got 1"):
        compiled(x, w, b[:1])
    assert compiled(x, w, b).shape == (2, 3, 7, 7)  # the same compiled function works on good input


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_device_mismatch(which):
    args = list(_args("cuda"))
    idx = ["input", "weight", "bias"].index(which)
    args[idx] = args[idx].cpu()
    with pytest.raises(RuntimeError, match=r"to be on the same device as input"):
        deconv_ext.conv_transpose2d(*args)


def test_module_rejects_other_padding_modes():
    with pytest.raises(ValueError, match="padding mode"):
        deconv_ext.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
