// CPU paths of the deconv_ext ops. The CPU launchers (conv_transpose2d.cpp) pick one per call with
// choose_path(); forward and the three gradients of one configuration take the same path.
//
//   direct (direct.cpp): float32, few output channels per group (cout_per_group <= kDirectMaxCout:
//     super-resolution last layers, RGB outputs, depthwise), forward and backward, any number of input
//     channels. Register-blocked strips of outputs along W, one phase (ow + pW) mod sW at a time, so the
//     inputs of a strip are contiguous; vectorised with GCC vector extensions, AVX-512 (16 lanes) / AVX2 /
//     baseline (8 lanes) variants picked at run time (cpu_isa()). channels_last images are read (x while
//     building the padded copy or row buffers, gy while deinterleaving) and written (y: strip stores with
//     NHWC strides) as they are; with at least half a vector of input channels per group, their grad_input
//     and grad_weight are vectorised along those channels instead (whole NHWC pixels read and written).
//   gemm: float32/float64, any channel counts (the natural choice past the direct path): the GEMM
//     formulation, forward Z = W^T X then col2im, grad_input = W im2col(gy), grad_weight = X im2col(gy)^T.
//     float32 (and native bfloat16) run it tiled (gemm_tiles.cpp): oneDNN's BRGEMM micro-kernel, exported
//     by PyTorch, on tiles that are gathered (im2col) or scattered (col2im) next to each call, in cache,
//     with no column buffer; the tiled forward runs by output phase instead (one GEMM per phase and tap on
//     x gathered shifted, y stored once: no col2im) when C_out is not below C_in, or with 16+ output
//     channels whatever C_in when a phase's column taps read neighbouring pixels and stack into one GEMM
//     per row tap (forward_by_phase, stacked_forward: A read in place from a padded NHWC copy of x, rows
//     of windows overlapping). So do the stride-1 grad_input where it stacks or in NCHW bfloat16 (a
//     forward of gy with the kernel flipped), the strided NCHW grad_input (the stacked correlation of gy,
//     stacked_grad_input), and grad_weight with stride 1 or overlapping taps runs one GEMM per tap on
//     gy's (stride-phase) planes (planes_grad_weight). bfloat16 on these stacked GEMMs writes its
//     bfloat16 result itself (gemm_forward_writes_bf16).
//     float64, and float32 with the ISA capped at baseline, take one at::mm per
//     chunk of input rows plus a col2im/im2col pass (gemm.cpp; chunks keep the column buffer near 1M
//     elements). channels_last images take the same formulation with pixels as rows, no layout
//     conversion (tiled_nhwc_* in gemm_tiles.cpp, or gemm_nhwc.cpp).
//   generic (conv_transpose2d.cpp): plain loops, every dtype.
// Unless a path is forced, direct-path configurations with 16+ input channels per group hand some ops to the
// tiled gemm kernels, where those are faster (direct_on_tiles in conv_transpose2d.cpp): the forward of narrow
// images or with 48+ taps (NCHW, or channels_last with one output channel; the tiled forward then splits a
// lone image into bands of rows), the NCHW grad_input with 48+ input channels or with 48+ taps and strides,
// the channels_last grad_weight with 48+ taps (sliced_grad_weight), and with native bfloat16 GEMMs every
// NCHW bfloat16 op with 2+ output channels.
// Large temporaries live in per-thread scratch buffers reused across calls (scratch()).
// float16 and bfloat16 take the path float32 would (direct or gemm), on operands widened to float32 and
// a float32 result rounded once at the end (conv_transpose2d.cpp); forced to generic, they run natively.
// Exception: bfloat16 on the gemm path reads its operands as they are when the CPU has AVX512-BF16 and the
// ISA is not capped below avx512 (gemm_tiles.cpp; the path query then says "gemm:avx512_bf16").
//
// Forcing, for tests and diagnosis (read at every call): DECONV_EXT_CPU_PATH=auto|generic|direct|gemm
// (a path that cannot serve the call is not taken: direct needs C_out/groups <= kDirectMaxCout and not
// float64; the query deconv_ext::_cpu_path says which path a call takes), DECONV_EXT_CPU_ISA=auto|avx512|avx2|baseline (capped at what the CPU has),
// DECONV_EXT_CPU_GEMM_FORWARD=auto|phase|scatter (the tiled gemm forward's formulation, forward_by_phase;
// also that of stride-1 grad_input, which is a forward with the kernel flipped).
//
// All arguments are contiguous NCHW tensors of the kernel's dtype, or channels_last NHWC images, which the
// entry layer passes when an operand is channels_last and the call takes the direct or gemm path
// (Launchers::layout); results are written in full
// (nothing has to be pre-initialised). Each output element is reduced by one thread in a fixed order,
// so results are bitwise identical run to run. The direct and generic paths and the tiled gemm kernels
// also give the same bits for any thread count; at::mm (the float64 gemm route) may block its sums
// differently with the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>

#include "../index_math.h"

namespace deconv_ext {
namespace cpu {

constexpr int64_t kDirectMaxCout = 4;

// The direct kernels whenever they apply, forward and backward alike. Forward: the GEMM would have
// K = cin_per_group and a col2im pass of cout*kH*kW adds per input pixel, which is what makes these shapes
// slow elsewhere. Backward: with one output channel the GEMM formulation has cin rows and an im2col buffer
// of kH*kW copies of gy; the direct kernels block over input channels instead (8 or 4 per strip for
// grad_input, 4 or 2 per dot product for grad_weight), reading a column-phase-split gy copy.
inline bool use_direct(const ConvT2dShape& s, at::ScalarType t) {
  return t == at::kFloat && s.cout_per_group() <= kDirectMaxCout;
}
inline bool use_gemm(const ConvT2dShape& s, at::ScalarType t) {
  return (t == at::kFloat || t == at::kDouble) && !use_direct(s, t);
}

enum class Path { generic, direct, gemm };
const char* path_name(Path p);
// The path of a call: the natural one (use_direct, then use_gemm, else generic) unless
// DECONV_EXT_CPU_PATH names another path that can serve it.
Path choose_path(const ConvT2dShape& s, at::ScalarType t);
// Whether DECONV_EXT_CPU_PATH names a path (anything but unset, empty or "auto").
bool path_forced();

// Vector ISA of the direct kernels for the next call: 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline;
// the CPU's best, capped by DECONV_EXT_CPU_ISA. cpu_isa_available(l): whether this CPU has level l.
int isa_level();
bool cpu_isa_available(int level);
const char* isa_name(int level);

// at::parallel_for with dynamic scheduling: the threads take chunks of `grain` tasks from a shared
// counter, so a thread that the OS deschedules (cores shared with other processes) delays the call by
// about one chunk instead of its whole static share. Which thread runs a task does not change what
// the task computes, so results stay deterministic.
template <typename F>
inline void parallel_tasks(int64_t tasks, int64_t grain_size, const F& f) {
  const int64_t threads = at::get_num_threads();
  if (tasks <= grain_size || threads <= 1 || at::in_parallel_region()) return f(int64_t(0), tasks);
  // Chunks: at most the grain, and at least ~8 per thread so the shares can even out.
  const int64_t chunk = std::max<int64_t>(1, std::min(grain_size, tasks / (8 * threads)));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(threads, (tasks + chunk - 1) / chunk), 1, [&](int64_t, int64_t) {
    for (int64_t t0 = next.fetch_add(chunk); t0 < tasks; t0 = next.fetch_add(chunk))
      f(t0, std::min(tasks, t0 + chunk));
  });
}

void direct_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& y);
// Whether direct_forward computes every column phase of a strip at once (up to 4 output channels per group,
// column strides 2-4, no column dilation; on a vector ISA, where a kernel fits its registers): the
// all-phases kernel.
bool direct_forward_all_phases(const ConvT2dShape& s);
void direct_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void direct_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);

// gy (N*C_out*H_out rows of W_out; NCHW or channels_last) split into its sW column phases, zero outside the image:
// out[row][r][j] = gy[row][sW*j + r - pW] for j < Wd (float or double). Then the gy values a tap kw
// meets along a row of inputs, gy[row][iw*sW - pW + kw*dW], are contiguous: out[row][r][iw + q] with
// kw*dW = q*sW + r.
// Within a share_deinterleaved_gy() scope (a fused backward call, on this thread), a second call for the same
// gy buffer and Wd returns the first one's result instead of building it again.
at::Tensor deinterleave_columns(const ConvT2dShape& s, const at::Tensor& gy, int64_t Wd);
std::shared_ptr<void> share_deinterleaved_gy();
// A flat tensor of numel elements for a temporary of one op call (scratch.cpp): a per-thread buffer for each
// purpose, reused across calls (no page faults for a fresh allocation each time) while no tensor on it is
// alive, up to 32 MB; otherwise a fresh allocation. The contents are undefined.
enum class Scratch { padded_x, deinterleaved_gy, packed_w, packed_x, planes, count };
at::Tensor scratch(Scratch purpose, int64_t numel, const at::TensorOptions& options);
// The Wd of the direct kernels' deinterleaved gy for this configuration (on the ISA isa_level() says now).
int64_t direct_gy_width(const ConvT2dShape& s);

void gemm_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& y);
void gemm_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void gemm_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
// The same on channels_last-contiguous (NHWC) images x, y, gy, gx (gemm_nhwc.cpp); w and gw stay contiguous.
void gemm_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                       const at::Tensor& y);
void gemm_nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void gemm_nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);

// The tiled gemm path (gemm_tiles.cpp), with no column buffer, on oneDNN's micro-kernel: x, w, gy float32,
// or bfloat16 when bf16_gemm_available() (AVX512-BF16); y, gx, gw float32 (but see gemm_forward_writes_bf16),
// b float32 or undefined.
// NCHW images (tiled_*) and channels_last ones (tiled_nhwc_*: x, y, gy, gx NHWC-contiguous).
bool bf16_gemm_available();
// Whether that micro-kernel runs on AMX tiles (bf16_gemm_available() and the CPU has AMX-BF16).
bool bf16_gemm_on_amx();
void tiled_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const at::Tensor& y);
void tiled_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void tiled_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
void tiled_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& y);
void tiled_nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void tiled_nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
// Whether the gemm path's forward (grad_input) of s with bfloat16 operands, NCHW or channels_last images,
// takes a bfloat16 y (gx) and writes it itself: the stacked forward rounds its float32 sums once as it
// stores them, so no float32 result needs to be made and converted.
bool gemm_forward_writes_bf16(const ConvT2dShape& s, bool nhwc);
bool gemm_grad_input_writes_bf16(const ConvT2dShape& s, bool nhwc);
// Whether the gemm path runs the tiled kernels for this dtype: float32 unless DECONV_EXT_CPU_ISA caps the
// ISA at baseline (then at::mm, as for float64); bfloat16 when bf16_gemm_available().
bool use_tiles(at::ScalarType t);
// Whether the tiled forward runs by output phase (one GEMM per phase and tap on x gathered shifted, y stored
// once) rather than as GEMM + col2im scatter; DECONV_EXT_CPU_GEMM_FORWARD=auto|phase|scatter forces it.
bool forward_by_phase(const ConvT2dShape& s, bool nhwc, at::ScalarType t);

// Whether the tiled float32 grad_weight of s (NCHW or channels_last images) runs in slices of the pixels, all
// taps at once (few output channels per group: the direct path's layers).
bool grad_weight_by_slices(const ConvT2dShape& s, bool nhwc);

// Input pixels in chunks, for the gemm paths' column buffers (gemm.cpp, gemm_nhwc.cpp): either `images`
// whole images (rows == H_in) or `rows` rows of one image.
struct Chunk {
  int64_t n0, images, ih0, rows;
  int64_t columns(const ConvT2dShape& s) const { return images * rows * s.W_in; }
  int64_t first_column(const ConvT2dShape& s) const { return (n0 * s.H_in + ih0) * s.W_in; }
};

// Calls f(Chunk) over all input pixels, each chunk's buffer of taps_per_column values per pixel kept near
// the output's size.
template <typename F>
void for_each_chunk(const ConvT2dShape& s, int64_t taps_per_column, F&& f) {
  // Budget for the column buffer: the output size, at least 1M and at most 8M elements. Few chunks
  // matter: each one is three parallel regions (im2col or col2im, the GEMM, a copy), and every region
  // ends in a barrier that costs a lot when the cores are shared with other processes.
  const int64_t out = s.N * s.C_out * s.H_out * s.W_out;
  const int64_t budget = std::min<int64_t>(std::max<int64_t>(out, 1 << 20), 1 << 23);
  const int64_t per_row = std::max<int64_t>(1, taps_per_column * s.W_in);
  const int64_t per_image = per_row * s.H_in;
  if (per_image <= budget) {
    const int64_t step = std::max<int64_t>(1, budget / per_image);
    for (int64_t n0 = 0; n0 < s.N; n0 += step) f(Chunk{n0, std::min(step, s.N - n0), 0, s.H_in});
  } else {
    const int64_t step = std::max<int64_t>(1, budget / per_row);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t ih0 = 0; ih0 < s.H_in; ih0 += step) f(Chunk{n, 1, ih0, std::min(step, s.H_in - ih0)});
  }
}

}  // namespace cpu
}  // namespace deconv_ext
