"""`deconv-ext sr train|eval|upscale`: FSRCNN super-resolution from the command line."""


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
    p.add_argument("-i", "--input", default=None, help="image file or folder (default: a bundled held-out sample)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (or folder when the input is a folder; default sr_out/ or sr_sample_x{scale}.png)")
    p.add_argument("-s", "--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor (default 2)")
    p.add_argument("--weights", default=None, metavar="PT", help="state_dict (default: the shipped weights)")
    p.add_argument("--preset", default="fsrcnn", choices=("fsrcnn", "fsrcnn-s"), help="model size (default fsrcnn)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--tile", type=int, default=512, help="LR tile side for large images, 0 = no tiling (default 512)")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="sr_command", metavar="ACTION", required=True)
    for name, adder, help_text in (("train", _add_train, "train FSRCNN on random patches"),
                                   ("eval", _add_eval, "PSNR/SSIM on Y against bicubic (paper protocol)"),
                                   ("upscale", _add_upscale, "super-resolve images (colour: Y by FSRCNN, CbCr bicubic)")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        adder(p)


def run(args):
    if args.sr_command == "train":
        from .train import train

        train(args)
        return 0
    if args.sr_command == "eval":
        from .commands import run_eval

        return run_eval(args)
    from .commands import run_upscale

    return run_upscale(args)
