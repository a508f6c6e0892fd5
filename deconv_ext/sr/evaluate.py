"""Evaluation protocol of the SR papers: Y channel (BT.601, [16, 235] / 255), `scale` pixels shaved from
every border, PSNR and SSIM from skimage.metrics on the model output and on bicubic upscaling."""
import json

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from . import data as srdata
from .infer import upscale_y


def _shave(a, scale):
    return a[scale:-scale, scale:-scale] if scale > 0 else a


def psnr_y(pred, ref, scale):
    """Y-PSNR (peak 1.0 on Y / 255, i.e. peak 255 on Y) with `scale` border pixels shaved."""
    return float(peak_signal_noise_ratio(_shave(ref, scale).astype(np.float64),
                                         _shave(pred, scale).astype(np.float64), data_range=1.0))


def ssim_y(pred, ref, scale):
    """Y-SSIM (skimage defaults: 7x7 uniform window) with `scale` border pixels shaved."""
    return float(structural_similarity(_shave(ref, scale).astype(np.float64),
                                       _shave(pred, scale).astype(np.float64), data_range=1.0))


def evaluate_image(model, img, scale):
    """PIL HR image -> dict of PSNR/SSIM for the model and for bicubic (Y, shave = scale)."""
    hr, lr = srdata.make_pair(img, scale)
    sr = upscale_y(model, lr, tile=0)
    bic = np.clip(srdata.bicubic_upscale(lr, scale), 0, 1)
    return {"psnr": psnr_y(sr, hr, scale), "ssim": ssim_y(sr, hr, scale),
            "bicubic_psnr": psnr_y(bic, hr, scale), "bicubic_ssim": ssim_y(bic, hr, scale),
            "size": [int(hr.shape[1]), int(hr.shape[0])]}


def evaluate(model, images, scale, device=None):
    """images: list of (name, PIL image). Returns {"scale", "images": {name: metrics}, "mean": metrics}.
    device: move the model there first (default: where it is)."""
    if device is not None:
        model = model.to(device)
    model.eval()
    per = {name: evaluate_image(model, img, scale) for name, img in images}
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    mean = {k: float(np.mean([m[k] for m in per.values()])) for k in keys}
    for m in list(per.values()) + [mean]:
        m["psnr_gain"] = m["psnr"] - m["bicubic_psnr"]
    return {"scale": scale, "protocol": "Y (BT.601, 16-235)/255, data_range=1, shave=scale, PIL bicubic",
            "images": per, "mean": mean}


def format_table(result):
    lines = [f"x{result['scale']}  {'image':<22}{'bicubic PSNR':>13}{'FSRCNN PSNR':>13}{'gain':>8}"
             f"{'bicubic SSIM':>14}{'FSRCNN SSIM':>13}"]
    rows = list(result["images"].items()) + [("mean", result["mean"])]
    for name, m in rows:
        lines.append(f"    {name:<22}{m['bicubic_psnr']:>13.3f}{m['psnr']:>13.3f}{m['psnr_gain']:>+8.3f}"
                     f"{m['bicubic_ssim']:>14.4f}{m['ssim']:>13.4f}")
    return "\n".join(lines)


def write_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)

