#!/usr/bin/env python3
"""Gather the FSRCNN training and held-out folders from the photographs on this machine.

    python scripts/gather_sr_data.py /work/sr_data
    python -m deconv_ext sr train --data /work/sr_data/train --heldout-data /work/sr_data/heldout ...
    python -m deconv_ext sr eval --data /work/sr_data/heldout --scale 2

Sources (nothing is downloaded):
* the photographic wallpapers of the Debian package plasma-workspace-wallpapers
  (`apt-get install -y plasma-workspace-wallpapers`), the largest version of each, shrunk with PIL's Lanczos
  filter so that its longer side is at most --max-side (default 1280, i.e. 2560x1600 -> 1280x800). Shrinking
  by 2 averages away most JPEG blocking and sensor noise, so the HR side of a training pair is clean, and it
  keeps the sampler's memory small (every image is also kept at 4 smaller scales by the scale augmentation);
* the 13 training photographs shipped inside scikit-image (deconv_ext.sr.data.TRAIN_IMAGES), unchanged, and
  copies of its 3 held-out ones (chelsea, coffee, rocket) in OUT/heldout, so that one `sr eval --data
  OUT/heldout` covers the whole held-out set.

Drawn, rendered or vector wallpapers are not used: of plasma-workspace-wallpapers, every wallpaper not in
PLASMA_TRAIN / PLASMA_HELDOUT (Altai, Autumn, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui,
Honeywave, IceCold, Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna); of
gnome-backgrounds 43 none (adwaita, blobs, drool, dune, field, grid, licorice, oceans, pixels, symbolic,
truchet, vnc and wood are all renders or vector art). No other package's images are used.

PLASMA_HELDOUT goes to OUT/heldout and is never trained on (the evaluation set, with skimage's chelsea,
coffee and rocket). Output files are PNG; the folders are meant to live outside the repository.
"""
import argparse
import os
import sys

WALLPAPER_ROOT = "/usr/share/wallpapers"
PACKAGE = "plasma-workspace-wallpapers"
# name -> the largest image the package ships (contents/images/<file>)
PLASMA_TRAIN = {"BytheWater": "2560x1600.jpg", "ColorfulCups": "2560x1600.jpg", "DarkestHour": "2560x1600.jpg",
                "FallenLeaf": "2560x1600.jpg", "Grey": "2560x1600.jpg", "Kite": "2560x1600.jpg",
                "Path": "2560x1600.jpg", "summer_1am": "2560x1600.jpg"}
PLASMA_HELDOUT = {"ColdRipple": "2560x1600.jpg", "EveningGlow": "2560x1600.jpg", "OneStandsOut": "2560x1600.jpg"}


class MissingSourceError(RuntimeError):
    pass


def source_path(root, name, file):
    return os.path.join(root, name, "contents", "images", file)


def check_sources(root=WALLPAPER_ROOT):
    """Raise MissingSourceError naming the missing files and the package to install."""
    wanted = {**PLASMA_TRAIN, **PLASMA_HELDOUT}
    missing = [source_path(root, n, f) for n, f in sorted(wanted.items()) if not os.path.isfile(source_path(root, n, f))]
    if missing:
        raise MissingSourceError(
            f"{len(missing)} of the {len(wanted)} wallpaper photographs are missing, e.g. {missing[0]}.\n"
            f"They come from the Debian package {PACKAGE}: install it with\n"
            f"    apt-get install -y {PACKAGE}\n"
            f"(as root), then run this script again.")


def _shrunk(path, max_side):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    f = max_side / max(w, h)
    if f < 1:
        img = img.resize((round(w * f), round(h * f)), Image.LANCZOS)
    return img


def gather(out, root=WALLPAPER_ROOT, max_side=1280, skimage_photos=True, log=print):
    """Write OUT/train/*.png and OUT/heldout/*.png; returns {"train": [...], "heldout": [...]} (file paths)."""
    check_sources(root)
    written = {"train": [], "heldout": []}
    for split, names in (("train", PLASMA_TRAIN), ("heldout", PLASMA_HELDOUT)):
        folder = os.path.join(out, split)
        os.makedirs(folder, exist_ok=True)
        for name, file in sorted(names.items()):
            src, dst = source_path(root, name, file), os.path.join(folder, f"plasma_{name}.png")
            img = _shrunk(src, max_side)
            img.save(dst)
            written[split].append(dst)
            log(f"{split:8s} {dst}  <- {src} ({img.size[0]}x{img.size[1]})")
    if skimage_photos:
        from deconv_ext.sr import data as srdata

        for split, names in (("train", srdata.TRAIN_IMAGES), ("heldout", srdata.HELDOUT_IMAGES)):
            for name in names:
                dst = os.path.join(out, split, f"skimage_{name}.png")
                srdata.skimage_image(name).save(dst)
                written[split].append(dst)
                log(f"{split:8s} {dst}  <- skimage.data {name}")
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder (gets train/ and heldout/); keep it outside the repository")
    p.add_argument("--max-side", type=int, default=1280, help="shrink wallpapers to this longer side (default 1280)")
    p.add_argument("--root", default=WALLPAPER_ROOT, help=f"where {PACKAGE} installs (default {WALLPAPER_ROOT})")
    p.add_argument("--no-skimage", action="store_true", help="do not add scikit-image's training photographs")
    args = p.parse_args(argv)
    try:
        written = gather(args.out, args.root, args.max_side, not args.no_skimage)
    except MissingSourceError as e:
        print(f"gather_sr_data: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(written['train'])} training images in {os.path.join(args.out, 'train')}, "
          f"{len(written['heldout'])} held-out images in {os.path.join(args.out, 'heldout')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
