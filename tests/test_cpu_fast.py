"""Every CPU path (generic, direct, gemm) and every vector ISA this CPU has, forced onto the correctness cases
and judged against F.conv_transpose2d with deconv_ext.testing.Reference; the dispatch rule at its
boundaries; bitwise determinism run to run and across thread counts.

A path or ISA that this machine cannot run is reported as skipped, by name.
"""
import pytest
import torch

import deconv_ext

from deconv_ext import dispatch
from deconv_ext.testing import GRID, Case, Reference, random_cases, run_ops

ISAS = dispatch.cpu_isas()
# Random cases from fixed seeds: few output channels (the direct path's domain), more input channels
# (partial channel blocks of the direct backward), many channels (gemm).
RANDOM_FEW = random_cases(11, 20, max_cout=4, max_cin=7)
RANDOM_BLOCKS = random_cases(12, 15, max_cout=4, max_cin=12)
RANDOM_MANY = random_cases(13, 15, max_cout=12, max_cin=12)

# Shapes at the direct kernels' blocking boundaries: W not a multiple of 8/16 lanes, strips with a tail,
# channel blocks of 8 + 4 + 1, one-pixel rows, rows of whole vectors (grad_weight reads x in place).
BLOCKS = [
    Case("fsrcnn_x3_w37", 2, 56, 1, 13, 37, 9, 3, 4, 2),
    Case("fsrcnn_s_x4", 2, 32, 1, 7, 17, 9, 4, 4, 3),
    Case("rgb_w33", 2, 64, 3, 9, 33, 9, 2, 4, 1),
    Case("wide_rows", 2, 5, 4, 6, 129, 4, 2, 1),
    Case("cin9", 2, 9, 1, 4, 17, 9, 3, 4, 2),
    Case("cin13_cout2", 2, 13, 2, 3, 7, 9, 2, 4, 1),
    Case("partial_block", 2, 6, 3, 2, 33, 5, 4, 2, 3),
    Case("one_pixel_rows", 2, 17, 4, 2, 1, 3, 2, 1, 1),
    Case("two_groups_of_12", 2, 24, 2, 3, 15, 9, 3, 4, 2, groups=2),
    Case("two_full_blocks", 2, 16, 1, 2, 40, 9, 4, 4, 3),
    Case("whole_vectors", 2, 5, 2, 3, 32, 9, 2, 4, 1),
    Case("row_blocks", 2, 8, 1, 20, 70, 9, 3, 4, 2),
    Case("gemm_chunks", 2, 3, 8, 40, 41, 9, 2, 4, 1),  # column buffer above 1M: chunks of rows of one image
    Case("strips_of_3", 1, 8, 1, 3, 48, 9, 2, 4, 1),    # forward phase rows of 48: strips of 3 (or 6) vectors
    Case("strips_of_6", 1, 6, 1, 2, 192, 9, 4, 4, 3),   # 192 outputs per phase: 2 strips of 6 (AVX-512)
    Case("two_channel_strips_of_3", 1, 4, 2, 2, 96, 5, 2, 2, 1),
    Case("cin30_k11", 2, 30, 2, 4, 23, 11, 3, 5, 2),    # grad_input blocks 16 + 8 + 4 + 2; 11 taps: 6 + 5
    # the forward of one output channel with every column phase per strip (strides 2-4, dW = 1)
    Case("all_phases_k2_s3", 2, 5, 1, 3, 20, 2, 3, 0, 2),         # phase 2 has no tap: bias only
    Case("all_phases_s4_wide", 1, 7, 1, 2, 150, 11, 4, 5, 3),    # 3 shifts, several strips, first m > 0
    Case("all_phases_groups", 2, 6, 2, 3, 33, 5, 2, 2, 1, groups=2),  # one output channel per group
    Case("all_phases_rect", 1, 4, 1, 5, 40, (3, 7), (2, 3), (1, 3), (1, 2)),
    Case("all_phases_3_channels", 2, 6, 3, 3, 37, 9, 2, 4, 1),
    Case("all_phases_2_channels_s3", 2, 4, 2, 3, 41, 5, 3, 1, 2),
    Case("all_phases_4_channels_s4", 1, 5, 4, 2, 50, 7, 4, 3, 2),  # AVX2: no kernel fits, the strips serve
]
CASES = GRID + BLOCKS + RANDOM_FEW + RANDOM_BLOCKS + RANDOM_MANY


def _serves(path, case, dtype):
    """Whether a forced `path` can serve the case (the rule of cpu::choose_path; the half types run the
    float32 paths on widened operands)."""
    if path in ("generic", "gemm"):
        return True
    return dtype != torch.float64 and case.C_out // case.groups <= 4


@pytest.fixture(params=["generic", "direct", "gemm"])
def path(request):
    with dispatch.forced(path=request.param):
        yield request.param


@pytest.fixture(params=["avx512", "avx2", "baseline"])
def isa(request):
    if request.param not in ISAS:
        pytest.skip(f"ISA {request.param} not available on this CPU (it has {', '.join(ISAS)})")
    with dispatch.forced(isa=request.param):
        yield request.param


def _check_on_path(case, dtype, path, seed=0, layout="contiguous"):
    x, w, b, gy = case.tensors(dtype, seed=seed, layout=layout)
    taken = dispatch.cpu_path(x, w, **case.params)
    assert taken.split(":")[0] == (path if _serves(path, case, dtype) else taken.split(":")[0])
    Reference(x, w, b, gy, **case.params).check_all(run_ops(x, w, b, gy, case), context=f" [{case} on {taken}]")
    return taken


def _at_thread_counts(fn, *counts):
    """[fn() at each torch thread count in `counts`], the thread count restored afterwards."""
    old = torch.get_num_threads()
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(fn())
        return results
    finally:
        torch.set_num_threads(old)


DTYPE_IDS = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}


# Every (path, dtype, case) the path can serve; the rest are not generated (the forcing rule says which).
# The half types on the correctness grid and the blocking cases.
@pytest.mark.parametrize("path_name,dtype,case", [
    pytest.param(p, dt, c, id=f"{p}-{DTYPE_IDS[dt]}-{c}")
    for p in dispatch.CPU_PATHS for dt in DTYPE_IDS
    for c in (CASES if dt in (torch.float32, torch.float64) else GRID + BLOCKS) if _serves(p, c, dt)])
def test_every_path(path_name, dtype, case):
    with dispatch.forced(path=path_name):
        _check_on_path(case, dtype, path_name, seed=1)


@pytest.mark.parametrize("case", [c for c in GRID + BLOCKS + RANDOM_BLOCKS if _serves("direct", c, torch.float32)],
                         ids=str)
def test_direct_on_every_isa(case, isa):
    with dispatch.forced(path="direct"):
        assert _check_on_path(case, torch.float32, "direct", seed=2) == f"direct:{isa}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("case", GRID + RANDOM_FEW[:8], ids=str)
def test_half_types_on_generic(case, dtype):
    with dispatch.forced(path="generic"):
        assert _check_on_path(case, dtype, "generic", seed=3) == "generic"


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("case", [GRID[0], BLOCKS[0], BLOCKS[-1]], ids=str)
def test_layouts_on_every_path(case, layout, path):
    if not _serves(path, case, torch.float32):
        pytest.skip(f"the {path} path does not serve this case")
    _check_on_path(case, torch.float32, path, seed=4, layout=layout)


# channels_last images on the gemm path go to gemm_nhwc.cpp as they are (csrc/cpu/gemm_nhwc.cpp); with one
# output channel float32 x is transposed to NCHW for the NCHW tiles (8 x 8 register blocks and a rest).
ONE_CHANNEL = [BLOCKS[0], Case("one_channel_cin5", 2, 5, 1, 4, 11, 4, 2, 1),
               Case("one_channel_cin20", 1, 20, 1, 6, 19, 5, 3, 2, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("case", GRID + RANDOM_MANY + ONE_CHANNEL, ids=str)
def test_channels_last_on_gemm(case, dtype):
    with dispatch.forced(path="gemm"):
        assert _check_on_path(case, dtype, "gemm", seed=6, layout="channels_last").split(":")[0] == "gemm"


def _image_copies(case, path):
    """The 4-D copies (clone / copy_ of an image-shaped tensor) the forward and both gradients make on
    channels_last inputs."""
    x, w, b, gy = case.tensors(torch.float32, layout="channels_last")
    with dispatch.forced(path=path), torch.profiler.profile(record_shapes=True) as prof:
        run_ops(x, w, b, gy, case)
    images = {tuple(x.shape), tuple(gy.shape)}
    return [e.name for e in prof.events() if e.name in ("aten::clone", "aten::copy_", "aten::contiguous")
            and any(tuple(shape) in images for shape in e.input_shapes if shape)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_grad_bias_of_channels_last_is_bitwise_the_nchw_one(dtype):
    gy = torch.randn(3, 7, 97, 101, dtype=torch.float64).to(dtype)  # 9797 pixels: two blocks and a tail
    ours = torch.ops.deconv_ext.conv_transpose2d_grad_bias
    assert torch.equal(ours(gy.contiguous(memory_format=torch.channels_last)), ours(gy))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_channels_last_gemm_is_bitwise_reproducible(dtype):
    case = Case("cl_chunks", 3, 24, 20, 64, 64, 4, stride=2, padding=1)  # rows of each image in 2 chunks
    x, w, b, gy = case.tensors(dtype, seed=7, layout="channels_last")
    with dispatch.forced(path="gemm"):
        first, again = run_ops(x, w, b, gy, case), run_ops(x, w, b, gy, case)
    for op_name in first:
        assert torch.equal(first[op_name], again[op_name]), op_name


def test_channels_last_has_no_layout_round_trip():
    case = Case("cl", 2, 24, 20, 6, 7, 3, stride=2, padding=1, output_padding=1)
    assert _image_copies(case, "gemm") == []
    assert _image_copies(case, "generic") != []  # the NCHW-only path converts: the probe sees copies


# bfloat16 on the gemm path: bfloat16 GEMMs with float32 results (csrc/cpu/gemm_tiles.cpp) where the CPU has
# AVX512-BF16, else -- and whenever the ISA is capped below avx512 -- float32 GEMMs on widened operands.
# Both must meet the same contract. Odd GEMM sizes on purpose: K padded to even, partial blocks, tiles
# split inside image rows, taps split into K blocks (grad_input).
def _bf16_native_here():
    meta = dict(dtype=torch.bfloat16, device="meta")
    return dispatch.cpu_path(torch.empty(1, 16, 2, 2, **meta), torch.empty(16, 16, 3, 3, **meta)).endswith("avx512_bf16")


BF16_NATIVE = _bf16_native_here()
BF16_ON_AMX = dispatch.cpu_bf16_gemm() == "amx"  # one-channel bfloat16 forwards then on the tiles
BF16_CASES = [
    Case("odd_sizes", 1, 9, 5, 5, 7, 3, 2, 1, 0),             # cin 9, 45 taps, 35 pixels: every K odd
    Case("blocks", 2, 40, 70, 9, 17, 4, 2, 1),                # C (and Z) larger than one 64 x 128 block
    Case("grouped", 3, 10, 14, 5, 3, 3, 1, 1, groups=2),
    Case("dilated", 2, 24, 16, 6, 5, 3, 1, 2, dilation=2),
    Case("long_rows", 1, 8, 6, 3, 300, 4, 2, 1),             # 900 pixels: tiles of 256 split rows
    Case("many_taps", 1, 6, 70, 3, 5, 5, 2, 2, 1),            # 1750 taps: grad_input's K in blocks
    Case("odd_wide_cin", 1, 513, 7, 3, 5, 3, 2, 1),          # channels_last bfloat16: x rows copied, K padded
    Case("gaps", 2, 20, 18, 4, 5, 2, 4, 0, 3),                # stride > kernel: outputs no tap reaches
    Case("dw_multiplier", 2, 16, 32, 6, 6, 3, 1, 1, groups=16),
]


# The gemm path's routes: NCHW float32 on the tiled kernels (ISA avx2 and up) or at::mm (baseline);
# bfloat16 native (avx512 with AVX512-BF16) or widened to float32 (then tiled or at::mm); channels_last on
# gemm_nhwc.cpp.
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("cap", ["avx512", "avx2", "baseline"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", BF16_CASES + GRID + RANDOM_MANY, ids=str)
def test_gemm_routes(case, dtype, cap, layout):
    if cap not in ISAS:
        pytest.skip(f"ISA {cap} not available on this CPU")
    with dispatch.forced(path="gemm", isa=cap):
        taken = _check_on_path(case, dtype, "gemm", seed=8, layout=layout)
    native = dtype == torch.bfloat16 and BF16_NATIVE and cap == "avx512"
    assert taken == ("gemm:avx512_bf16" if native else "gemm")


# The tiled forward's two formulations (GEMM + col2im scatter; one GEMM per output phase, x gathered
# shifted or read in place, y stored once), each forced, on both layouts and both tiled dtypes; with stride 1
# grad_input runs as such a forward too (flipped kernel, padding d(k-1) - p, which padding > d(k-1) makes
# negative). The shapes add phases without taps (stride > kernel), stride 1 with x read in place,
# whole-row phases (k2s2), groups.
PHASE_CASES = BF16_CASES + [
    Case("k2s2_rows", 2, 16, 24, 8, 8, 2, 2),                  # every tap's block lies inside x: read in place
    Case("k3s1_wide", 2, 16, 24, 9, 7, 3, 1, 1),
    Case("k1", 1, 17, 20, 6, 5, 1),
    Case("k4s2_groups", 1, 32, 40, 12, 12, 4, 2, 1, groups=2),
    Case("k2s3_gaps", 2, 12, 20, 5, 6, 2, 3, (0, 1), (2, 1)),  # phases no tap reaches: bias only
    Case("k3s1_dilated_pad", 2, 15, 33, 10, 11, 3, 1, 2, dilation=2),
    Case("big_tiles", 1, 8, 16, 40, 40, 3, 2, 1, 1),            # a phase larger than one block of pixels
    Case("pad_past_kernel", 2, 12, 10, 9, 10, 3, 1, 3),         # stride 1, padding 3 > d(k-1): negative
    Case("s1_stretched", 1, 20, 12, 7, 6, (2, 4), 1, (1, 0), dilation=(3, 1)),
    # channels_last float32 with rows of 16+ pixels: column taps stacked into one GEMM per row tap
    Case("stacked_k3s1", 2, 16, 24, 5, 20, 3, 1, 1),
    Case("stacked_k4s2", 1, 24, 20, 4, 17, 4, 2, 1),
    Case("stacked_no_tap_phase", 1, 8, 12, 3, 17, 4, 2, 1, dilation=2),  # column phase 1: bias only
    Case("stacked_wide_cout", 1, 6, 300, 2, 18, 3, 1, 1),                # C_out in blocks of 256
    Case("stacked_pad_past_kernel", 1, 12, 10, 8, 20, 3, 1, 3),          # grad_input: padding -1
    # bfloat16 stacks for any row length (several short rows per GEMM), NCHW too; y is stored transposed
    Case("stacked_short_rows", 3, 10, 9, 6, 5, 3, 1, 1),
    Case("stacked_long_rows", 1, 8, 10, 3, 140, 3, 1, 1),              # rows in segments of a block
    Case("stacked_k6s3", 1, 10, 9, 4, 18, 6, 3, 2, 1),                  # stride 3: stored one value at a time
    Case("stacked_k4s2_odd", 2, 12, 16, 5, 19, 4, 2, 1, 1),             # interleaved phases of unequal counts
    Case("stacked_odd_cin", 1, 15, 8, 4, 20, 3, 1, 1),                  # bfloat16: not stacked (pairs of rows)
    # column dilation: the taps of a phase read columns g = dW / gcd(sW, dW) apart, stacked from a copy of x
    # whose columns are split into g classes; y's columns come in g groups
    Case("stacked_dilated", 2, 10, 12, 5, 37, 3, 1, 2, dilation=2),
    Case("stacked_dilated_s2", 1, 8, 9, 4, 40, 3, 2, 2, 1, dilation=3),
    # NCHW strided grad_input as the stacked correlation of gy (16+ input and output channels)
    Case("stacked_gi_k3s2", 2, 16, 18, 5, 16, 3, 2, 1, 1),
    Case("stacked_gi_k5s3_pad", 1, 20, 17, 3, 21, (3, 5), (2, 3), (0, 4), (1, 2)),  # odd C_out: bf16 keeps the tiles
    Case("stacked_gi_short_rows", 2, 16, 20, 5, 7, 4, 2, 1),                    # rows of 7: GEMMs span rows
    Case("stacked_gi_s3_rows", 1, 18, 16, 4, 9, (4, 3), 3, (2, 1), (1, 0)),     # row classes of stride 3
    # kernel == stride: the taps tile the output (the scatter stores instead of adding: channels_last, NCHW float32)
    Case("tiling_odd_cin_wide_cout", 1, 7, 300, 3, 5, 2, 2),
    Case("tiling_1x3_groups", 2, 6, 10, 4, 3, (1, 3), (1, 3), groups=2),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("forward", ["scatter", "phase"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", PHASE_CASES + GRID + RANDOM_MANY, ids=str)
def test_gemm_forward_formulations(case, dtype, forward, layout):
    x, w, b, gy = case.tensors(dtype, seed=11, layout=layout)
    with dispatch.forced(path="gemm", gemm_forward=forward):
        results = {"forward": torch.ops.deconv_ext.conv_transpose2d(x, w, b, *case.op_args),
                   "grad_input": torch.ops.deconv_ext.conv_transpose2d_grad_input(gy, w, *case.op_args)}
    Reference(x, w, b, gy, **case.params).check_all(results, context=f" [{case}, {forward}]")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", ["stacked_pad_past_kernel", "stacked_k4s2_odd"])
def test_gemm_forward_formulations_agree_bitwise_across_threads(name, dtype, layout):
    case = next(c for c in PHASE_CASES if c.name == name)
    x, w, b, gy = case.tensors(dtype, seed=12, layout=layout)
    with dispatch.forced(path="gemm", gemm_forward="phase"):
        one, two = _at_thread_counts(lambda: deconv_ext.conv_transpose2d(x, w, b, **case.params), 1, 2)
    assert torch.equal(one, two)


# The NCHW tiled forward (GEMM + col2im) in bands of input rows where it has fewer than 8 (image, channel
# block) tasks: the even bands, then the odd ones, adding to shared planes (the deinterleaved copy where a
# column gets several taps of a row, y itself at stride 1, stores where the taps tile the output).
BANDS_CASES = [
    Case("bands_sr_x3", 1, 16, 1, 37, 21, 9, 3, 4, 2),
    Case("bands_stride_1", 1, 16, 3, 23, 10, 5, 1, 2),
    Case("bands_dilated_rows", 2, 8, 2, 19, 9, (3, 2), (2, 3), 1, 1, dilation=(3, 1)),
    Case("bands_tiling", 1, 12, 5, 17, 6, 2, 2),
    Case("bands_groups", 1, 8, 4, 18, 7, 4, 2, 1, groups=2),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", BANDS_CASES, ids=str)
def test_tiled_forward_in_row_bands(case, dtype):
    x, w, b, gy = case.tensors(dtype, seed=9)
    with dispatch.forced(path="gemm", gemm_forward="scatter"):
        one, two = _at_thread_counts(lambda: deconv_ext.conv_transpose2d(x, w, b, **case.params), 1, 2)
        _check_on_path(case, dtype, "gemm", seed=9)
    assert torch.equal(one, two)


# grad_weight on gy's stride-phase planes, built per task and image (NCHW: kernel > stride, 16+ output
# channels, rows of 16+, or stride 1; channels_last float32: stride 1): taps of a phase shifted within its
# planes, negative shifts (padding past the kernel), dilation, output_padding, groups, odd widths (the
# stride-2 column split's partial vectors).
PLANES_CASES = [
    Case("planes_k4s2", 2, 12, 16, 5, 16, 4, 2, 1),
    Case("planes_k5s3_dilated", 1, 8, 17, 4, 18, 5, 3, 4, 2, dilation=(1, 2)),
    Case("planes_k3s2_op_wide", 2, 10, 20, 6, 17, (3, 4), 2, (2, 1), 1),
    Case("planes_k4s2_odd_out", 2, 9, 17, 3, 21, 4, 2, 1, 1),
    Case("planes_k3s1_groups", 2, 18, 34, 5, 19, 3, 1, 1, groups=2),
    Case("planes_k5s1_dilated", 1, 8, 16, 6, 17, 5, 1, (4, 1), dilation=(2, 1)),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", PLANES_CASES, ids=str)
def test_grad_weight_on_stride_planes(case, dtype, layout):
    with dispatch.forced(path="gemm"):
        _check_on_path(case, dtype, "gemm", seed=5, layout=layout)


# The stacked GEMMs in rounds of images where the padded NHWC copy exceeds 4 MB: each round's copy made
# before its blocks read it. A forward at stride 1 (one image per round), a strided grad_input's
# correlation (gy's row classes), a column-dilated forward (column classes), channels_last included.
ROUNDS_CASES = [
    Case("rounds_k3s1", 9, 64, 16, 70, 72, 3, 1, 1),
    Case("rounds_k4s2_grad_input", 9, 16, 64, 36, 35, 4, 2, 1),
    Case("rounds_k3_dilated", 7, 80, 16, 66, 66, 3, 1, 2, dilation=(1, 2)),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", ROUNDS_CASES, ids=str)
def test_stacked_in_rounds_of_images(case, dtype, layout):
    with dispatch.forced(path="gemm", gemm_forward="phase"):
        _check_on_path(case, dtype, "gemm", seed=4, layout=layout)
        x, w, b, gy = case.tensors(dtype, seed=4, layout=layout)
        one, two = _at_thread_counts(lambda: [deconv_ext.conv_transpose2d(x, w, b, **case.params),
                                              torch.ops.deconv_ext.conv_transpose2d_grad_input(gy, w, *case.op_args)],
                                     1, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


# float32 grad_weight with few output channels on the tiles, all taps at once in slices of the pixels (NCHW
# and channels_last): blocks of whole rows or, for rows longer than a block (300 pixels against 272 for 144
# taps), of parts of a row; slices of unequal counts of blocks (36 blocks in 18 slices of 2), gathers from
# the deinterleaved gy or straight from it (stride 1), groups, dilation. Run twice: a partial left unwritten
# once read the previous call's memory.
SLICES_CASES = [
    Case("slices_rows_of_300", 3, 20, 4, 10, 300, (9, 4), (2, 3), (7, 1), 1, dilation=(1, 2)),
    Case("slices_sr_x4", 2, 16, 1, 9, 40, 9, 4, 4, 3),
    Case("slices_stride_1_groups", 2, 34, 4, 5, 33, 3, 1, 1, groups=2),
    Case("slices_one_block", 1, 17, 2, 2, 7, 5, 2, 2, 1),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", SLICES_CASES, ids=str)
def test_grad_weight_in_slices(case, layout):
    with dispatch.forced(path="gemm"):
        for seed in (6, 7):
            _check_on_path(case, torch.float32, "gemm", seed=seed, layout=layout)
        x, w, b, gy = case.tensors(torch.float32, seed=8, layout=layout)
        one, two = _at_thread_counts(
            lambda: torch.ops.deconv_ext.conv_transpose2d_grad_weight(gy, x, list(case.kernel), *case.op_args), 1, 2)
    assert torch.equal(one, two)


# PyTorch's own bfloat16 convolutions (oneDNN; on the AMX tiles where the CPU has them) release the tiles
# when they finish. Our next bfloat16 GEMM must configure them again: it once ran on released tiles, an
# illegal instruction that kills the process, hence the subprocess.
_AFTER_PYTORCH_BF16 = """
import torch, torch.nn.functional as F, deconv_ext
from deconv_ext import dispatch
torch.set_num_threads({threads})
torch.manual_seed(0)
x = torch.randn(4, 64, 12, 12, dtype=torch.bfloat16)
w = torch.randn(64, 48, 4, 4, dtype=torch.bfloat16) * 0.1
for _ in range(3):
    ref = F.conv_transpose2d(x, w, stride=2, padding=1)
    with dispatch.forced(path="gemm"):
        ours = deconv_ext.conv_transpose2d(x, w, stride=2, padding=1)
    assert (ours.float() - ref.float()).abs().max().item() < 0.1
print("ok")
"""


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU has no AVX512-BF16 (bfloat16 takes widened float32 GEMMs)")
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_gemm_after_pytorch_bf16_convolutions(threads):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _AFTER_PYTORCH_BF16.format(threads=threads)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


# With oneDNN switched off (torch.backends.mkldnn), bfloat16 is widened and float32's micro-kernel calls take
# PyTorch's plain GEMM fallback: still correct.
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch's, from mkldnn.flags()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gemm_without_mkldnn(dtype, layout):
    with torch.backends.mkldnn.flags(enabled=False), dispatch.forced(path="gemm"):
        for case in BF16_CASES[:2]:
            assert _check_on_path(case, dtype, "gemm", seed=10, layout=layout) == "gemm"


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU has no AVX512-BF16 (bfloat16 takes widened float32 GEMMs)")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bf16_native_gemm_is_bitwise_the_same_for_any_thread_count(layout):
    case = BF16_CASES[1]
    x, w, b, gy = case.tensors(torch.bfloat16, seed=9, layout=layout)
    with dispatch.forced(path="gemm"):
        one, two, again = _at_thread_counts(lambda: run_ops(x, w, b, gy, case), 1, 2, 2)
    for op_name in one:
        assert torch.equal(one[op_name], two[op_name]) and torch.equal(two[op_name], again[op_name]), op_name


def _widening_copies(case, layout, cap):
    x, w, b, gy = case.tensors(torch.bfloat16, layout=layout)
    with dispatch.forced(path="gemm", isa=cap), torch.profiler.profile(record_shapes=True) as prof:
        run_ops(x, w, b, gy, case)
    images = {tuple(x.shape), tuple(gy.shape)}
    return [e.name for e in prof.events() if e.name == "aten::_to_copy"
            and any(tuple(shape) in images for shape in e.input_shapes if shape)]


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU has no AVX512-BF16 (bfloat16 takes widened float32 GEMMs)")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bf16_native_gemm_reads_the_images_as_they_are(layout):
    case = BF16_CASES[1]
    assert _widening_copies(case, layout, "avx512") == []
    assert _widening_copies(case, layout, "avx2") != []  # the widened path: the probe sees the copies


# channels_last on the direct path: x, gy read as they are, y and gx stored NHWC (csrc/cpu/direct.cpp).
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", [c for c in GRID + BLOCKS + RANDOM_FEW + RANDOM_BLOCKS
                                  if _serves("direct", c, torch.float32)], ids=str)
def test_channels_last_on_direct(case, dtype):
    with dispatch.forced(path="direct"):
        x, w, b, gy = case.tensors(dtype, seed=11, layout="channels_last")
        results = run_ops(x, w, b, gy, case)
    Reference(x, w, b, gy, **case.params).check_all(results, context=f" [{case} on direct, channels_last]")
    theirs = torch.nn.functional.conv_transpose2d(x, w, b, **case.params)  # the layout rule: PyTorch's
    assert results["forward"].stride() == theirs.stride()


# channels_last grad_weight and grad_input on the direct path are vectorised along the input channels
# (nhwc_grad_weight, nhwc_grad_input): channels in whole vectors read in place or zero-padded copies,
# several chunks of rows per image, tap blocks of a 9-wide kernel, 2-4 output channels, groups, rows not a
# multiple of 4 pixels; fewer than half a vector of channels per group (depthwise) keeps the row gathers
# and the strip kernel. Every ISA; and the same bits for any thread count.
CL_BACKWARD = [
    Case("cl_gw_in_place", 2, 32, 1, 9, 11, 9, 3, 4, 2),
    Case("cl_gw_padded", 1, 56, 2, 7, 6, 9, 2, 4, 1),
    Case("cl_gw_chunks", 1, 16, 3, 70, 64, 3, 2, 1, 1),     # 64 x 16 channels per row: rows in 2 chunks
    Case("cl_gw_groups", 2, 24, 4, 5, 9, 4, 2, 1, groups=2),
    # groups whose channels together fill one vector (C_in = 16 on AVX-512, 8 on AVX2): each group's pixels
    # are copied, not read in place (read in place, every group had summed channels 0.. of the pixel)
    Case("cl_gw_groups_one_vector", 2, 16, 4, 5, 9, 4, 2, 1, groups=2),
    Case("cl_gw_groups_half_vector", 2, 8, 6, 4, 7, 3, 1, 0, groups=2),
    Case("cl_gw_dilated", 1, 20, 2, 6, 13, (3, 5), (1, 3), (2, 1), (0, 2), dilation=(2, 3)),
    Case("cl_gw_wide_cin", 1, 72, 1, 5, 6, 3, 2, 1, 1),      # 72 channels: blocks of 4 vectors and a rest
    Case("cl_gw_many_images", 70, 16, 2, 3, 4, 3, 2, 1, 1),  # 70 row blocks: tasks take runs of them
    Case("cl_gw_depthwise", 2, 12, 12, 6, 6, 3, 2, 1, 1, groups=12),
]


@pytest.mark.parametrize("case", CL_BACKWARD, ids=str)
def test_channels_last_backward_on_direct(case, isa):
    x, w, b, gy = case.tensors(torch.float32, seed=13, layout="channels_last")
    with dispatch.forced(path="direct"):
        assert dispatch.cpu_path(x, w, **case.params) == f"direct:{isa}"
        results = {"grad_weight": torch.ops.deconv_ext.conv_transpose2d_grad_weight(gy, x, list(w.shape[2:]),
                                                                                    *case.op_args),
                   "grad_input": torch.ops.deconv_ext.conv_transpose2d_grad_input(gy, w, *case.op_args)}
    if case.C_out > 1:  # (with one output channel gy is NCHW-contiguous too, and so is gx)
        assert results["grad_input"].is_contiguous(memory_format=torch.channels_last)
    Reference(x, w, b, gy, **case.params).check_all(results, context=f" [{case}, {isa}]")


def test_channels_last_backward_is_bitwise_the_same_for_any_thread_count():
    case = CL_BACKWARD[2]
    x, w, b, gy = case.tensors(torch.float32, seed=14, layout="channels_last")
    with dispatch.forced(path="direct"):
        one, two = _at_thread_counts(lambda: run_ops(x, w, b, gy, case), 1, 2)
    for op_name in one:
        assert torch.equal(one[op_name], two[op_name]), op_name


# With no path forced, direct-path configurations with 16+ input channels per group run some ops on the tiled
# gemm kernels (direct_on_tiles in csrc/cpu/conv_transpose2d.cpp): the forward of narrow images (W_in < 128);
# the NCHW forward with 48+ input channels and 2+ output channels (or one, with strides of 3+ beyond the
# all-phases kernel); the NCHW grad_input with 48+ input channels (not with native bfloat16 GEMMs); and with
# native bfloat16 GEMMs, NCHW bfloat16 ops with 2+ output channels, or the forward of narrow images or 48+
# input channels with one. The path query says so, and the results hold.
ON_TILES = [
    Case("narrow_sr_patches", 3, 24, 1, 9, 20, 9, 3, 4, 2),     # forward on the tiles
    Case("narrow_rgb", 2, 16, 3, 7, 11, 4, 2, 1),
    Case("few_channels", 2, 8, 1, 6, 9, 9, 2, 4, 1),            # 8 input channels: direct
    Case("wide", 1, 16, 1, 3, 130, 5, 2, 2, 1),                 # W_in 130: direct (bfloat16 NCHW: tiles)
    Case("wide_48_to_2", 1, 48, 2, 2, 130, 5, 2, 2, 1),         # 48+ channels, 2 outputs: NCHW forward on the tiles
    Case("wide_48_stride_3", 1, 48, 1, 2, 129, 9, 3, 4, 2),     # one output, strides 3x3: direct (all phases)
    Case("wide_48_stride_5", 1, 48, 1, 2, 129, 9, 5, 4, 2),     # one output, strides 5x5: NCHW forward on the tiles
    Case("wide_48_stride_2", 1, 48, 1, 2, 129, 9, 2, 4, 1),     # one output, strides 2x2: direct (grad_input: tiles)
    Case("wide_32_to_3", 1, 32, 3, 2, 130, 5, 2, 2, 1),         # 32 input channels: direct (75 taps: NCHW
                                                                 # grad_input, channels_last grad_weight: tiles)
    Case("wide_32_to_1", 1, 32, 1, 3, 130, 9, 4, 4, 3),         # one output, 81 taps: forward and NCHW grad_input
                                                                 # (channels_last: grad_weight) on the tiles
    Case("k3_16_to_4", 1, 16, 4, 3, 130, 3, 1, 1, 0),           # 36 taps: direct
    Case("k7_stride_1", 1, 16, 1, 3, 130, 7, 1, 3, 0),          # 49 taps: forward on the tiles, grad_input at
                                                                 # stride 1 direct
]


def _expected_route(case, dtype, layout):
    """(grad_weight's path, forward's, grad_input's)."""
    nhwc = layout == "channels_last"
    if case.C_in < 16:
        return "direct", "direct", "direct"
    cog, cig = case.C_out // case.groups, case.C_in // case.groups
    if dtype == torch.bfloat16 and BF16_NATIVE and not nhwc:
        if cog >= 2:
            return "gemm", "gemm", "gemm"
        on_tiles = case.W < 128 or cig >= 48 or BF16_ON_AMX
        widened_on_tiles = ("avx2" in ISAS and case.kernel[0] * case.kernel[1] >= 48  # grad_input, float32 tiles
                            and case.stride[0] * case.stride[1] > 1)
        return "direct", "gemm" if on_tiles else "direct", "gemm" if widened_on_tiles else "direct"
    tiles = "gemm" if "avx2" in ISAS else "direct"  # the tiles need AVX2 or up
    all_phases = cog == 1 and case.dilation[1] == 1 and 2 <= case.stride[1] <= 4
    # float32 tiles (not channels_last bfloat16 with the CPU's dot products) where the taps are 48+ (the
    # forward's Z rows, grad_input's K): NCHW, or with one output channel; channels_last grad_weight in slices
    f32_tiles = not (dtype == torch.bfloat16 and BF16_NATIVE)
    taps = cog * case.kernel[0] * case.kernel[1]
    many_taps = f32_tiles and taps >= 48 and (not nhwc or case.C_out == 1)
    gathered = case.stride[1] > 1 and case.kernel[1] * case.dilation[1] > case.stride[1]
    on_tiles = case.W < 128 or many_taps or (not nhwc and cig >= 48 and (
        cog >= 2 or (case.stride[0] * case.stride[1] >= 9 and not all_phases)))
    grad_input_on_tiles = not nhwc and (cig >= 48 or (many_taps and case.stride[0] * case.stride[1] > 1))
    grad_weight_on_tiles = f32_tiles and nhwc and taps >= 48 and (case.C_out == 1 or gathered)
    return (tiles if grad_weight_on_tiles else "direct", tiles if on_tiles else "direct",
            tiles if grad_input_on_tiles else "direct")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", ON_TILES, ids=str)
def test_direct_shapes_on_tiles_when_faster(case, dtype, layout, monkeypatch):
    monkeypatch.delenv("DECONV_EXT_CPU_PATH", raising=False)
    x, w, b, gy = case.tensors(dtype, seed=15, layout=layout)
    taken = dispatch.cpu_path(x, w, **case.params)
    ops_path, forward_path, grad_input_path = _expected_route(case, dtype, layout)
    assert taken.split(" (")[0].split(":")[0] == ops_path, taken
    others = [f"{name}: {path}" for name, path in (("forward", forward_path), ("grad_input", grad_input_path))
              if path != ops_path]
    if others:
        assert taken.endswith(")") and all(o in taken for o in others), (taken, others)
        assert taken.count(": ") == len(others), taken
    else:
        assert "(" not in taken, taken
    Reference(x, w, b, gy, **case.params).check_all(run_ops(x, w, b, gy, case), context=f" [{case}, {taken}]")
    with dispatch.forced(path="direct"):  # forcing a path keeps every op on it
        assert dispatch.cpu_path(x, w, **case.params).startswith("direct:")
        assert "(" not in dispatch.cpu_path(x, w, **case.params)


def test_direct_path_reads_channels_last_x_as_it_is():
    # The direct path builds its padded copy of x straight from NHWC (grad_weight with one output channel:
    # small row buffers instead): no layout conversion of x.
    case = Case("rgb_cl", 2, 24, 3, 6, 7, 5, 2, 2, 1)
    x, w, b, gy = case.tensors(torch.float32, layout="channels_last")
    with dispatch.forced(path="direct"), torch.profiler.profile(record_shapes=True) as prof:
        y = deconv_ext.conv_transpose2d(x, w, b, **case.params)
        gw = torch.ops.deconv_ext.conv_transpose2d_grad_weight(gy, x, [5, 5], *case.op_args)
    copies = [e.name for e in prof.events() if e.name in ("aten::clone", "aten::copy_", "aten::contiguous")
              and any(tuple(shape) == tuple(x.shape) for shape in e.input_shapes if shape)]
    assert copies == []
    ref = Reference(x, w, b, gy, **case.params)
    ref.check("forward", y)
    ref.check("grad_weight", gw)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_direct_forward_in_image_chunks(layout):
    # The direct forward pads x a piece at a time (4M values: whole images while one fits, else ranges of
    # rows; each of these images is 4.4M), in a scratch buffer reused across pieces and calls: every image
    # must come out right, the same bits as one image at a time, and a second call over the reused buffer
    # the same again.
    case = Case("big_images", 3, 16, 2, 520, 520, 4, 2, 1)
    x, w, b, gy = case.tensors(torch.float32, layout=layout)
    with dispatch.forced(path="direct"):
        y = deconv_ext.conv_transpose2d(x, w, b, **case.params)
        one_by_one = torch.cat([deconv_ext.conv_transpose2d(x[n:n + 1], w, b, **case.params) for n in range(3)])
        again = deconv_ext.conv_transpose2d(x, w, b, **case.params)
    Reference(x, w, b, gy, **case.params).check("forward", y)
    assert torch.equal(y, one_by_one) and torch.equal(y, again)


# The dispatch rule at its thresholds: if one moves, these fail (and say which way).
@pytest.mark.parametrize("cout,dtype,expected", [
    (4, torch.float32, "direct"),    # kDirectMaxCout = 4
    (5, torch.float32, "gemm"),
    (1, torch.float64, "gemm"),      # double never takes direct
    (1, torch.bfloat16, "direct"),   # the half types take the float32 path on widened operands
    (4, torch.float16, "direct"),
    (5, torch.bfloat16, "gemm"),
    (64, torch.float16, "gemm"),
])
def test_dispatch_boundaries(cout, dtype, expected):
    x = torch.empty(2, 8, 5, 5, dtype=dtype, device="meta")
    w = torch.empty(8, cout, 3, 3, dtype=dtype, device="meta")
    assert dispatch.cpu_path(x, w, stride=2).split(":")[0] == expected
    grouped = torch.empty(8, cout, 3, 3, dtype=dtype, device="meta")  # groups=2: per-group count decides
    assert dispatch.cpu_path(torch.empty(2, 8, 5, 5, dtype=dtype, device="meta"), grouped, groups=2) \
        .split(":")[0] == expected


def test_forcing_rejects_unknown_values(monkeypatch):
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 1, 3, 3)
    monkeypatch.setenv("DECONV_EXT_CPU_PATH", "fastest")
    with pytest.raises(RuntimeError, match="DECONV_EXT_CPU_PATH: expected one of auto, generic, direct, gemm"):
        torch.ops.deconv_ext.conv_transpose2d(x, w, None, [1, 1], [0, 0], [0, 0], 1, [1, 1])
    monkeypatch.setenv("DECONV_EXT_CPU_PATH", "auto")
    monkeypatch.setenv("DECONV_EXT_CPU_ISA", "sse2")
    with pytest.raises(RuntimeError, match="DECONV_EXT_CPU_ISA: expected one of auto, avx512, avx2, baseline"):
        torch.ops.deconv_ext.conv_transpose2d(x, w, None, [1, 1], [0, 0], [0, 0], 1, [1, 1])
    monkeypatch.setenv("DECONV_EXT_CPU_ISA", "auto")
    monkeypatch.setenv("DECONV_EXT_CPU_GEMM_FORWARD", "gather")
    x8, w8 = torch.randn(1, 8, 3, 3), torch.randn(8, 8, 3, 3)  # 8 output channels: the gemm path
    with pytest.raises(RuntimeError, match="DECONV_EXT_CPU_GEMM_FORWARD: expected one of auto, phase, scatter"):
        torch.ops.deconv_ext.conv_transpose2d(x8, w8, None, [1, 1], [0, 0], [0, 0], 1, [1, 1])
    with pytest.raises(ValueError, match="expected path to be one of"):
        with dispatch.forced(path="fast"):
            pass
    with pytest.raises(ValueError, match="expected gemm_forward to be one of"):
        with dispatch.forced(gemm_forward="gather"):
            pass


def _all_results(case, dtype):
    x, w, b, gy = case.tensors(dtype, seed=5)
    return list(run_ops(x, w, b, gy, case).values())


# Run to run every path is bitwise reproducible. Across thread counts the direct and generic paths are too
# (each output reduced by one task in a fixed order); gemm is not promised (at::mm blocks by thread count).
@pytest.mark.parametrize("case", [BLOCKS[0], BLOCKS[5], GRID[-2], RANDOM_MANY[0]], ids=str)
def test_bitwise_run_to_run_and_across_threads(case, path):
    dtype = torch.float32 if _serves(path, case, torch.float32) else torch.float64
    if not _serves(path, case, dtype):
        pytest.skip(f"the {path} path does not serve this case")
    many_threads = max(2, torch.get_num_threads())
    one, many, again = _at_thread_counts(lambda: _all_results(case, dtype), 1, many_threads, many_threads)
    for a, b in zip(many, again):
        assert torch.equal(a, b)
    # gemm: float32 NCHW runs the tiled kernels (csrc/cpu/gemm_tiles.cpp), whose task partition depends on the
    # shape only; float64 and ISA baseline use at::mm, which may block its sums by thread count.
    if path != "gemm" or (dtype == torch.float32 and "avx2" in ISAS):
        for a, b in zip(one, many):
            assert torch.equal(a, b)


def test_cuda_path_query_in_cuda_builds():
    """A build with CUDA kernels (CI compiles them) answers the CUDA path query from shapes alone."""
    from deconv_ext import _build

    x, w = torch.empty(2, 8, 5, 5, device="meta"), torch.empty(8, 4, 3, 3, device="meta")
    if _build.load_info()["cuda_version"] is None:
        with pytest.raises(RuntimeError, match="built without CUDA kernels"):
            dispatch.cuda_path(x, w)
        return
    assert dispatch.cuda_path(x, w, stride=2) in dispatch.CUDA_PATHS
    with dispatch.forced(cuda_path="simt"):
        assert dispatch.cuda_path(x, w) == "simt"
    # The rule (csrc/cuda/conv_transpose2d.cu): tensor cores from sm_80 for >= 16 channels per group each way.
    big_x, big_w = torch.empty(2, 32, 5, 5, device="meta"), torch.empty(32, 16, 4, 4, device="meta")
    assert dispatch.cuda_path(x.half(), w.half(), capability=(9, 0)) == "simt"  # 8 -> 4 channels
    assert dispatch.cuda_path(big_x.half(), big_w.half(), stride=2, capability=(9, 0)) == "gemm"
    assert dispatch.cuda_path(big_x.bfloat16(), big_w.bfloat16(), stride=2, capability=(8, 0)) == "gemm"
    assert dispatch.cuda_path(big_x.half(), big_w.half(), capability=(7, 5)) == "simt"
    assert dispatch.cuda_path(big_x.double(), big_w.double(), capability=(9, 0)) == "simt"
    assert dispatch.cuda_path(big_x.half(), big_w.half(), groups=2, capability=(9, 0)) == "gemm"  # 16 -> 16 per group
    assert dispatch.cuda_path(big_x.half(), big_w.half(), groups=4, capability=(9, 0)) == "simt"  # 8 -> 16 per group
    saved = torch.backends.cudnn.allow_tf32
    try:  # float32 goes to the tensor cores (as TF32) only where F.conv_transpose2d's cuDNN may use TF32
        torch.backends.cudnn.allow_tf32 = True
        assert dispatch.cuda_path(big_x, big_w, capability=(9, 0)) == "gemm"
        torch.backends.cudnn.allow_tf32 = False
        assert dispatch.cuda_path(big_x, big_w, capability=(9, 0)) == "simt"
        with dispatch.forced(cuda_path="gemm"), pytest.raises(RuntimeError, match="allow_tf32 is False"):
            dispatch.cuda_path(big_x, big_w, capability=(9, 0))
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    with dispatch.forced(cuda_path="gemm"), pytest.raises(RuntimeError, match="does not take float64"):
        dispatch.cuda_path(big_x.double(), big_w.double(), capability=(9, 0))
    with dispatch.forced(cuda_path="gemm"), pytest.raises(RuntimeError, match="compute capability 8.0"):
        dispatch.cuda_path(big_x.half(), big_w.half(), capability=(7, 0))
    with dispatch.forced(cuda_path="gemm"):
        assert dispatch.cuda_path(x.half(), w.half(), capability=(9, 0)) == "gemm"  # forced past the rule
    # Few output channels with a square stride 2-4 (super-resolution last layers): the sub-pixel forward.
    sr_x, sr_w = torch.empty(1, 56, 8, 8, device="meta"), torch.empty(56, 1, 9, 9, device="meta")
    for scale in (2, 3, 4):
        assert dispatch.cuda_path(sr_x, sr_w, stride=scale, padding=4, output_padding=scale - 1,
                                  capability=(9, 0)) == "subpixel"
    assert dispatch.cuda_path(sr_x, sr_w, stride=(2, 3), padding=4, capability=(9, 0)) == "simt"  # not square
    assert dispatch.cuda_path(sr_x.double(), sr_w.double(), stride=2, padding=4, capability=(9, 0)) == "simt"
    assert dispatch.cuda_path(sr_x, torch.empty(56, 5, 9, 9, device="meta"), stride=2, padding=4,
                              capability=(9, 0)) == "simt"  # 5 output channels
    with dispatch.forced(cuda_path="subpixel"), pytest.raises(RuntimeError, match="square stride of 2 to 4"):
        dispatch.cuda_path(sr_x, sr_w, stride=5, padding=4, capability=(9, 0))


# conv_transpose2d_backward, the fused backward (one call for the gradients an output mask asks for; the CPU
# builds the deinterleaved gy once for grad_input and grad_weight): the same results, bit for bit and in the
# same layout, as the three single ops, on every path, dtype and layout, for every mask.
MASKS = [(True, True, True), (True, False, True), (False, True, False), (True, True, False), (False, False, False)]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["f32", "bf16", "f64"])
@pytest.mark.parametrize("case", GRID + BLOCKS, ids=str)
def test_fused_backward_is_the_single_ops(case, dtype, layout, path):
    if not _serves(path, case, dtype):
        pytest.skip(f"the {path} path does not serve this case")
    ops = torch.ops.deconv_ext
    x, w, b, gy = case.tensors(dtype, seed=16, layout=layout)
    args, kernel = case.op_args, list(w.shape[2:])
    single = (ops.conv_transpose2d_grad_input(gy, w, *args), ops.conv_transpose2d_grad_weight(gy, x, kernel, *args),
              ops.conv_transpose2d_grad_bias(gy))
    for mask in MASKS:
        fused = ops.conv_transpose2d_backward(gy, x if mask[1] else None, w if mask[0] else None, kernel, *args,
                                              list(mask))
        for name, got, want, asked in zip(("grad_input", "grad_weight", "grad_bias"), fused, single, mask):
            if not asked:
                assert got is None, (name, mask)
                continue
            assert got.dtype == want.dtype and got.stride() == want.stride(), (name, mask)
            assert torch.equal(got, want), (name, mask, case)
