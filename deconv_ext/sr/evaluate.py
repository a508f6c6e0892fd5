"""Evaluation protocol of the SR papers: Y channel (BT.601, [16, 235] / 255), `scale` pixels shaved from
every border, PSNR and SSIM from skimage.metrics on the model output and on bicubic upscaling; and the labelled
picture of the same comparison that `deconv-ext sr upscale` draws with no input."""
import json

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from . import data as srdata
from .infer import upscale, upscale_y


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


# ---- labelled visual comparison ----------------------------------------------------------------------
def _font(size):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable, no font file needed
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # the small bitmap font of older Pillow


def _detailed_box(y, bw, bh):
    """(left, top) of the bw x bh window of the Y plane with the most detail (sum of gradient magnitudes)."""
    g = np.zeros_like(y, dtype=np.float64)
    g[:, 1:] += np.abs(np.diff(y, axis=1))
    g[1:, :] += np.abs(np.diff(y, axis=0))
    integral = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = y.shape
    step = max(1, min(bw, bh) // 8)
    best, where = -1.0, (0, 0)
    for top in range(0, h - bh + 1, step):
        for left in range(0, w - bw + 1, step):
            total = (integral[top + bh, left + bw] - integral[top, left + bw] - integral[top + bh, left]
                     + integral[top, left])
            if total > best:
                best, where = total, (left, top)
    return where


def comparison(model, img, scale, tile=512, zoom=3):
    """bicubic | FSRCNN | original, from the PIL image `img` (taken as the original) shrunk by `scale`.

    Each panel is labelled with its Y-PSNR against the original (shave = scale, on the 8-bit images shown), and a
    second row shows the most detailed area (boxed in the first row) enlarged `zoom` x by nearest neighbour.
    Returns (PIL image, {"bicubic_psnr": dB, "psnr": dB})."""
    hr = srdata.crop_to_multiple(srdata.load_image(img), scale)
    lr = srdata.downscale(hr, scale)
    panels = [lr.resize(hr.size, Image.BICUBIC), upscale(lr, scale, model=model, tile=tile), hr]
    y = [srdata.rgb_to_ycbcr(np.asarray(p))[..., 0] for p in panels]
    metrics = {"bicubic_psnr": psnr_y(y[0], y[2], scale), "psnr": psnr_y(y[1], y[2], scale)}
    names = ["bicubic", f"FSRCNN x{scale}", "original"]
    labels = [f"bicubic: Y-PSNR {metrics['bicubic_psnr']:.2f} dB",
              f"FSRCNN x{scale}: Y-PSNR {metrics['psnr']:.2f} dB ({metrics['psnr'] - metrics['bicubic_psnr']:+.2f})",
              "original"]

    w, h = hr.size
    bw, bh = max(1, w // zoom), max(1, h // zoom)
    left, top = _detailed_box(y[2], bw, bh)
    box = (left, top, left + bw, top + bh)
    font = _font(14)
    strip, gap = 20, 4  # label strip above each row, white gap between the columns
    canvas = Image.new("RGB", (3 * w + 2 * gap, 2 * strip + h + bh * zoom), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (panel, name, label) in enumerate(zip(panels, names, labels)):
        x0 = k * (w + gap)
        canvas.paste(panel, (x0, strip))
        canvas.paste(panel.crop(box).resize((bw * zoom, bh * zoom), Image.NEAREST), (x0, 2 * strip + h))
        draw.rectangle((x0 + left - 1, strip + top - 1, x0 + left + bw, strip + top + bh), outline=(255, 210, 0),
                       width=2)
        draw.text((x0 + 4, 3), label, fill="black", font=font)
        draw.text((x0 + 4, strip + h + 3), f"{name}: boxed area, {zoom}x zoom (nearest)", fill="black", font=font)
    return canvas, metrics
