"""conv_transpose2d(): F.conv_transpose2d's signature, normalised onto torch.ops.deconv_ext."""
import numbers

import torch

from . import _ops

__all__ = ["conv_transpose2d"]


def _is_int(value):
    # 0-d integer tensors too: under torch.jit.trace (and so the TorchScript ONNX exporter) sizes are traced as
    # tensors, so the layer's output_padding computed from output_size comes as a list of them.
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _pair(value, name):
    """An int or a pair of ints -> (int, int); anything else is a TypeError naming the argument."""
    # The common spellings first (plain ints, not bool): a call's own overhead is a few microseconds.
    if type(value) is int:
        return (value, value)
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"conv_transpose2d: expected {name} to be an int or a pair of ints, got {value!r}")


def _int(value, name):
    if type(value) is int:
        return value
    if _is_int(value):
        return int(value)
    raise TypeError(f"conv_transpose2d: expected {name} to be an int, got {value!r}")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution; same arguments, semantics and result as ``F.conv_transpose2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out / groups, kH, kW);
    bias: (C_out,) or None. stride, padding, output_padding, dilation: int or (int, int).
    """
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"conv_transpose2d: expected {name} to be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"conv_transpose2d: expected bias to be a Tensor or None, got {type(bias).__name__}")
    args = (_pair(stride, "stride"), _pair(padding, "padding"), _pair(output_padding, "output_padding"),
            _int(groups, "groups"), _pair(dilation, "dilation"))
    if input.dim() == 3:
        return _ops.ops.conv_transpose2d(input.unsqueeze(0), weight, bias, *args).squeeze(0)
    if input.dim() != 4:
        raise RuntimeError("conv_transpose2d: expected input to be a 3-D (C_in, H, W) or 4-D (N, C_in, H, W) "
                           f"tensor, got a {input.dim()}-D tensor of shape {tuple(input.shape)}")
    return _ops.ops.conv_transpose2d(input, weight, bias, *args)
