"""ConvTranspose2d: nn.ConvTranspose2d computed by deconv_ext; convert(): swap it into a model."""
import torch
from torch import nn

from .functional import conv_transpose2d

__all__ = ["ConvTranspose2d", "convert"]


class ConvTranspose2d(nn.ConvTranspose2d):
    """Drop-in ``nn.ConvTranspose2d``: same constructor, parameters, initialisation and state_dict.

    Only ``forward`` changes: it runs ``deconv_ext.conv_transpose2d``.
    """

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        num_spatial_dims = 2
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              num_spatial_dims, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                self.groups, self.dilation)


def _swap(module):
    """A deconv_ext.ConvTranspose2d holding the very same parameters, buffers, hooks and flags."""
    new = ConvTranspose2d.__new__(ConvTranspose2d)
    new.__dict__.update(module.__dict__)
    for attr in ("_parameters", "_buffers", "_modules"):
        new.__dict__[attr] = dict(module.__dict__[attr])
    return new


def convert(model: nn.Module) -> nn.Module:
    """Replace every ``nn.ConvTranspose2d`` in ``model`` (nested too) by ``deconv_ext.ConvTranspose2d``.

    The new layers share the original Parameter objects, so optimisers and tied weights keep
    working. Subclasses of nn.ConvTranspose2d other than the plain class are left alone (their
    forward may do more). Returns the model (a new object only when ``model`` itself is replaced).
    """
    if type(model) is nn.ConvTranspose2d:
        return _swap(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.ConvTranspose2d:
            setattr(model, name, _swap(child))
        else:
            convert(child)
    return model
