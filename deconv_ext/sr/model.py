"""FSRCNN (Dong, Loy & Tang, "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016).

    feature extraction  conv 5x5, 1 -> d      PReLU
    shrinking           conv 1x1, d -> s      PReLU
    mapping             m x conv 3x3, s -> s  PReLU each
    expanding           conv 1x1, s -> d      PReLU
    deconvolution       deconv_ext.ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale-1)

The deconvolution output is (H-1)*scale - 8 + 9 + scale-1 = scale*H: exactly scale x the input size.
Only the deconvolution depends on the scale, so a model trained for one scale can seed another.

Mean shift (`center`, a buffer saved with the weights): the body reads x - center and the deconvolution's
output gets + center (a fixed input/output normalisation like EDSR's MeanShift). Away from borders
it is only a reparametrisation (the first layer's and the deconvolution's biases could absorb it), but it makes
the zero padding of every layer mean "grey" instead of "black": without it, on small training patches most
output pixels sit near an artificial 0.45-high edge at the patch border, and the body's first layer carries a
large DC component (TRAINING.md, "Why the body did not train"). State dicts without the buffer (the weights
shipped before it existed) load with center = 0, i.e. exactly the old network.
"""

import torch
from torch import nn

from ..nn import ConvTranspose2d

__all__ = ["FSRCNN", "PRESETS"]

# name -> (d, s, m), as in the paper
PRESETS = {"fsrcnn": (56, 12, 4), "fsrcnn-s": (32, 5, 1)}

PRELU_INIT = 0.25  # PyTorch's and He et al.'s default PReLU slope


def _conv(c_in, c_out, k):
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.PReLU(c_out, init=PRELU_INIT)]


class FSRCNN(nn.Module):
    """FSRCNN(scale, d=56, s=12, m=4, center=0.5): one-channel (Y) LR image in [0, 1] -> scale x larger Y image."""

    def __init__(self, scale, d=56, s=12, m=4, center=0.5):
        super().__init__()
        if not (isinstance(scale, int) and scale >= 1):
            raise ValueError(f"FSRCNN: expected scale to be a positive int, got {scale!r}")
        self.scale, self.d, self.s, self.m = scale, d, s, m
        layers = _conv(1, d, 5) + _conv(d, s, 1)
        for _ in range(m):
            layers += _conv(s, s, 3)
        layers += _conv(s, d, 1)
        self.body = nn.Sequential(*layers)
        self.deconv = ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale - 1)
        self.register_buffer("center", torch.tensor(float(center)))
        self.reset_parameters()

    @classmethod
    def from_preset(cls, scale, preset="fsrcnn"):
        if preset not in PRESETS:
            raise ValueError(f"FSRCNN: unknown preset {preset!r}, expected one of {sorted(PRESETS)}")
        return cls(scale, *PRESETS[preset])

    def reset_parameters(self):
        """The paper's initialisation: He et al.'s Gaussian for PReLU nets on the convolutions
        (std = sqrt(2 / ((1 + a^2) * fan_in))), N(0, 0.001) on the deconvolution, zero biases."""
        for mod in self.body:
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=PRELU_INIT, mode="fan_in", nonlinearity="leaky_relu")
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.deconv.weight, mean=0.0, std=0.001)
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x):
        c = self.center.to(x.dtype)
        return self.deconv(self.body(x - c)) + c

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the mean shift existed were trained without it: center = 0 reproduces them
        if prefix + "center" not in state_dict and prefix + "deconv.weight" in state_dict:
            state_dict[prefix + "center"] = torch.tensor(0.0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"scale={self.scale}, d={self.d}, s={self.s}, m={self.m}, center={self.center.item():g}"


def num_parameters(model):
    return sum(p.numel() for p in model.parameters())


