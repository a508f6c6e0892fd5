"""`deconv-ext sr train|eval|upscale`: FSRCNN super-resolution from the command line (arguments and actions).

Exit status (see deconv_ext/cli.py): 2 when the command line names something missing or unusable, found before
any work starts (an input path, a --data folder, a weights file or checkpoint of another model size or scale, an
output that cannot be written, a --preset without shipped weights); 1 when the job ran and failed (an image
file that cannot be read, out of memory, a write that failed). A folder given to `upscale` is processed past
any broken file; the failures are listed at the end and make the exit status 1.
"""
import contextlib
import os
import sys

import torch
from PIL import Image

from ..cli import CommandError, UsageError
from . import data as srdata
from .infer import CheckpointError, ImageReadError, load_model, pretrained, read_image, upscale

# The bundled sample for `sr upscale` with no input: a held-out photograph (never trained on).
SAMPLE_IMAGE = "chelsea"
SAMPLE_ZOOM = 3


# ---- arguments ---------------------------------------------------------------------------------------
def _add_train(p):
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor (default 2)")
    p.add_argument("--preset", default="fsrcnn", choices=("fsrcnn", "fsrcnn-s"),
                   help="fsrcnn: d,s,m = 56,12,4; fsrcnn-s: 32,5,1 (default fsrcnn)")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    p.add_argument("--batch", type=int, default=64,
                   help="patches per step, split evenly across DDP processes (default 64)")
    p.add_argument("--patch", type=int, default=16, help="LR patch side in pixels (HR = patch*scale; default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the convolutions (default 1e-3)")
    p.add_argument("--deconv-lr-mult", type=float, default=0.1,
                   help="the deconvolution's learning rate as a fraction of --lr (paper: 0.1; default 0.1)")
    p.add_argument("--final-lr-frac", type=float, default=0.01,
                   help="cosine decay ends at this fraction of the learning rate (default 0.01)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave PyTorch's default)")
    p.add_argument("--no-amp", action="store_true", help="disable float16 autocast + GradScaler on CUDA")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder of HR training images (default: the skimage.data training photographs)")
    p.add_argument("--init", default=None, metavar="PT",
                   help="start from an FSRCNN state_dict of another scale (all layers but the deconvolution)")
    p.add_argument("--out", default="runs/sr", metavar="DIR",
                   help="output folder: latest.pt, final.pt, fsrcnn_x{scale}.pt, train.log (default runs/sr)")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="resume from CKPT (default with no value: OUT/latest.pt)")
    p.add_argument("--warm-restart", action="store_true",
                   help="with --resume: restart the cosine schedule at the resumed step (it then runs to --steps)")
    p.add_argument("--ckpt-every", type=int, default=500, help="write OUT/latest.pt every N steps (default 500)")
    p.add_argument("--log-every", type=int, default=100, help="append to OUT/train.log every N steps (default 100)")
    p.add_argument("--eval-every", type=int, default=1000,
                   help="held-out Y-PSNR in the log every N steps, 0 = never (default 1000)")
    p.add_argument("--heldout-data", default=None, metavar="DIR",
                   help="extra held-out images for the in-training PSNR (never trained on; default: none)")
    p.add_argument("--shrinks", default="1", metavar="F,F,...",
                   help="scale augmentation: also use every training image shrunk by these factors "
                        "(paper: 1,0.9,0.8,0.7,0.6; default 1 = none)")
    p.add_argument("--center", type=float, default=0.5,
                   help="the model's mean shift: the body sees Y/255 - CENTER (0 = the network without it; "
                        "default 0.5)")
    p.add_argument("--adam-eps", type=float, default=1e-8, help="Adam's epsilon (default 1e-8)")
    p.add_argument("--loss", default="mse", choices=("mse", "l1"),
                   help="training loss on HR Y/255: mse (the paper's) or l1 (default mse)")
    p.add_argument("--deconv-init-std", type=float, default=None,
                   help="std of the deconvolution's Gaussian init (default: the model's, the paper's 0.001)")
    p.add_argument("--diag-every", type=int, default=0, metavar="N",
                   help="every N steps log per-layer gradient norm, update/weight ratio, drift and Adam "
                        "sqrt(v)/eps to train.log ('diag' lines; 0 = never, default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--check-ddp-sync", action="store_true",
                   help="under torchrun: verify at the end that all ranks hold identical weights")


def _add_eval(p):
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor (default 2)")
    p.add_argument("--weights", default=None, metavar="PT",
                   help="state_dict or training checkpoint (default: the shipped weights for --scale)")
    p.add_argument("--preset", default="fsrcnn", choices=("fsrcnn", "fsrcnn-s"), help="model size (default fsrcnn)")
    p.add_argument("--data", default=None, metavar="DIR_OR_FILE",
                   help="HR image folder or file (default: the held-out skimage.data photographs)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON (default sr_eval_x{scale}.json)")


def _add_upscale(p):
    p.add_argument("-i", "--input", default=None,
                   help="image file or folder (default: a bundled held-out sample, shown beside bicubic and the "
                        "original, labelled with Y-PSNR, with a zoomed crop)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (or folder when the input is a folder; default sr_out/ or sr_sample_x{scale}.png)")
    p.add_argument("-s", "--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor (default 2)")
    p.add_argument("--weights", default=None, metavar="PT", help="state_dict (default: the shipped weights)")
    p.add_argument("--preset", default="fsrcnn", choices=("fsrcnn", "fsrcnn-s"), help="model size (default fsrcnn)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--tile", type=int, default=512, help="LR tile side for large images, 0 = no tiling (default 512)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="sr_command", metavar="ACTION", required=True)
    for name, adder, help_text in (("train", _add_train, "train FSRCNN on random patches"),
                                   ("eval", _add_eval, "PSNR/SSIM on Y against bicubic (paper protocol)"),
                                   ("upscale", _add_upscale, "super-resolve images (colour: Y by FSRCNN, CbCr bicubic)")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        adder(p)


def run(args):
    return {"train": run_train, "eval": run_eval, "upscale": run_upscale}[args.sr_command](args)


# ---- checks shared by the actions --------------------------------------------------------------------
def _check_device(name):
    if name in (None, "auto"):
        return
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device name (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _check_writable_folder(path, option):
    """Create the folder `path` will be written into, or say in one line why it cannot be used."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{path}: a part of this path is a file, not a folder; choose another {option}") from None
    except OSError as e:
        raise UsageError(f"{folder}: cannot create this folder ({e.strerror}); choose another {option}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{folder}: cannot write into this folder (permission denied); choose another {option}")


def _image_format(path):
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"{path}: {'no' if not ext else 'unknown'} image file extension{' ' + ext if ext else ''}; "
                         f"end the output name (-o) with .png, .jpg, .tif, .bmp or .webp")
    return fmt


def _save_image(img, path):
    """Write img to path through a temporary file in the same folder and os.replace, so a failed or interrupted
    write never leaves a partial file where a good one was."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format=_image_format(path))
        os.replace(tmp, path)
    except OSError as e:
        raise CommandError(f"{path}: cannot write it ({e.strerror or e})") from e
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _model(args):
    device = None if args.device == "auto" else args.device  # None: cuda if available, as train's "auto"
    if args.weights:
        try:
            return load_model(args.weights, args.scale, args.preset, device)
        except CheckpointError as e:
            raise UsageError(f"{e} (--weights)") from e
    if args.preset != "fsrcnn":
        raise UsageError(f"--preset {args.preset} has no shipped weights (only fsrcnn has, for x2, x3 and x4): "
                         f"pass --weights PT, e.g. fsrcnn_x{args.scale}.pt written by "
                         f"`deconv-ext sr train --preset {args.preset} --scale {args.scale}`")
    try:
        return pretrained(args.scale, device)
    except (ValueError, CheckpointError) as e:  # a shipped file missing or damaged in this installation
        raise CommandError(f"{e}; reinstall deconv_ext, or pass --weights PT") from e


def _list_images(folder, option):
    try:
        return srdata.list_images(folder)
    except FileNotFoundError:
        raise UsageError(f"{folder}: no image files ({', '.join(srdata.IMAGE_EXTENSIONS)}) in this folder; "
                         f"check {option}") from None


def _progress_on(args):
    return not args.quiet and sys.stderr.isatty()


# ---- train -------------------------------------------------------------------------------------------
def _check_training_data(folder, min_side, option="--data"):
    if not os.path.isdir(folder):
        what = "not a folder" if os.path.exists(folder) else "no such folder"
        raise UsageError(f"{folder}: {what}; {option} takes a folder of training photographs")
    sides = []
    for path in _list_images(folder, option):
        try:
            with Image.open(path) as im:  # the header only: sizes without decoding
                sides.append(min(im.size))
        except Exception:
            try:
                read_image(path)  # says why, naming the file
            except ImageReadError as e:
                raise UsageError(f"{e}; fix it or move it out of {option} {folder}") from None
            raise
    if max(sides) < min_side:
        raise UsageError(f"{folder}: no image is at least {min_side} px on each side (--patch x --scale); "
                         f"add larger photographs or lower --patch")


def run_train(args):
    _check_device(args.device)
    if args.data:
        _check_training_data(args.data, args.patch * args.scale)
    if args.resume == "auto" and not os.path.exists(os.path.join(args.out, "latest.pt")):
        raise UsageError(f"{os.path.join(args.out, 'latest.pt')}: no checkpoint to resume in --out {args.out}; "
                         f"drop --resume to start a new run, or pass --resume CKPT")
    from .train import train

    try:
        train(args)
    except CheckpointError as e:
        raise UsageError(f"{e} ({'--init' if e.path == args.init else '--resume'})") from e
    except ImageReadError as e:
        raise CommandError(f"{e}; fix it or move it out of --data {args.data}") from e
    return 0


# ---- eval --------------------------------------------------------------------------------------------
def run_eval(args):
    from .evaluate import evaluate, format_table, write_json

    _check_device(args.device)
    path = args.json or f"sr_eval_x{args.scale}.json"
    _check_writable_folder(path, "--json")
    model = _model(args)
    try:
        if args.data is None:
            images = [(n, srdata.skimage_image(n)) for n in srdata.HELDOUT_IMAGES]
        elif os.path.isdir(args.data):
            images = [(os.path.relpath(p, args.data), read_image(p)) for p in _list_images(args.data, "--data")]
        elif os.path.exists(args.data):
            images = [(os.path.basename(args.data), read_image(args.data))]
        else:
            raise UsageError(f"{args.data}: no such file or folder; check --data")
    except ImageReadError as e:
        raise CommandError(f"{e}; fix it or evaluate without it") from e
    result = evaluate(model, images, args.scale)
    result["weights"] = args.weights or f"shipped fsrcnn_x{args.scale}.pt"
    print(format_table(result))
    try:
        write_json(result, path)
    except OSError as e:
        raise CommandError(f"{path}: cannot write it ({e.strerror or e})") from e
    print(f"wrote {path}")
    return 0


# ---- upscale -----------------------------------------------------------------------------------------
def _out_of_memory(src, size, tile):
    whole = not tile or max(size) <= tile
    smaller = max(1, (max(size) if whole else tile) // 2)
    where = "the whole image at once" if whole else f"a {tile}x{tile} tile"
    hint = f"try --tile {smaller}" + (" or --device cpu" if torch.cuda.is_available() else "")
    return f"{src}: out of memory on {where}; {hint}"


def _upscale_file(src, dst, model, args, progress):
    """One image file -> one output file. Returns the input size; raises CommandError naming the file."""
    try:
        img = read_image(src)
    except ImageReadError as e:
        raise CommandError(str(e)) from e
    try:
        out = upscale(img, args.scale, model=model, tile=args.tile, progress=progress)
    except (MemoryError, torch.OutOfMemoryError) as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # so the next image of a batch starts with the memory free again
        raise CommandError(_out_of_memory(src, img.size, args.tile)) from e
    try:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    except OSError as e:
        raise CommandError(f"{dst}: cannot create its folder ({e.strerror})") from e
    _save_image(out, dst)
    return img.size


def _jobs(args):
    """[(input file, output file)] and whether the input is a folder; every usage check is done here."""
    if not os.path.exists(args.input):
        raise UsageError(f"{args.input}: no such file or folder; check -i")
    if os.path.isdir(args.input):
        out_dir = args.output or "sr_out"
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError(f"{out_dir}: is a file; with a folder as input, -o names the output folder")
        _check_writable_folder(os.path.join(out_dir, "x.png"), "-o")
        files = _list_images(args.input, "-i")
        stems = [os.path.splitext(os.path.relpath(p, args.input)) for p in files]
        taken = {}
        for stem, _ in stems:
            taken[stem] = taken.get(stem, 0) + 1
        # a.jpg and a.png would both become a.png: such files keep their extension in the name (a_jpg.png)
        jobs = [(p, os.path.join(out_dir, (stem if taken[stem] == 1 else f"{stem}_{ext.lstrip('.')}") + ".png"))
                for p, (stem, ext) in zip(files, stems)]
        return jobs, True
    stem = os.path.splitext(os.path.basename(args.input))[0]
    dst = args.output or f"{stem}_x{args.scale}.png"
    if os.path.isdir(dst):
        raise UsageError(f"{dst}: is a folder; with one input file, -o names the output file")
    _image_format(dst)
    _check_writable_folder(dst, "-o")
    return [(args.input, dst)], False


def _sample(args, model):
    from .evaluate import comparison

    out = args.output or f"sr_sample_x{args.scale}.png"
    image, m = comparison(model, srdata.skimage_image(SAMPLE_IMAGE), args.scale, tile=args.tile, zoom=SAMPLE_ZOOM)
    _save_image(image, out)
    print(f"wrote {out}: bicubic | FSRCNN x{args.scale} | original ({SAMPLE_IMAGE} shrunk x{args.scale}), labelled "
          f"with Y-PSNR, with a {SAMPLE_ZOOM}x zoom of the most detailed area below")
    print(f"Y-PSNR against the original: bicubic {m['bicubic_psnr']:.2f} dB, FSRCNN {m['psnr']:.2f} dB "
          f"({m['psnr'] - m['bicubic_psnr']:+.2f} dB)")
    return 0


def run_upscale(args):
    from tqdm import tqdm

    _check_device(args.device)
    if args.tile < 0:
        raise UsageError(f"--tile {args.tile}: must be 0 (no tiling) or a positive tile side")
    if args.input is None:
        out = args.output or f"sr_sample_x{args.scale}.png"
        _image_format(out)
        _check_writable_folder(out, "-o")
        return _sample(args, _model(args))
    jobs, is_folder = _jobs(args)
    model = _model(args)
    progress = _progress_on(args)
    bar = tqdm(jobs, unit="image", dynamic_ncols=True, disable=not (progress and is_folder))
    failed = []
    for src, dst in bar:
        try:
            w, h = _upscale_file(src, dst, model, args, progress)
        except CommandError as e:
            if not is_folder:
                raise
            failed.append(src)
            tqdm.write(f"deconv-ext: failed: {e}", file=sys.stderr)
            continue
        tqdm.write(f"{src} {w}x{h} -> {dst} {w * args.scale}x{h * args.scale}", file=sys.stdout)
    bar.close()
    if failed:
        raise CommandError(f"{len(failed)} of {len(jobs)} images failed ({', '.join(failed)}; reasons above); "
                           f"the other {len(jobs) - len(failed)} are in {args.output or 'sr_out'}")
    return 0
