"""The `deconv-ext` command (also `python -m deconv_ext`).

Each subcommand lives in its own module, which provides
    add_arguments(parser)   fill in an argparse parser
    run(args) -> int        do the work, return the exit status
and is listed in SUBCOMMANDS below.
"""
import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("deconv_ext.info", "build and runtime information"),
    "bench": ("deconv_ext.bench", "benchmark against F.conv_transpose2d"),
    "sr": ("deconv_ext.sr.cli", "FSRCNN super-resolution: train, eval, upscale"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="deconv-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
