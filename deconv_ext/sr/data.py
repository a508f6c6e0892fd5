"""Images, colour conversion, the train / held-out split and the random patch sampler.

Colour convention (the one SR papers use, MATLAB's ``rgb2ycbcr``; ITU-R BT.601, studio swing):
    Y = 16 + 65.481 R + 128.553 G + 24.966 B   with R, G, B in [0, 1], so Y lies in [16, 235].
The network sees and predicts Y / 255 (values in [16/255, 235/255], inside [0, 1]); PSNR and SSIM are
computed on that same Y / 255 with data_range = 1, i.e. the usual "Y-PSNR with peak 255".
skimage.color.rgb2ycbcr / ycbcr2rgb implement exactly this convention.

Low-resolution images are made the way the evaluation protocol makes them: the HR RGB image is cropped
to a multiple of the scale and shrunk by PIL's bicubic filter (8-bit, like a real LR file).
"""
import os

import numpy as np
from PIL import Image
from skimage import color

__all__ = ["TRAIN_IMAGES", "HELDOUT_IMAGES", "rgb_to_ycbcr", "ycbcr_to_rgb", "load_image", "skimage_image",
           "list_images", "crop_to_multiple", "downscale", "shrink", "bicubic_upscale", "make_pair", "PatchSampler",
           "PAPER_SHRINKS"]

# The photographs that ship inside scikit-image (no download). The split is fixed: held-out images are
# never used for training; they are the default evaluation set. The two motorcycle views show the same
# scene, so both are on the training side. Synthetic or non-photographic images (chessboard, color,
# logo, horse, text, page, phantom) and the motion-blurred clock are not used.
TRAIN_IMAGES = ("astronaut", "camera", "coins", "moon", "brick", "grass", "gravel", "hubble_deep_field", "ihc",
                "motorcycle_left", "motorcycle_right", "retina", "cell")
HELDOUT_IMAGES = ("chelsea", "coffee", "rocket")

# FSRCNN's scale augmentation: every HR photo is also used shrunk by these factors before pairs are made
PAPER_SHRINKS = (1.0, 0.9, 0.8, 0.7, 0.6)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def rgb_to_ycbcr(rgb):
    """uint8 or float [0,1] RGB (H, W, 3) -> float32 YCbCr / 255 (H, W, 3): Y in [16, 235] / 255."""
    return (color.rgb2ycbcr(rgb) / 255.0).astype(np.float32)


def ycbcr_to_rgb(ycbcr):
    """float YCbCr / 255 (H, W, 3) -> uint8 RGB."""
    rgb = color.ycbcr2rgb(np.asarray(ycbcr, dtype=np.float64) * 255.0)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def load_image(path_or_image):
    """A file path or a PIL image -> PIL RGB image (grey and RGBA are converted)."""
    img = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return img.convert("RGB")


def skimage_image(name):
    """One of the image files shipped inside the skimage.data package (no download), as PIL RGB.

    Read straight from the package folder: some skimage.data loader functions would fetch a
    different (larger) version with pooch."""
    from skimage import data

    folder = os.path.dirname(data.__file__)
    for ext in (".png", ".jpg"):
        path = os.path.join(folder, name + ext)
        if os.path.exists(path):
            return load_image(path)
    raise FileNotFoundError(f"{name!r} is not among the images shipped in {folder}")


def list_images(folder):
    """Image files in a folder (recursively), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder!r}")
    return sorted(found)


def crop_to_multiple(img, scale):
    """Crop the bottom/right so that both sides are multiples of scale (the SR evaluation convention)."""
    w, h = img.size
    return img.crop((0, 0, w - w % scale, h - h % scale))


def downscale(img, scale):
    """PIL bicubic shrink by an integer factor (img must be a multiple of scale in size)."""
    w, h = img.size
    return img.resize((w // scale, h // scale), Image.BICUBIC)


def shrink(img, factor):
    """PIL RGB image shrunk by a factor in (0, 1] (PIL bicubic, which widens its kernel when shrinking, i.e. is
    antialiased like MATLAB's imresize); factor 1 returns the image unchanged."""
    if not 0 < factor <= 1:
        raise ValueError(f"shrink: expected a factor in (0, 1], got {factor}")
    if factor == 1:
        return img
    w, h = img.size
    return img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BICUBIC)


def bicubic_upscale(plane, scale):
    """float (H, W) plane -> PIL bicubic (scale*H, scale*W) float32 plane (no 8-bit rounding)."""
    h, w = plane.shape
    up = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize((w * scale, h * scale),
                                                                                          Image.BICUBIC)
    return np.asarray(up, dtype=np.float32)


def make_pair(img, scale):
    """PIL RGB HR image -> (HR Y, LR Y) float32 planes / 255, HR cropped to a multiple of scale."""
    hr = crop_to_multiple(load_image(img), scale)
    lr = downscale(hr, scale)
    return rgb_to_ycbcr(np.asarray(hr))[..., 0], rgb_to_ycbcr(np.asarray(lr))[..., 0]


class PatchSampler:
    """Random (LR, HR) Y patch pairs with the 8 flips/rotations, from a list of images.

    Each patch first picks an image uniformly (so large, mostly black images such as the Hubble field
    or the retina do not dominate), then a uniform position on the LR grid; the HR patch is the
    aligned scale x larger block. Deterministic given the seed (use seed + rank under DDP).

    shrinks: scale augmentation (the paper's: PAPER_SHRINKS); every image is also used shrunk by each
    factor (`shrink`) before its (HR, LR) pair is made, and each shrunk copy counts as one more image.
    """

    def __init__(self, images, scale, lr_patch, seed=0, shrinks=(1.0,)):
        self.scale, self.lr_patch = scale, lr_patch
        self.pairs = []
        for img in images:
            img = load_image(img)
            for factor in shrinks:
                hr, lr = make_pair(shrink(img, factor), scale)
                if min(lr.shape) >= lr_patch:
                    self.pairs.append((hr, lr))
        if not self.pairs:
            raise ValueError(f"no training image is at least {lr_patch * scale} px on each side")
        self.rng = np.random.default_rng(seed)

    def sample(self, batch):
        """-> (lr, hr) float32 arrays of shape (batch, 1, p, p) and (batch, 1, p*scale, p*scale)."""
        p, s, rng = self.lr_patch, self.scale, self.rng
        lrs = np.empty((batch, 1, p, p), np.float32)
        hrs = np.empty((batch, 1, p * s, p * s), np.float32)
        for k in range(batch):
            hr, lr = self.pairs[rng.integers(len(self.pairs))]
            i, j = rng.integers(lr.shape[0] - p + 1), rng.integers(lr.shape[1] - p + 1)
            lp, hp = lr[i:i + p, j:j + p], hr[i * s:(i + p) * s, j * s:(j + p) * s]
            t = rng.integers(8)
            if t & 4:
                lp, hp = lp.T, hp.T
            lrs[k, 0], hrs[k, 0] = np.rot90(lp, t & 3), np.rot90(hp, t & 3)
        return lrs, hrs

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state
