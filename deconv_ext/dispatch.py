"""Which kernel path a call takes, and forcing one (for tests, benchmarks and diagnosis).

    deconv_ext.dispatch.cpu_path(x, w, stride=3, padding=4, output_padding=2)   # "direct:avx2"
    with deconv_ext.dispatch.forced(path="gemm"):                               # every CPU call on GEMM
        ...

CPU paths (csrc/cpu/fast_paths.h): "direct" (float32, few output channels per group; vectorised with
the ISA after the colon), "gemm" (float32/float64), "generic" (every dtype). All four ops of one
configuration take the same path. A forced path that cannot serve a call (direct for float64, gemm for
bfloat16, direct with many output channels) is not taken; cpu_path() tells what is. The environment
variables DECONV_EXT_CPU_PATH and DECONV_EXT_CPU_ISA do the same as forced() for a whole process. The
CUDA backend has one path (the SIMT kernels) at present.
"""
import contextlib
import os

import torch

from . import _ops  # noqa: F401  (loads the library)
from .functional import _int, _pair

__all__ = ["CPU_PATHS", "CPU_ISAS", "cpu_path", "cpu_isas", "forced"]

CPU_PATHS = ("generic", "direct", "gemm")
CPU_ISAS = ("baseline", "avx2", "avx512")
_ENV = {"path": "DECONV_EXT_CPU_PATH", "isa": "DECONV_EXT_CPU_ISA"}


def cpu_path(input, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The CPU path (e.g. "direct:avx512", "gemm", "generic") of conv_transpose2d with these arguments and
    of its gradients. Only shapes, dtypes and the overrides matter: meta tensors are fine."""
    if input.dim() == 3:
        input = input.unsqueeze(0)
    return torch.ops.deconv_ext._cpu_path(input, weight, _pair(stride, "stride"), _pair(padding, "padding"),
                                          _pair(output_padding, "output_padding"), _int(groups, "groups"),
                                          _pair(dilation, "dilation"))


def cpu_isas():
    """The vector ISAs this CPU runs the direct kernels with, lowest first (a subset of CPU_ISAS)."""
    return list(torch.ops.deconv_ext._cpu_isas())


@contextlib.contextmanager
def forced(path=None, isa=None):
    """Within the block, CPU calls take `path` (one of CPU_PATHS, or "auto") where it can serve them, and
    the direct kernels use `isa` (one of CPU_ISAS, or "auto"; capped at what the CPU has). Not thread-safe:
    it sets the process environment."""
    if path is not None and path not in CPU_PATHS + ("auto",):
        raise ValueError(f"forced: expected path to be one of {CPU_PATHS + ('auto',)}, got {path!r}")
    if isa is not None and isa not in CPU_ISAS + ("auto",):
        raise ValueError(f"forced: expected isa to be one of {CPU_ISAS + ('auto',)}, got {isa!r}")
    saved = {k: os.environ.get(v) for k, v in _ENV.items()}
    try:
        for key, value in (("path", path), ("isa", isa)):
            if value is not None:
                os.environ[_ENV[key]] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(_ENV[key], None)
            else:
                os.environ[_ENV[key]] = value
