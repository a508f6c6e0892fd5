"""FSRCNN super-resolution built on deconv_ext.ConvTranspose2d.

    model = deconv_ext.sr.pretrained(2)              # shipped weights (see TRAINING.md)
    big = deconv_ext.sr.upscale(pil_image, 2)        # PIL in, PIL out, exactly 2x the size

Images are processed in BT.601 YCbCr (MATLAB rgb2ycbcr convention, Y in [16, 235] / 255): Y goes through
the network, Cb and Cr through bicubic. Command line: `deconv-ext sr train|eval|upscale`.
"""
from .infer import load_checkpoint, load_model, pretrained, upscale
from .model import FSRCNN, PRESETS

__all__ = ["FSRCNN", "PRESETS", "pretrained", "upscale", "load_model", "load_checkpoint"]
