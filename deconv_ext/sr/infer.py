"""Inference: the shipped weights and upscale() on PIL images, tiled for large inputs."""
import os

import numpy as np
import torch
from PIL import Image

from . import data as srdata
from .model import FSRCNN, PRESETS

__all__ = ["pretrained", "load_model", "upscale", "upscale_y", "WEIGHTS_DIR"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# LR pixels of context each tile borrows from its neighbours. The receptive field of an output pixel
# reaches 6 LR pixels through the convolutions (5x5 then four 3x3) plus ceil(4 / scale) + 1 through the
# 9x9 deconvolution, so 12 makes tiled and untiled results equal (up to float rounding).
TILE_MARGIN = 12


def _device(device):
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(path, scale, preset="fsrcnn", device=None):
    """FSRCNN from a plain state_dict or a training checkpoint (its "model" entry), in eval mode."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = FSRCNN(scale, *PRESETS[preset])
    model.load_state_dict(state)
    return model.to(_device(device)).eval()


def pretrained(scale, device=None):
    """FSRCNN (56, 12, 4) with the shipped weights for scale 2, 3 or 4, in eval mode."""
    path = os.path.join(WEIGHTS_DIR, f"fsrcnn_x{scale}.pt")
    if not os.path.exists(path):
        raise ValueError(f"no shipped FSRCNN weights for scale {scale!r} (have: 2, 3, 4)")
    return load_model(path, scale, "fsrcnn", device)


@torch.no_grad()
def upscale_y(model, y, tile=512):
    """Y plane (H, W) float / 255 -> (scale*H, scale*W), clipped to [0, 1]. Inputs larger than `tile` LR
    pixels on a side are processed in tile x tile blocks with TILE_MARGIN pixels of overlap."""
    s = model.scale
    device = next(model.parameters()).device
    h, w = y.shape
    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None].to(device)
    if not tile or (h <= tile and w <= tile):
        return model(x).float().clamp_(0, 1)[0, 0].cpu().numpy()
    out = np.empty((h * s, w * s), np.float32)
    for i0 in range(0, h, tile):
        for j0 in range(0, w, tile):
            i1, j1 = min(i0 + tile, h), min(j0 + tile, w)
            a0, b0 = max(i0 - TILE_MARGIN, 0), max(j0 - TILE_MARGIN, 0)
            a1, b1 = min(i1 + TILE_MARGIN, h), min(j1 + TILE_MARGIN, w)
            part = model(x[..., a0:a1, b0:b1]).float().clamp_(0, 1)[0, 0].cpu().numpy()
            out[i0 * s:i1 * s, j0 * s:j1 * s] = part[(i0 - a0) * s:(i1 - a0) * s, (j0 - b0) * s:(j1 - b0) * s]
    return out


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def upscale(image, scale, model=None, device=None, tile=512):
    """PIL image -> PIL image of exactly scale x its size: Y by FSRCNN, Cb and Cr by bicubic.
    Grayscale images come back grayscale ("L"); an alpha channel is upscaled by bicubic and kept
    ("RGBA" / "LA"); every other mode comes back "RGB". model defaults to pretrained(scale)."""
    if model is None:
        model = pretrained(scale, device)
    elif device is not None:
        model = model.to(_device(device))
    if model.scale != scale:
        raise ValueError(f"upscale: the model is for scale {model.scale}, got scale={scale}")
    model.eval()
    ycc = srdata.rgb_to_ycbcr(np.asarray(srdata.load_image(image)))
    y = upscale_y(model, ycc[..., 0], tile)
    cb, cr = (srdata.bicubic_upscale(ycc[..., c], scale) for c in (1, 2))
    out = Image.fromarray(srdata.ycbcr_to_rgb(np.stack([y, cb, cr], axis=-1)))
    if isinstance(image, Image.Image):
        if image.mode in GRAY_MODES:
            out = out.convert("L")
        if "A" in image.getbands():
            out.putalpha(image.getchannel("A").resize(out.size, Image.BICUBIC))
    return out
