"""Inference: reading images and weights with clear errors, the shipped weights, and upscale() on PIL images
(tiled for large inputs). upscale_y is the one place a Y plane goes through the network; read_image and
load_checkpoint are the one place an image file and a weights file are read."""
import os

import numpy as np
import torch
from PIL import Image

from . import data as srdata
from .model import FSRCNN, PRESETS

__all__ = ["pretrained", "load_model", "load_checkpoint", "read_image", "upscale", "upscale_y", "WEIGHTS_DIR",
           "CheckpointError", "ImageReadError"]

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# LR pixels of context each tile borrows from its neighbours. The receptive field of an output pixel
# reaches 6 LR pixels through the convolutions (5x5 then four 3x3) plus ceil(4 / scale) + 1 through the
# 9x9 deconvolution, so 12 makes tiled and untiled results equal (up to float rounding).
TILE_MARGIN = 12


class _FileError(ValueError):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path


class CheckpointError(_FileError):
    """A weights file that cannot be used here; the message names the file, what it holds and what to pass."""


class ImageReadError(_FileError):
    """An image file that cannot be read; the message names the file and why."""


def _device(device):
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---- images ------------------------------------------------------------------------------------------
def read_image(path):
    """Open and decode an image file (any mode; upscale() converts). Every way this can fail is raised as
    ImageReadError naming the file: missing, unreadable, not an image, broken, or a mode with no RGB form."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(path, "cannot read it (permission denied)") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "not an image file Pillow can read (convert it to PNG or JPEG)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's plugins raise all three for broken files
        raise ImageReadError(path, f"broken or truncated image file ({e})") from None
    try:
        img.crop((0, 0, 1, 1)).convert("RGB")  # the conversion upscale() needs, tried on one pixel
    except (ValueError, OSError):
        raise ImageReadError(path, f"image mode {img.mode!r} is not supported "
                             f"(save it as RGB or grayscale, e.g. as PNG)") from None
    return img


# ---- weights -----------------------------------------------------------------------------------------
def _dims(state):
    """(d, s, m) of an FSRCNN state_dict (see model.py for the layer order), or None for anything else."""
    try:
        convs = [v for k, v in state.items() if k.startswith("body.") and k.endswith(".weight") and v.dim() == 4]
        return int(convs[0].shape[0]), int(convs[1].shape[0]), len(convs) - 3
    except (AttributeError, IndexError, TypeError):
        return None


def _describe(dims):
    names = [n for n, p in PRESETS.items() if p == dims]
    size = "d, s, m = %d, %d, %d" % dims
    return f"--preset {names[0]} ({size})" if names else f"{size} (no preset)"


def load_checkpoint(path, model, *, init=False, resume=False):
    """Load FSRCNN weights from `path` into `model`; returns the training checkpoint dict, or None for a
    plain state_dict. Accepts a state_dict or a training checkpoint ({"model": state_dict, "args": ...}).

    init=True: every layer but the deconvolution (which is scale-specific and keeps its initialisation), from
    weights of any scale: the paper's fine-tuning recipe. resume=True: a training checkpoint is required.
    A file of another model size, of another scale (where the checkpoint records it) or not FSRCNN at all
    raises CheckpointError naming the file and what it holds."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except IsADirectoryError:
        raise CheckpointError(path, "is a folder, not a weights file") from None
    except PermissionError:
        raise CheckpointError(path, "cannot read it (permission denied)") from None
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
        raise CheckpointError(path, f"not a PyTorch weights file ({type(e).__name__}: {e})") from None
    ckpt = obj if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else None
    state = ckpt["model"] if ckpt is not None else obj
    dims = _dims(state) if isinstance(state, dict) else None
    if dims is None or "deconv.weight" not in state:
        raise CheckpointError(path, "not FSRCNN weights (a state_dict or a checkpoint of `deconv-ext sr train`)")
    want = (model.d, model.s, model.m)
    if dims != want:
        raise CheckpointError(path, f"FSRCNN weights of {_describe(dims)}, but the model is {_describe(want)}: "
                              "pass the matching --preset")
    if resume and (ckpt is None or "optimizer" not in ckpt):
        raise CheckpointError(path, "weights only, not a training checkpoint (latest.pt or final.pt of a run); "
                              "to start from these weights use --init")
    saved_args = (ckpt or {}).get("args")
    saved_scale = saved_args.get("scale") if isinstance(saved_args, dict) else None
    if not init and saved_scale is not None and saved_scale != model.scale:
        raise CheckpointError(path, f"a checkpoint for scale x{saved_scale}, not x{model.scale}: "
                              f"pass --scale {saved_scale}" + (", or use --init to start from it" if resume else ""))
    if init:
        state = {k: v for k, v in state.items() if not k.startswith("deconv.")}
        # weights from before the mean shift (no `center`) were trained without it: center = 0 (the model's own
        # load hook does this when the deconvolution is present, i.e. for every non-init load)
        state.setdefault("center", torch.tensor(0.0))
    try:
        missing, unexpected = model.load_state_dict(state, strict=not init)
    except RuntimeError as e:  # same (d, s, m) but other keys or shapes: a modified model
        raise CheckpointError(path, f"does not fit FSRCNN {_describe(want)}: {e}") from None
    if unexpected or any(not k.startswith("deconv.") for k in missing):
        raise CheckpointError(path, f"does not fit FSRCNN {_describe(want)} (missing {missing}, "
                                    f"unexpected {unexpected})")
    return ckpt


def load_model(path, scale, preset="fsrcnn", device=None):
    """FSRCNN from a plain state_dict or a training checkpoint (its "model" entry), in eval mode."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}, expected one of {sorted(PRESETS)}")
    model = FSRCNN(scale, *PRESETS[preset])
    load_checkpoint(path, model)
    return model.to(_device(device)).eval()


def pretrained(scale, device=None):
    """FSRCNN (56, 12, 4) with the shipped weights for scale 2, 3 or 4, in eval mode."""
    path = os.path.join(WEIGHTS_DIR, f"fsrcnn_x{scale}.pt")
    if not os.path.exists(path):
        raise ValueError(f"no shipped FSRCNN weights for scale {scale!r} (have: 2, 3, 4)")
    return load_model(path, scale, "fsrcnn", device)


# ---- inference ---------------------------------------------------------------------------------------
def _tiles(h, w, tile):
    return [(i0, j0, min(i0 + tile, h), min(j0 + tile, w)) for i0 in range(0, h, tile) for j0 in range(0, w, tile)]


@torch.no_grad()
def upscale_y(model, y, tile=512, progress=False):
    """Y plane (H, W) float / 255 -> model -> (scale*H, scale*W) numpy float32, clipped to [0, 1]. Inputs larger
    than `tile` LR pixels on a side (tile=0: never) are processed in tile x tile blocks with TILE_MARGIN pixels
    of overlap; progress=True shows a tqdm bar over the blocks."""
    s = model.scale
    device = next(model.parameters()).device
    h, w = y.shape
    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None].to(device)

    def run(part):
        return model(part).float().clamp_(0, 1)[0, 0].cpu().numpy()

    if not tile or (h <= tile and w <= tile):
        return run(x)
    tiles = _tiles(h, w, tile)
    if progress:
        from tqdm import tqdm

        tiles = tqdm(tiles, desc="tiles", unit="tile", leave=False, dynamic_ncols=True)
    out = np.empty((h * s, w * s), np.float32)
    for i0, j0, i1, j1 in tiles:
        a0, b0 = max(i0 - TILE_MARGIN, 0), max(j0 - TILE_MARGIN, 0)
        a1, b1 = min(i1 + TILE_MARGIN, h), min(j1 + TILE_MARGIN, w)
        part = run(x[..., a0:a1, b0:b1])
        out[i0 * s:i1 * s, j0 * s:j1 * s] = part[(i0 - a0) * s:(i1 - a0) * s, (j0 - b0) * s:(j1 - b0) * s]
    return out


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def upscale(image, scale, model=None, device=None, tile=512, progress=False):
    """PIL image -> PIL image of exactly scale x its size: Y by FSRCNN, Cb and Cr by bicubic.
    Grayscale images come back grayscale ("L"); an alpha channel is upscaled by bicubic and kept
    ("RGBA" / "LA"); every other mode comes back "RGB". model defaults to pretrained(scale).
    progress=True shows a tqdm bar over the tiles of a large image."""
    if model is None:
        model = pretrained(scale, device)
    elif device is not None:
        model = model.to(_device(device))
    if model.scale != scale:
        raise ValueError(f"upscale: the model is for scale {model.scale}, got scale={scale}")
    model.eval()
    ycc = srdata.rgb_to_ycbcr(np.asarray(srdata.load_image(image)))
    y = upscale_y(model, ycc[..., 0], tile, progress)
    cb, cr = (srdata.bicubic_upscale(ycc[..., c], scale) for c in (1, 2))
    out = Image.fromarray(srdata.ycbcr_to_rgb(np.stack([y, cb, cr], axis=-1)))
    if isinstance(image, Image.Image):
        if image.mode in GRAY_MODES:
            out = out.convert("L")
        if "A" in image.getbands():
            out.putalpha(image.getchannel("A").resize(out.size, Image.BICUBIC))
    return out
