"""ConvTranspose1d / ConvTranspose2d: the nn layers computed by deconv_ext; convert(): swap them into a model."""
import warnings
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .functional import conv_transpose2d

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "convert"]


def _op(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
        output_padding: List[int], groups: int, dilation: List[int]) -> Tensor:
    """The layers' call of the op. Eager: functional.conv_transpose2d. TorchScript cannot compile that
    function's argument normalisation (the layer's attributes need none), so a scripted layer calls the same
    dispatcher op directly: torch.jit.script keeps it as a deconv_ext::conv_transpose2d node."""
    if not torch.jit.is_scripting():
        return conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)
    if input.dim() == 3:
        return torch.ops.deconv_ext.conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding,
                                                     output_padding, groups, dilation).squeeze(0)
    return torch.ops.deconv_ext.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                                                 dilation)


class ConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in ``nn.ConvTranspose2d``: same constructor, parameters, initialisation and state_dict.

    Only ``forward`` changes: it runs ``deconv_ext.conv_transpose2d``. Scripts with ``torch.jit.script``.
    """

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        num_spatial_dims = 2
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              num_spatial_dims, self.dilation)
        return _op(input, self.weight, self.bias, [self.stride[0], self.stride[1]],
                   [self.padding[0], self.padding[1]], output_padding, self.groups,
                   [self.dilation[0], self.dilation[1]])


class ConvTranspose1d(nn.ConvTranspose1d):
    """Drop-in ``nn.ConvTranspose1d``: same constructor, parameters, initialisation and state_dict.

    Only ``forward`` changes: the 2-D op on a height-1 image, (N, C, L) -> (N, C, 1, L), with the kernel
    (C_in, C_out / groups, 1, k) and the 1-D stride, padding, output_padding and dilation on the width axis.
    """

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose1d")
        if input.dim() not in (2, 3):
            raise RuntimeError("ConvTranspose1d: expected input to be a 2-D (C_in, L) or 3-D (N, C_in, L) tensor, "
                               f"got a {input.dim()}-D tensor of shape {list(input.shape)}")
        num_spatial_dims = 1
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              num_spatial_dims, self.dilation)
        out = _op(input.unsqueeze(-2), self.weight.unsqueeze(2), self.bias, [1, self.stride[0]],
                  [0, self.padding[0]], [0, output_padding[0]], self.groups, [1, self.dilation[0]])
        return out.squeeze(-2)


# ---- convert() ----------------------------------------------------------------------------------------------
_SWAPS = {nn.ConvTranspose2d: ConvTranspose2d, nn.ConvTranspose1d: ConvTranspose1d}


def _parametrized_class(ours, generated):
    """The class torch.nn.utils.parametrize would generate for ``ours``: a subclass holding the same members
    (a property per parametrized tensor, __getstate__, __deepcopy__) as ``generated``."""
    members = {k: v for k, v in vars(generated).items() if k not in ("__dict__", "__weakref__", "__module__",
                                                                      "__qualname__", "__doc__")}
    return type(f"Parametrized{ours.__name__}", (ours,), members)


def _plan(module):
    """(class to swap ``module`` to, None) or (None, why it stays) for a transposed convolution; None else."""
    cls = type(module)
    if cls in _SWAPS:
        return _SWAPS[cls], None
    if parametrize.is_parametrized(module) and cls.__bases__[0] in _SWAPS and len(cls.__bases__) == 1 \
            and cls.__name__ == f"Parametrized{cls.__bases__[0].__name__}":
        # torch.nn.utils.parametrize's generated class around a plain layer: same forward as the plain layer
        return _parametrized_class(_SWAPS[cls.__bases__[0]], cls), None
    if isinstance(module, (ConvTranspose1d, ConvTranspose2d)):
        return None, "already deconv_ext"
    if isinstance(module, tuple(_SWAPS)):
        base = next(b for b in _SWAPS if isinstance(module, b))
        return None, f"a subclass of torch.nn.{base.__name__}: its forward may do more, so it is not replaced"
    if isinstance(module, nn.ConvTranspose3d):
        return None, "3-D: deconv_ext has no 3-D op"
    return None


def _swap(module, cls):
    """A ``cls`` holding the very same parameters, buffers, submodules (parametrizations), hooks and flags."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    for attr in ("_parameters", "_buffers", "_modules"):
        new.__dict__[attr] = dict(module.__dict__[attr])
    return new


def convert(model: nn.Module, verbose: bool = False) -> nn.Module:
    """Replace every ``nn.ConvTranspose2d`` and ``nn.ConvTranspose1d`` in ``model`` (nested too) by
    ``deconv_ext.ConvTranspose2d`` / ``deconv_ext.ConvTranspose1d``.

    The new layers share the original Parameter objects, so optimisers and tied weights keep working. Layers
    wrapped by ``torch.nn.utils.parametrizations`` (spectral_norm, weight_norm, ...) are swapped too, keeping
    their parametrizations and their state. Other subclasses are left alone, with a warning (their forward may
    do more). ``verbose=True`` prints what was swapped and what was left alone, and why.
    Returns the model (a new object only when ``model`` itself is replaced).
    """
    report, unswappable = [], []

    def visit(module, name):
        plan = _plan(module)
        if plan is None:
            for child_name, child in list(module.named_children()):
                new = visit(child, f"{name}.{child_name}" if name else child_name)
                if new is not child:
                    setattr(module, child_name, new)
            return module
        cls, why = plan
        label = name or "(model)"
        if cls is None:
            report.append(f"left alone: {label} ({type(module).__name__}): {why}")
            if why.startswith("a subclass"):
                unswappable.append(f"{label} ({type(module).__qualname__}) is {why}")
            return module
        report.append(f"swapped:    {label} ({type(module).__name__} -> deconv_ext.{cls.__name__})")
        return _swap(module, cls)

    model = visit(model, "")
    for line in unswappable:
        warnings.warn(f"deconv_ext.convert: {line}", stacklevel=2)
    if verbose:
        print("deconv_ext.convert: " + (f"{len(report)} transposed convolution(s)" if report
                                        else "no transposed convolution found"))
        for line in report:
            print("  " + line)
    return model
