"""The eval and upscale actions of `deconv-ext sr` (train lives in train.py)."""
import os

from PIL import Image

from . import data as srdata
from .evaluate import evaluate, format_table, write_json
from .infer import load_model, pretrained, upscale

# The bundled sample for `sr upscale` with no input: a held-out photograph (never trained on).
SAMPLE_IMAGE = "chelsea"


def _model(args):
    if args.weights:
        return load_model(args.weights, args.scale, args.preset, args.device)
    if args.preset != "fsrcnn":
        raise SystemExit("--preset fsrcnn-s has no shipped weights: pass --weights")
    return pretrained(args.scale, args.device)


def run_eval(args):
    model = _model(args)
    if args.data is None:
        images = [(n, srdata.skimage_image(n)) for n in srdata.HELDOUT_IMAGES]
    elif os.path.isdir(args.data):
        images = [(os.path.relpath(p, args.data), srdata.load_image(p)) for p in srdata.list_images(args.data)]
    else:
        images = [(os.path.basename(args.data), srdata.load_image(args.data))]
    result = evaluate(model, images, args.scale)
    result["weights"] = args.weights or f"shipped fsrcnn_x{args.scale}.pt"
    print(format_table(result))
    path = args.json or f"sr_eval_x{args.scale}.json"
    write_json(result, path)
    print(f"wrote {path}")
    return 0


def _side_by_side(scale, model, tile):
    """bicubic | FSRCNN | original, from the held-out sample shrunk by `scale`."""
    hr = srdata.crop_to_multiple(srdata.skimage_image(SAMPLE_IMAGE), scale)
    lr = srdata.downscale(hr, scale)
    sr = upscale(lr, scale, model=model, tile=tile)
    bic = lr.resize(hr.size, Image.BICUBIC)
    w, h = hr.size
    canvas = Image.new("RGB", (3 * w, h))
    for k, im in enumerate((bic, sr, hr)):
        canvas.paste(im, (k * w, 0))
    return canvas


def run_upscale(args):
    model = _model(args)
    if args.input is None:
        out = args.output or f"sr_sample_x{args.scale}.png"
        _side_by_side(args.scale, model, args.tile).save(out)
        print(f"wrote {out} (bicubic | FSRCNN | original; {SAMPLE_IMAGE} shrunk x{args.scale})")
        return 0
    if os.path.isdir(args.input):
        out_dir = args.output or "sr_out"
        os.makedirs(out_dir, exist_ok=True)
        jobs = [(p, os.path.join(out_dir, os.path.splitext(os.path.relpath(p, args.input))[0] + ".png"))
                for p in srdata.list_images(args.input)]
    else:
        stem = os.path.splitext(os.path.basename(args.input))[0]
        jobs = [(args.input, args.output or f"{stem}_x{args.scale}.png")]
    for src, dst in jobs:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        img = srdata.load_image(src)
        upscale(img, args.scale, model=model, tile=args.tile).save(dst)
        print(f"{src} {img.size[0]}x{img.size[1]} -> {dst} {img.size[0] * args.scale}x{img.size[1] * args.scale}")
    return 0


__all__ = ["run_eval", "run_upscale", "SAMPLE_IMAGE"]
