"""One test-case type, one list of named cases and one comparison with PyTorch, for every check of the op.

The test suite, the CUDA emulator (tools/cuda_emulation), the sanitizer and determinism scripts and the
benchmark (`deconv-ext bench`, CPU and CUDA) draw their cases from here, and judge results with `Reference`:

    case = Case("fsrcnn", N=2, C_in=56, C_out=1, H=6, W=7, kernel=9, stride=3, padding=4, output_padding=2)
    x, w, b, gy = case.tensors(torch.float32)
    ref = Reference(x, w, b, gy, **case.params)          # exact values, from F.conv_transpose2d in float64
    ref.check_all(run_ops(x, w, b, gy, case))            # AssertionError naming the op and the worst element

The tolerance rule (Reference.tolerance). Each result element is a sum of K products (K: the op's reduction
length, `Case.reduction_lengths`) computed in an accumulation type of unit roundoff u_acc (float32 for
float32, float16 and bfloat16; float64 for float64), then rounded once to the output dtype (unit roundoff
u_out). With m = the same sum taken over absolute values (the op applied to |x|, |w|, |gy|), we allow

    |ours - exact| <= u_out * |exact| + C * sqrt(K) * u_acc * m + (half the output's subnormal spacing)

with C = 4: the float32 and float64 paths stay below a quarter of that on the suite's cases, while one
dropped tap in the FSRCNN layer (K = 4537) exceeds it a thousandfold.

sqrt(K) is the typical growth of rounding errors in a sum of K terms (rounding errors of random signs);
the worst case, K * u_acc * m, is not reached by any summation order we use and would let a dropped term
pass unnoticed in long float32 sums. "exact" is F.conv_transpose2d evaluated in float64 on the very values
the kernel saw (inputs already rounded to their dtype), so input rounding is no part of the error.
"""
import dataclasses
import math
import random

import torch
import torch.nn.functional as F

__all__ = ["Case", "Reference", "run_ops", "random_cases", "GRID", "GEMM_GRID", "SUBPIXEL_GRID", "TF32_ROUNDOFF", "BENCH", "BENCH_GPU", "BENCH_QUICK", "BENCH_MEMORY",
           "UNIT_ROUNDOFF", "OPS"]

OPS = ("forward", "grad_input", "grad_weight", "grad_bias")
UNIT_ROUNDOFF = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11,
                 torch.bfloat16: 2.0 ** -8}
# Half the smallest subnormal spacing: the absolute rounding error of results too small for u_out * |exact|.
# (float64: the spacing itself, since its half underflows to 0.)
SUBNORMAL_HALF_SPACING = {torch.float64: 2.0 ** -1074, torch.float32: 2.0 ** -150, torch.float16: 2.0 ** -25,
                          torch.bfloat16: 2.0 ** -134}
TOLERANCE_C = 4.0


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of the op: sizes and every parameter of F.conv_transpose2d. `kernel`, `stride`, `padding`,
    `output_padding`, `dilation` take an int or an (H, W) pair and are stored as pairs. `group` is a label
    (e.g. "sr" for the benchmark's super-resolution shapes)."""
    name: str
    N: int
    C_in: int
    C_out: int
    H: int
    W: int
    kernel: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    output_padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    bias: bool = True
    group: str = ""

    def __post_init__(self):
        for f in ("kernel", "stride", "padding", "output_padding", "dilation"):
            object.__setattr__(self, f, _pair(getattr(self, f)))

    def __str__(self):
        return self.name

    @property
    def params(self):
        """Keyword arguments of F.conv_transpose2d / deconv_ext.conv_transpose2d."""
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    @property
    def op_args(self):
        """The trailing arguments of the torch.ops.deconv_ext.* ops."""
        return (list(self.stride), list(self.padding), list(self.output_padding), self.groups, list(self.dilation))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def output_shape(self):
        """(N, C_out, H_out, W_out), from the op's own checks and shape function (its meta kernel); None
        where the op rejects the case."""
        if self.groups <= 0 or self.C_out % self.groups:
            return None
        x = torch.empty(self.N, self.C_in, self.H, self.W, device="meta")
        w = torch.empty(self.C_in, self.C_out // self.groups, *self.kernel, device="meta")
        try:
            return tuple(torch.ops.deconv_ext.conv_transpose2d(x, w, None, *self.op_args).shape)
        except RuntimeError:
            return None

    def is_valid(self):
        return self.output_shape() is not None

    def reduction_lengths(self):
        """Most terms summed into one element of each op's result (the K of the tolerance rule)."""
        kh, kw = self.kernel
        _, _, ho, wo = self.output_shape()
        return {"forward": self.C_in // self.groups * kh * kw + 1, "grad_input": self.C_out // self.groups * kh * kw,
                "grad_weight": max(1, self.N * self.H * self.W), "grad_bias": max(1, self.N * ho * wo)}

    def flops(self):
        """2 * multiply-adds of one forward without the inserted zeros (= of each gradient)."""
        kh, kw = self.kernel
        return 2.0 * self.N * self.C_in * (self.C_out // self.groups) * kh * kw * self.H * self.W

    def tensors(self, dtype=torch.float64, device="cpu", seed=0, layout="contiguous", weight_scale=1.0):
        """x, w, b (None without bias), gy: standard normal values drawn in float64 from `seed` on the CPU,
        then rounded to `dtype`. layout: contiguous, channels_last or strided (non-unit last stride)."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.N, self.C_in, self.H, self.W, generator=gen, dtype=torch.float64)
        w = torch.randn(self.C_in, self.C_out // self.groups, *self.kernel, generator=gen, dtype=torch.float64)
        w = w * weight_scale
        b = torch.randn(self.C_out, generator=gen, dtype=torch.float64) if self.bias else None
        gy = torch.randn(self.output_shape(), generator=gen, dtype=torch.float64)
        out = [None if t is None else _to_layout(t.to(device=device, dtype=dtype), layout) for t in (x, w, b, gy)]
        return tuple(out)


def _to_layout(t, layout):
    if t.dim() != 4 or layout == "contiguous":
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], device=t.device, dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    raise ValueError(f"layout: expected contiguous, channels_last or strided, got {layout!r}")


def run_ops(x, w, b, gy, case_or_params):
    """The four ops called directly through the dispatcher: {op name: result}."""
    ops = torch.ops.deconv_ext
    if isinstance(case_or_params, Case):
        args = case_or_params.op_args
    else:
        p = case_or_params
        args = tuple(list(_pair(p.get(k, d))) for k, d in (("stride", 1), ("padding", 0), ("output_padding", 0)))
        args = args + (p.get("groups", 1), list(_pair(p.get("dilation", 1))))
    return {"forward": ops.conv_transpose2d(x, w, b, *args),
            "grad_input": ops.conv_transpose2d_grad_input(gy, w, *args),
            "grad_weight": ops.conv_transpose2d_grad_weight(gy, x, list(w.shape[2:]), *args),
            "grad_bias": ops.conv_transpose2d_grad_bias(gy)}


def _exact(x, w, b, gy, params):
    """Forward and the three gradients of F.conv_transpose2d in float64 on the CPU."""
    xs, ws = x.requires_grad_(True), w.requires_grad_(True)
    y = F.conv_transpose2d(xs, ws, b, **params)
    if y.numel() and x.numel():
        gx, gw = torch.autograd.grad(y, (xs, ws), gy, allow_unused=True)
    else:
        gx = gw = None
    gx = torch.zeros_like(x) if gx is None else gx
    gw = torch.zeros_like(w) if gw is None else gw
    return {"forward": y.detach(), "grad_input": gx, "grad_weight": gw, "grad_bias": gy.sum((0, 2, 3))}


class Reference:
    """Exact results of the four ops at (x, w, b, gy) and the magnitudes that bound rounding errors.

    Tensors may have any dtype, device and layout; the reference is computed in float64 on the CPU from
    their values. `unbatched` inputs (3-D) are not accepted here: pass the batched view.
    """

    def __init__(self, x, w, b, gy, **params):
        to64 = lambda t: None if t is None else t.detach().to("cpu", torch.float64)  # noqa: E731
        x64, w64, b64, gy64 = (to64(t) for t in (x, w, b, gy))
        self.params = params
        self.values = _exact(x64.clone(), w64.clone(), b64, gy64, params)
        self.magnitudes = _exact(x64.abs(), w64.abs(), None if b64 is None else b64.abs(), gy64.abs(), params)
        groups = params.get("groups", 1)
        kh, kw = w64.shape[2:]
        N, H, W = x64.shape[0], x64.shape[2], x64.shape[3]
        self.reduction_lengths = {"forward": x64.shape[1] // groups * kh * kw + 1,
                                  "grad_input": w64.shape[1] * kh * kw, "grad_weight": max(1, N * H * W),
                                  "grad_bias": max(1, gy64.numel() // max(1, gy64.shape[1]))}

    def tolerance(self, op, dtype, acc_dtype=None, input_roundoff=0.0):
        """Per-element allowed error of `op` computed in `dtype` (see the module docstring). A kernel that
        rounds its inputs itself (TF32: input_roundoff = 2**-11) also gets that rounding's worst case,
        2 * input_roundoff * m (each product's two factors rounded once)."""
        if acc_dtype is None:
            acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        k = self.reduction_lengths[op]
        return (UNIT_ROUNDOFF[dtype] * self.values[op].abs()
                + (TOLERANCE_C * math.sqrt(k) * UNIT_ROUNDOFF[acc_dtype] + 2 * input_roundoff) * self.magnitudes[op]
                + SUBNORMAL_HALF_SPACING[dtype])

    def error_ratio(self, op, actual, acc_dtype=None, input_roundoff=0.0):
        """max |actual - exact| / tolerance (<= 1 passes); 0 for empty results."""
        if actual.numel() == 0:
            return 0.0
        err = (actual.detach().to("cpu", torch.float64) - self.values[op]).abs()
        return (err / self.tolerance(op, actual.dtype, acc_dtype, input_roundoff)).max().item()

    def check(self, op, actual, acc_dtype=None, context="", input_roundoff=0.0):
        want = self.values[op]
        assert tuple(actual.shape) == tuple(want.shape), \
            f"{op}{context}: shape {tuple(actual.shape)}, expected {tuple(want.shape)}"
        ratio = self.error_ratio(op, actual, acc_dtype, input_roundoff)
        if not ratio <= 1.0:  # also catches NaN
            err = (actual.detach().to("cpu", torch.float64) - want).abs()
            idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
            raise AssertionError(
                f"{op}{context}: error {ratio:.3g}x the tolerance; worst element {idx}: got "
                f"{actual.detach()[idx].item():.8g}, exact {want[idx].item():.8g} "
                f"({actual.dtype}, K={self.reduction_lengths[op]}, params {self.params})")
        return ratio

    def check_all(self, results, acc_dtype=None, context=""):
        """Checks a {op name: tensor} dict (any subset of OPS); returns the worst error ratio."""
        return max([0.0] + [self.check(op, t, acc_dtype, context) for op, t in results.items()])


def random_cases(seed, count, max_cout=4, max_cin=7, max_hw=(10, 37), max_kernel=9, batch=(0, 1, 1, 2, 3)):
    """`count` valid random cases from a fixed seed (same cases every run): groups (incl. depthwise and
    channel multiplier 2), rectangular kernels, stride, dilation, padding, output_padding, bias or not."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        groups = rng.choice([1, 1, 1, 2, 3])
        cin, cout = groups * rng.randint(1, max_cin), groups * rng.randint(1, max_cout)
        if rng.random() < 0.15:  # depthwise, and channel multiplier 2
            groups = cin = rng.randint(1, 6)
            cout = cin * rng.choice([1, 2])
        s = (rng.randint(1, 4), rng.randint(1, 4))
        d = (rng.randint(1, 3), rng.randint(1, 3))
        case = Case(f"random{seed}_{len(out)}", N=rng.choice(batch), C_in=cin, C_out=cout,
                    H=rng.randint(1, max_hw[0]), W=rng.randint(1, max_hw[1]),
                    kernel=(rng.randint(1, max_kernel), rng.randint(1, max_kernel)), stride=s,
                    padding=(rng.randint(0, 4), rng.randint(0, 4)),
                    output_padding=tuple(rng.randint(0, max(s[i], d[i]) - 1) for i in range(2)),
                    dilation=d, groups=groups, bias=rng.random() < 0.5)
        if case.is_valid():
            out.append(case)
    return out


# ---- named cases ---------------------------------------------------------------------------------------
# The correctness grid: every parameter, and the awkward sizes (batch 0, 1x1 input and kernel, stride >
# kernel, dilation > stride, partial channel blocks of the CPU and CUDA kernels, long reductions).
GRID = [
    Case("basic", 2, 4, 6, 5, 4, 3, stride=2, padding=1, output_padding=(1, 0)),
    Case("rect", 1, 4, 2, 7, 5, (3, 5), stride=(2, 3), padding=(1, 2), output_padding=(1, 0)),
    Case("dilated", 2, 2, 3, 4, 4, 3, stride=2, dilation=(2, 3), output_padding=(1, 2)),
    Case("dilation_gt_stride", 1, 4, 4, 4, 4, 3, stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
         dilation=(3, 2)),
    Case("stride_gt_kernel", 2, 4, 8, 4, 3, 2, stride=4, padding=(0, 1), output_padding=(3, 0), groups=2,
         bias=False),
    Case("input_1x1", 3, 5, 7, 1, 1, (2, 3)),
    Case("kernel_1x1", 2, 3, 2, 6, 6, 1, stride=3, output_padding=2),
    Case("padding_eats_output", 2, 3, 3, 6, 6, 3, padding=3),
    Case("fsrcnn", 2, 56, 1, 6, 7, 9, stride=3, padding=4, output_padding=2, group="sr"),
    Case("fsrcnn_wide", 1, 8, 1, 3, 37, 9, stride=2, padding=4, output_padding=1, group="sr"),
    Case("rgb_out", 2, 13, 3, 5, 33, 9, stride=2, padding=4, output_padding=1),
    Case("dcgan", 2, 16, 8, 4, 4, 4, stride=2, padding=1),
    Case("unet_k2s2", 2, 16, 8, 6, 6, 2, stride=2),
    Case("k3s1", 2, 8, 12, 5, 9, 3, padding=1),
    Case("groups_tail", 2, 6, 10, 4, 5, (3, 2), stride=(3, 1), padding=(2, 0), output_padding=(2, 0),
         dilation=(1, 2), groups=2, bias=False),
    Case("depthwise", 2, 8, 8, 5, 5, 4, stride=2, padding=1, groups=8),
    Case("channel_multiplier", 1, 3, 6, 5, 5, 3, stride=(1, 2), dilation=2, groups=3),
    Case("long_reduction", 4, 3, 2, 48, 40, 3, padding=1),
    Case("batch0", 0, 4, 6, 5, 5, 3, stride=2, padding=1, output_padding=1, groups=2),
]

# The CUDA tensor-core path's tiles (64 x 64, K tile 32 or 16; csrc/cuda/igemm.cuh), with the grid above:
# M, N and K past one tile with tails, phases with different tap counts, phases no tap reaches, a
# grad_weight split into 4 parts, groups.
GEMM_GRID = [
    Case("gemm_tiles_tails", 2, 21, 70, 6, 9, 3, stride=2, padding=1, output_padding=1),
    Case("gemm_phases_dilated", 1, 18, 20, 5, 7, (3, 4), stride=(3, 2), padding=(2, 1), output_padding=(1, 1),
         dilation=(2, 1)),
    Case("gemm_no_tap_phases", 2, 17, 19, 4, 5, 2, stride=3, padding=(0, 1), output_padding=(2, 1)),
    Case("gemm_split_k", 2, 20, 18, 16, 16, 2, stride=2),
    Case("gemm_groups", 2, 36, 34, 5, 6, 3, stride=2, padding=1, groups=2, bias=False),
]
# The CUDA sub-pixel forward (csrc/cuda/forward_subpixel.cu; C_out <= 4, square stride 2-4): strides 2, 3, 4,
# tiles of 8 x 32 low-resolution positions with tails in both directions, input-channel chunks of 8 with a
# tail, 1 to 4 output channels, kernel 11, phases no tap reaches, no bias.
SUBPIXEL_GRID = [
    Case("subpixel_x4_rgba", 2, 13, 4, 5, 37, 9, stride=4, padding=4, output_padding=3),
    Case("subpixel_x2_k11", 1, 9, 2, 11, 9, 11, stride=2, padding=5, output_padding=1, bias=False),
    Case("subpixel_x3_no_tap_phases", 2, 10, 1, 9, 20, 2, stride=3),
    Case("subpixel_tall", 1, 3, 3, 20, 3, 4, stride=2, padding=1),
]
# TF32 (the GEMM path's float32) rounds inputs to 10 mantissa bits: Reference.check(input_roundoff=...).
TF32_ROUNDOFF = 2.0 ** -11

# The benchmark shapes of `deconv-ext bench --device cpu`. Group "sr": the super-resolution last layers.
BENCH = [
    # FSRCNN last layer (d=56 -> 1, k9, stride=scale, padding 4, output_padding scale-1), 256x256 LR input
    Case("fsrcnn_x2", 1, 56, 1, 256, 256, 9, 2, 4, 1, group="sr"),
    Case("fsrcnn_x3", 1, 56, 1, 256, 256, 9, 3, 4, 2, group="sr"),
    Case("fsrcnn_x4", 1, 56, 1, 192, 192, 9, 4, 4, 3, group="sr"),
    # FSRCNN-s (d=32), and a training-style batch of small patches
    Case("fsrcnn_s_x2", 1, 32, 1, 256, 256, 9, 2, 4, 1, group="sr"),
    Case("fsrcnn_s_x3", 1, 32, 1, 256, 256, 9, 3, 4, 2, group="sr"),
    Case("fsrcnn_s_x4", 1, 32, 1, 192, 192, 9, 4, 4, 3, group="sr"),
    Case("fsrcnn_x3_b16", 16, 56, 1, 48, 48, 9, 3, 4, 2, group="sr"),
    Case("fsrcnn_rgb_x2", 1, 64, 3, 128, 128, 9, 2, 4, 1, group="sr"),
    # DCGAN generator layers (k4 s2 p1), batch 32
    Case("dcgan_512_256", 32, 512, 256, 8, 8, 4, 2, 1, group="other"),
    Case("dcgan_128_64", 32, 128, 64, 16, 16, 4, 2, 1, group="other"),
    Case("dcgan_64_3", 32, 64, 3, 32, 32, 4, 2, 1, group="other"),
    # U-Net style 2x upsampling (k2 s2), 3x3 stride 1, depthwise k4 s2, dilated k3 d2
    Case("unet_k2s2", 4, 128, 64, 32, 32, 2, 2, 0, group="other"),
    Case("k3s1", 4, 64, 64, 32, 32, 3, 1, 1, group="other"),
    Case("depthwise", 4, 64, 64, 64, 64, 4, 2, 1, groups=64, group="other"),
    Case("dilated", 4, 64, 64, 32, 32, 3, 1, 2, dilation=2, group="other"),
]
# The shapes of `deconv-ext bench --device cuda`: GPU-sized batches and images. Names say what each is:
# layer, C_in_C_out, input HxW, batch.
BENCH_GPU = [
    # FSRCNN last layer (d=56 -> 1, k9, stride=scale, padding 4, output_padding scale-1) on a whole LR image
    # (400x480, batch 1: inference) and on training batches of 16 96x96 patches
    Case("fsrcnn_x2_400x480_b1", 1, 56, 1, 400, 480, 9, 2, 4, 1, group="sr"),
    Case("fsrcnn_x3_400x480_b1", 1, 56, 1, 400, 480, 9, 3, 4, 2, group="sr"),
    Case("fsrcnn_x4_400x480_b1", 1, 56, 1, 400, 480, 9, 4, 4, 3, group="sr"),
    Case("fsrcnn_x2_96x96_b16", 16, 56, 1, 96, 96, 9, 2, 4, 1, group="sr"),
    Case("fsrcnn_x3_96x96_b16", 16, 56, 1, 96, 96, 9, 3, 4, 2, group="sr"),
    Case("fsrcnn_x4_96x96_b16", 16, 56, 1, 96, 96, 9, 4, 4, 3, group="sr"),
    # RGB output (64 -> 3, k9 s2 p4 op1) on a whole LR image
    Case("rgb_k9s2_64_3_400x480_b1", 1, 64, 3, 400, 480, 9, 2, 4, 1, group="sr"),
    # DCGAN generator layers (k4 s2 p1), batch 64
    Case("dcgan_1024_512_4x4_b64", 64, 1024, 512, 4, 4, 4, 2, 1, group="other"),
    Case("dcgan_256_128_16x16_b64", 64, 256, 128, 16, 16, 4, 2, 1, group="other"),
    # U-Net 2x upsampling (k2 s2), a decoder k3 s2 p1 op1, and 3x3 stride 1 (ResNet-sized 56x56), batch 8
    Case("unet_k2s2_512_256_32x32_b8", 8, 512, 256, 32, 32, 2, 2, 0, group="other"),
    Case("decoder_k3s2_128_64_64x64_b8", 8, 128, 64, 64, 64, 3, 2, 1, 1, group="other"),
    Case("k3s1_128_128_56x56_b8", 8, 128, 128, 56, 56, 3, 1, 1, group="other"),
]
# Tiny versions for --quick (a smoke test of the runners, not a measurement).
BENCH_QUICK = [
    Case("fsrcnn_x3", 1, 8, 1, 12, 12, 9, 3, 4, 2, group="sr"),
    Case("dcgan_128_64", 2, 16, 8, 4, 4, 4, 2, 1, group="other"),
    Case("depthwise", 2, 4, 4, 8, 8, 4, 2, 1, groups=4, group="other"),
]
# The peak-memory case of the benchmarks.
BENCH_MEMORY = Case("fsrcnn_x3_large", 1, 56, 1, 512, 512, 9, 3, 4, 2, group="sr")
