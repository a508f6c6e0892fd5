"""The eval and upscale actions of `deconv-ext sr` (train lives in train.py)."""
import os

from . import data as srdata
from .evaluate import comparison, evaluate, format_table, write_json
from .infer import load_model, pretrained, upscale

# The bundled sample for `sr upscale` with no input: a held-out photograph (never trained on).
SAMPLE_IMAGE = "chelsea"
SAMPLE_ZOOM = 3


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


def run_upscale(args):
    model = _model(args)
    if args.input is None:
        out = args.output or f"sr_sample_x{args.scale}.png"
        image, m = comparison(model, srdata.skimage_image(SAMPLE_IMAGE), args.scale, tile=args.tile, zoom=SAMPLE_ZOOM)
        image.save(out)
        print(f"wrote {out}: bicubic | FSRCNN x{args.scale} | original ({SAMPLE_IMAGE} shrunk x{args.scale}), labelled "
              f"with Y-PSNR, with a {SAMPLE_ZOOM}x zoom of the most detailed area below")
        print(f"Y-PSNR against the original: bicubic {m['bicubic_psnr']:.2f} dB, FSRCNN {m['psnr']:.2f} dB "
              f"({m['psnr'] - m['bicubic_psnr']:+.2f} dB)")
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
