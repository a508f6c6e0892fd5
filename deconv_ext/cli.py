"""The `deconv-ext` command (also `python -m deconv_ext`).

Each subcommand lives in its own module, which provides
    add_arguments(parser)   fill in an argparse parser
    run(args) -> int        do the work, return the exit status
and is listed in SUBCOMMANDS below.

Failures are one line on stderr, `deconv-ext: error: ...`, naming the file and what to do, and the exit status
says whose they are: 2 for bad usage (an option, path or file that does not fit), 1 for a job that failed.
A run function reports an expected failure by raising CommandError (or UsageError); anything else that
escapes is reported the same way, marked as unexpected. `--debug` or DECONV_EXT_DEBUG=1 adds the traceback.
"""
import argparse
import importlib
import os
import sys
import traceback

DEBUG_ENV = "DECONV_EXT_DEBUG"

# name -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("deconv_ext.info", "build and runtime information"),
    "bench": ("deconv_ext.bench", "benchmark against F.conv_transpose2d"),
    "sr": ("deconv_ext.sr.cli", "FSRCNN super-resolution: train, eval, upscale"),
}


class CommandError(Exception):
    """An expected failure of a job: main() prints the message as one line and exits with `status`."""

    status = 1


class UsageError(CommandError):
    """The command line asks for something that does not exist or does not fit."""

    status = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first) and --debug on every level."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: a sub-level parser that does not see --debug must not reset what an upper level set
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"show the traceback of a failure (or set {DEBUG_ENV}=1)")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unavailable(error):
    """run() of a subcommand whose module cannot be imported (an optional extra not installed)."""
    def run(args):
        raise CommandError(str(error)) from error
    return run


def build_parser():
    parser = Parser(prog="deconv-ext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:  # e.g. `sr` without deconv_ext[sr]: the other commands still work
            p = sub.add_parser(name, help=f"{help_text} (not available here: run it to see why)",
                               description=f"{help_text}. Not available here: {e}")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=_unavailable(e))
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _describe(e):
    """One line for an exception that is not a CommandError: (message, exit status)."""
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return "out of memory (try a smaller --tile or --batch, or another --device)", 1
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e} (check the path and its permissions)", 1
    return (f"unexpected {type(e).__name__}: {e} (this may be a bug; rerun with --debug for the traceback "
            f"and report it)"), 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args._run(args)
    except KeyboardInterrupt:
        print("deconv-ext: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`deconv-ext info | head -1`): not an error worth a line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail
        return 1
    except Exception as e:
        if debug:
            traceback.print_exc()
        message, status = (str(e), e.status) if isinstance(e, CommandError) else _describe(e)
        print(f"deconv-ext: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
