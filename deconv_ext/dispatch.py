"""Which kernel path a call takes, and forcing one (for tests, benchmarks and diagnosis).

    deconv_ext.dispatch.cpu_path(x, w, stride=3, padding=4, output_padding=2)   # "direct:avx2"
    with deconv_ext.dispatch.forced(path="gemm"):                               # every CPU call on GEMM
        ...

CPU paths (csrc/cpu/fast_paths.h): "direct" (float32, few output channels per group; vectorised with
the ISA after the colon), "gemm" (float32/float64), "generic" (every dtype). All four ops of one
configuration take the same path. A forced path that cannot serve a call (direct for float64, gemm for
bfloat16, direct with many output channels) is not taken; cpu_path() tells what is. The environment
variables DECONV_EXT_CPU_PATH and DECONV_EXT_CPU_ISA do the same as forced() for a whole process.
With no path forced, direct-path configurations with 16+ input channels per group run some ops on the
gemm kernels where those are faster: the forward of narrow images (cpu_path then reads e.g.
"direct:avx512 (forward: gemm)"), the NCHW grad_input with 48+ input channels per group ("direct:avx512
(forward: gemm, grad_input: gemm)"), and with native bfloat16 GEMMs every NCHW bfloat16 op ("gemm:avx512_bf16").
The gemm path's forward has two formulations (GEMM + col2im "scatter", or one GEMM per output "phase"),
picked by channel counts; forced(gemm_forward=...) or DECONV_EXT_CPU_GEMM_FORWARD forces one.

CUDA (builds with CUDA kernels): cuda_path() names the path, DECONV_EXT_CUDA_PATH (or forced(cuda_path=...))
forces one: "gemm" (tensor cores: float16, bfloat16, float32 as TF32 when torch.backends.cudnn.allow_tf32 is
True; sm_80+), "subpixel" (the forward of layers with C_out <= 4 and a square stride 2-4; gradients as simt)
or "simt" (every dtype). The rule and its reasons: csrc/cuda/conv_transpose2d.cu.
"""
import contextlib
import os

import torch

from . import _ops  # noqa: F401  (loads the library)
from .functional import _int, _pair

__all__ = ["CPU_PATHS", "CPU_ISAS", "CUDA_PATHS", "GEMM_FORWARDS", "cpu_path", "cpu_isas", "cpu_bf16_gemm", "cuda_path",
           "forced"]

CPU_PATHS = ("generic", "direct", "gemm")
CPU_ISAS = ("baseline", "avx2", "avx512")
CUDA_PATHS = ("simt", "gemm", "subpixel")
GEMM_FORWARDS = ("scatter", "phase")
_ENV = {"path": "DECONV_EXT_CPU_PATH", "isa": "DECONV_EXT_CPU_ISA", "cuda_path": "DECONV_EXT_CUDA_PATH",
        "gemm_forward": "DECONV_EXT_CPU_GEMM_FORWARD"}
_CHOICES = {"path": CPU_PATHS, "isa": CPU_ISAS, "cuda_path": CUDA_PATHS, "gemm_forward": GEMM_FORWARDS}


def _args(input, weight, stride, padding, output_padding, groups, dilation):
    if input.dim() == 3:
        input = input.unsqueeze(0)
    return (input, weight, _pair(stride, "stride"), _pair(padding, "padding"),
            _pair(output_padding, "output_padding"), _int(groups, "groups"), _pair(dilation, "dilation"))


def cpu_path(input, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The CPU path (e.g. "direct:avx512", "gemm", "generic") of conv_transpose2d with these arguments and
    of its gradients; "direct:avx512 (forward: gemm)" when the forward alone runs on the gemm kernels,
    "direct:avx512 (forward: gemm, grad_input: gemm)" when grad_input does too (grad_weight's path first). Only
    shapes, dtypes, the input's layout and the overrides matter: meta tensors are fine."""
    return torch.ops.deconv_ext._cpu_path(*_args(input, weight, stride, padding, output_padding, groups, dilation))


def cuda_path(input, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1, capability=None):
    """The CUDA path (one of CUDA_PATHS) of conv_transpose2d with these arguments and of its gradients, on the
    current GPU or, given `capability` (e.g. (9, 0)), on a GPU of that compute capability; RuntimeError if
    this build has no CUDA kernels. Meta tensors are fine."""
    if not hasattr(torch.ops.deconv_ext, "_cuda_path"):
        raise RuntimeError("deconv_ext was built without CUDA kernels (see `deconv-ext info`)")
    cap = None if capability is None else int(capability[0]) * 10 + int(capability[1])
    return torch.ops.deconv_ext._cuda_path(*_args(input, weight, stride, padding, output_padding, groups, dilation),
                                           cap)


def cpu_isas():
    """The vector ISAs this CPU runs the direct kernels with, lowest first (a subset of CPU_ISAS)."""
    return list(torch.ops.deconv_ext._cpu_isas())


def cpu_bf16_gemm():
    """What runs the CPU gemm tiles' bfloat16 products: "amx" (AMX tiles), "avx512_bf16" (AVX512-BF16 dot
    products) or "" (none: bfloat16 is widened to float32)."""
    return str(torch.ops.deconv_ext._cpu_bf16_gemm())


@contextlib.contextmanager
def forced(path=None, isa=None, cuda_path=None, gemm_forward=None):
    """Within the block, CPU calls take `path` (one of CPU_PATHS, or "auto") where it can serve them, and
    the direct kernels use `isa` (one of CPU_ISAS, or "auto"; capped at what the CPU has); the gemm path's
    tiled forward runs as `gemm_forward` (one of GEMM_FORWARDS, or "auto"); CUDA calls take `cuda_path`
    (one of CUDA_PATHS or "auto"). Not thread-safe: it sets the process environment."""
    values = {"path": path, "isa": isa, "cuda_path": cuda_path, "gemm_forward": gemm_forward}
    for key, value in values.items():
        allowed = _CHOICES[key] + ("auto",)
        if value is not None and value not in allowed:
            raise ValueError(f"forced: expected {key} to be one of {allowed}, got {value!r}")
    saved = {k: os.environ.get(v) for k, v in _ENV.items()}
    try:
        for key, value in values.items():
            if value is not None:
                os.environ[_ENV[key]] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(_ENV[key], None)
            else:
                os.environ[_ENV[key]] = value
