"""FSRCNN super-resolution built on deconv_ext.ConvTranspose2d.

    model = deconv_ext.sr.pretrained(2)              # shipped weights (see TRAINING.md)
    big = deconv_ext.sr.upscale(pil_image, 2)        # PIL in, PIL out, exactly 2x the size

Images are processed in BT.601 YCbCr (MATLAB rgb2ycbcr convention, Y in [16, 235] / 255): Y goes through
the network, Cb and Cr through bicubic. Command line: `deconv-ext sr train|eval|upscale`.

The app needs packages the op does not: Pillow, scikit-image and tqdm, installed by
`pip install "deconv_ext[sr]"` (setup.py's extras_require["sr"]).
"""
import importlib.util

# import name -> distribution name (as pip knows it); keep in step with setup.py's extras_require["sr"]
REQUIRES = {"PIL": "Pillow", "skimage": "scikit-image", "tqdm": "tqdm"}

_missing = [dist for name, dist in REQUIRES.items() if importlib.util.find_spec(name) is None]
if _missing:
    raise ImportError(f"deconv_ext.sr (the super-resolution app) needs {' and '.join(_missing)}, which "
                      f"{'is' if len(_missing) == 1 else 'are'} not installed: "
                      f"pip install \"deconv_ext[sr]\" (or: pip install {' '.join(_missing)})",
                      name=__name__)

from .infer import load_checkpoint, load_model, pretrained, upscale  # noqa: E402
from .model import FSRCNN, PRESETS  # noqa: E402

__all__ = ["FSRCNN", "PRESETS", "pretrained", "upscale", "load_model", "load_checkpoint", "REQUIRES"]
