// The gemm path's GEMMs on oneDNN's BRGEMM micro-kernel, which PyTorch exports (at::native::cpublas::brgemm:
// C (+)= A B, float32 x float32 -> float32 or bfloat16 x bfloat16 -> float32, JIT-generated per block shape
// and cached per thread). Two parts:
//
// 1. Tiled NCHW kernels (tiled_forward / tiled_grad_input / tiled_grad_weight, float32 and bfloat16): the
//    formulation of gemm.cpp without its column buffers (see the section below).
// 2. The same on channels_last images (tiled_nhwc_*), pixels being the GEMM rows as in gemm_nhwc.cpp.
// 3. The forward by output phase (phase_forward, phase_nhwc_forward): no col2im, chosen by forward_by_phase;
//    where a phase's column taps read neighbouring pixels (or pixels g apart, with column dilation), one GEMM
//    per row tap (stacked_into; also the strided NCHW grad_input's correlation of gy), which also writes a
//    bfloat16 result itself.
//
// bfloat16: the CPU's AVX512-BF16 dot products. Every product of two bfloat16 values is exact in float32 and
// the sums are float32, so this is the numerical contract of the widened float32 path (float accumulation,
// one rounding at the end), at about twice the float32 speed and with no widened copies of the images. One
// difference: the instruction treats subnormal inputs and results as zero (as oneDNN's own bfloat16
// convolutions do). The micro-kernel wants B in the "VNNI" layout, pairs of rows interleaved
// (Bv[k/2][n][k%2] = B[k][n]), so K is padded to even with a zero row (and A with a zero column).
// Used when bf16_gemm_available(): the CPU has AVX512-BF16 and the direct kernels' ISA is not capped below
// AVX-512 (DECONV_EXT_CPU_ISA), mkldnn is enabled (torch.backends.mkldnn), and a first small product agrees
// with float32. Where the CPU also has AMX, oneDNN runs the same calls on the AMX tiles (the same VNNI B,
// checked by the same self-test and the bfloat16 tests on such a machine); see begin_op for the one thing
// the tiles need (k3s1 64->64 bfloat16 forward: 1.69 ms widened to float32, 0.69 ms on the tiles).
//
// Every element of C is one sum in a fixed order, and the parallel tasks (blocks of C) depend on the shape
// only: results do not depend on the thread count.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "fast_paths.h"
#include "strided.h"
#include "transpose.h"

namespace deconv_ext {
namespace cpu {
namespace {

bool hardware_has_bf16_dot() {
#if defined(__x86_64__)
  static const bool ok = __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

// b (K x N bfloat16, any strides) in pairs of rows, a zero row when K is odd: (Kp/2, N, 2).
at::Tensor pack_b(const at::Tensor& b) {
  const int64_t K = b.size(0), N = b.size(1), Kp = K + (K & 1);
  auto data = at::empty({Kp / 2, N, 2}, b.options().memory_format(c10::MemoryFormat::Contiguous));
  const auto* src = b.const_data_ptr<at::BFloat16>();
  auto* dst = data.mutable_data_ptr<at::BFloat16>();
  const int64_t sk = b.stride(0), sn = b.stride(1);
  parallel_tasks(Kp / 2, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, N)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const at::BFloat16* r0 = src + 2 * p * sk;
      at::BFloat16* d = dst + p * N * 2;
      if (2 * p + 1 < K) {
        const at::BFloat16* r1 = r0 + sk;
        for (int64_t n = 0; n < N; ++n) d[2 * n] = r0[n * sn], d[2 * n + 1] = r1[n * sn];
      } else {
        for (int64_t n = 0; n < N; ++n) d[2 * n] = r0[n * sn], d[2 * n + 1] = at::BFloat16(0.f);
      }
    }
  });
  return data;
}

bool self_test() {
  try {
    // Odd sizes on purpose: K padded, partial vectors.
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    auto af = at::arange(5 * 7, opts).reshape({5, 7}).sub_(17).mul_(0.25);
    auto bf = at::arange(7 * 3, opts).reshape({7, 3}).sub_(9).mul_(0.5);
    auto a = at::zeros({5, 8}, opts.dtype(at::kBFloat16));
    a.narrow(1, 0, 7).copy_(af);
    auto c = at::empty({5, 3}, opts);
    at::native::cpublas::brgemm(5, 3, 8, 8, 3, 3, false, a.const_data_ptr<at::BFloat16>(),
                                pack_b(bf.to(at::kBFloat16)).const_data_ptr<at::BFloat16>(),
                                c.mutable_data_ptr<float>(), /*is_vnni=*/true);
    return c.equal(at::mm(af, bf));  // small integers times powers of two: exact either way
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

bool bf16_gemm_on_amx() {
#if defined(__x86_64__)
  static const bool amx = __builtin_cpu_supports("amx-bf16");
  return amx && bf16_gemm_available();
#else
  return false;
#endif
}

bool bf16_gemm_available() {
  if (!hardware_has_bf16_dot() || isa_level() < 2 || !at::globalContext().userEnabledMkldnn()) return false;
  static const bool works = self_test();
  return works;
}


// ---- NCHW ops without a column buffer (float32 and bfloat16) ----------------------------------------------
// The GEMMs of gemm.cpp (forward Z = Wg^T X then col2im; grad_input gx = Wg C; grad_weight gw_g^T = C X^T,
// with C = im2col(gy)), on the same micro-kernel (float32 x float32 -> float32 for float32 operands, which
// on these shapes is also faster than at::mm), but C and Z only ever exist as small tiles that a task fills
// (C) or empties (Z) right next to its micro-kernel call, in cache, instead of buffers of taps x pixels
// that go through memory. Each task owns a disjoint part of the result and walks its part of the sum in a
// fixed order, and the task partition depends only on the shape: the results do not depend on the thread
// count.
namespace {

using bf16 = at::BFloat16;
using u16a = uint16_t __attribute__((__may_alias__));
using u32a = uint32_t __attribute__((__may_alias__));

// AMX tiles. oneDNN runs the bfloat16 micro-kernel on them where the CPU has AMX, and PyTorch's brgemm
// loads a kernel's tile configuration only when the thread's previous call was to another kernel. oneDNN's
// own AMX primitives (PyTorch's bfloat16 convolutions and matmuls) release the tiles when they finish, so a
// first call after them would run on released tiles (an illegal instruction: seen after F.conv_transpose2d
// in bfloat16). So each op starts a new epoch (begin_op, in the entry points below), and a thread's first
// bfloat16 call in an epoch releases the tiles first, which makes PyTorch configure them again.
std::atomic<uint64_t> op_epoch{1};
void begin_op() { op_epoch.fetch_add(1, std::memory_order_relaxed); }

// C (m x n, ldc) (+)= A (m x K, lda) B. bfloat16: B's rows in interleaved pairs (K even); float: row-major.
void kernel(int64_t m, int64_t n, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const bf16* a,
            const bf16* b, float* c) {
  thread_local uint64_t seen = 0;
  const uint64_t epoch = op_epoch.load(std::memory_order_relaxed);
  if (seen != epoch) {
    at::native::cpublas::brgemm_release(/*is_vnni=*/true);
    seen = epoch;
  }
  at::native::cpublas::brgemm(m, n, K, lda, ldb, ldc, add, a, b, c, /*is_vnni=*/true);
}
void kernel(int64_t m, int64_t n, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const float* a,
            const float* b, float* c) {
  at::native::cpublas::brgemm(m, n, K, lda, ldb, ldc, add, a, b, c, /*is_vnni=*/false);
}

// B rows per packed row: 2 for bfloat16 (pairs), 1 for float.
template <typename T>
constexpr int64_t kRows = std::is_same_v<T, bf16> ? 2 : 1;
template <typename T>
int64_t padded_k(int64_t K) { return (K + kRows<T> - 1) / kRows<T> * kRows<T>; }

// Columns of a tile whose other side is K long: the tile stays near 256 KB (in L2).
template <typename T>
int64_t tile_columns(int64_t K) {
  return std::clamp<int64_t>(262144 / int64_t(sizeof(T)) / std::max<int64_t>(1, K) / 16 * 16, 16, 256);
}

void transpose_tile(const float* a, int64_t rows, int64_t cols, int64_t lda, float* d, int64_t ldd, bool avx2);
void parallel_transpose(const float* a, int64_t rows, int64_t cols, int64_t lda, float* d, int64_t ldd);

// a (rows x K, any strides) as a contiguous (rows x Kp) matrix, zero-padded.
at::Tensor padded(const at::Tensor& a, int64_t Kp) {
  const int64_t rows = a.size(0), K = a.size(1);
  auto out = scratch(Scratch::packed_w, rows * Kp, a.options()).view({rows, Kp});
  if (a.scalar_type() == at::kFloat && a.stride(0) == 1 && K > 1 && a.stride(1) >= rows)  // the forward's W^T
    parallel_transpose(a.const_data_ptr<float>(), K, rows, a.stride(1), out.mutable_data_ptr<float>(), Kp);
  else
    out.narrow(1, 0, K).copy_(a);
  if (Kp > a.size(1)) out.narrow(1, a.size(1), Kp - a.size(1)).zero_();
  return out;
}

// d[2i] = a[i], d[2i + 1] = b[i] for i < count (as 16-bit words: a loop the compiler vectorises).
void interleave(const bf16* a, const bf16* b, int64_t count, bf16* d) {
  const auto* ua = reinterpret_cast<const u16a*>(a);
  const auto* ub = reinterpret_cast<const u16a*>(b);
  auto* ud = reinterpret_cast<u32a*>(d);
  for (int64_t i = 0; i < count; ++i) ud[i] = uint32_t(ua[i]) | (uint32_t(ub[i]) << 16);
}

// Channels [c0, c0 + count) of image n of NCHW x as B (count x HW) for the forward: float32 reads x in place;
// bfloat16 is packed per image into (N, Kp/2, HW, 2).
template <typename T>
at::Tensor forward_b(const ConvT2dShape& s, const at::Tensor& x, int64_t c0, int64_t count, int64_t Kp,
                     const std::vector<T>& zeros) {
  if constexpr (kRows<T> == 1) {
    return x;
  } else {
    const int64_t HW = s.H_in * s.W_in, pairs = Kp / 2;
    auto out = scratch(Scratch::packed_x, s.N * pairs * HW * 2, x.options()).view({s.N, pairs, HW, 2});
    const T* src = x.const_data_ptr<T>();
    T* dst = out.mutable_data_ptr<T>();
    parallel_tasks(s.N * pairs, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, HW)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / pairs, p = t % pairs;
        const T* a = src + (n * s.C_in + c0 + 2 * p) * HW;
        for (int64_t i = 0; i < HW; i += s.W_in)  // row by row: `zeros` is W_in long
          interleave(a + i, 2 * p + 1 < count ? a + HW + i : zeros.data(), s.W_in, dst + (t * HW + i) * 2);
      }
    });
    return out;
  }
}

// Channels [c0, c0 + count) of every image of NCHW x as B = X^T (HW x count) for grad_weight, per image:
// (N, HWp, count) with HWp = padded_k(HW), pixels in interleaved pairs for bfloat16 (a zero pixel last
// when HW is odd).
template <typename T>
at::Tensor weight_b(const ConvT2dShape& s, const at::Tensor& x, int64_t c0, int64_t count) {
  const int64_t HW = s.H_in * s.W_in, HWp = padded_k<T>(HW), rows = HWp / kRows<T>;
  auto out = scratch(Scratch::packed_x, s.N * HWp * count, x.options()).view({s.N, HWp, count});
  const T* src = x.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  // A transpose of 32-bit words (a float, or a pair of neighbouring bfloat16 pixels), in blocks of 64 rows
  // of B so that the rows being written stay in cache; 8 x 8 register blocks (transpose_tile) where the
  // words are whole (the value-at-a-time loop had taken 15% of U-Net k2s2's grad_weight).
  constexpr int64_t QB = 64;
  const int64_t blocks = ceil_div(rows, QB);
  const bool words = kRows<T> == 1 || HW % 2 == 0, avx2 = isa_level() >= 1;
  parallel_tasks(s.N * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, q0 = (t % blocks) * QB, q1 = std::min(rows, q0 + QB);
      T* d = dst + n * HWp * count;
      const T* a = src + (n * s.C_in + c0) * HW;  // channel c's pixels at a + c * HW
      if (words) {  // (bfloat16: channel rows start 4-byte aligned)
        transpose_tile(reinterpret_cast<const float*>(a) + q0, count, q1 - q0, HW / kRows<T>,
                       reinterpret_cast<float*>(d) + q0 * count, count, avx2);
        continue;
      }
      for (int64_t c = 0; c < count; ++c)
        for (int64_t q = q0; q < q1; ++q) {
          d[(q * count + c) * 2] = a[c * HW + 2 * q];
          d[(q * count + c) * 2 + 1] = 2 * q + 1 < HW ? a[c * HW + 2 * q + 1] : T(0.f);
        }
    }
  });
  return out;
}

// The rows of group g's im2col matrix C, read straight from gy (no deinterleaved copy): row r = (col, kh, kw)
// at input pixel (n, ih, iw) is gy[n, g*cog + col, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW], or 0 outside.
// The per-row index arithmetic is done once.
struct TapRows {
  struct Row {
    int64_t plane, oh0, ow0, ib, ie;  // gy row of (co, oh = 0); oh at ih = 0; ow at iw = 0; iw in [ib, ie) valid
  };
  const ConvT2dShape& s;
  std::vector<Row> rows;
  const bool avx2 = isa_level() >= 1;
  TapRows(const ConvT2dShape& shape, int64_t g) : s(shape) {
    const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW;
    rows.resize(cog * kk);
    for (int64_t r = 0; r < cog * kk; ++r) {
      const int64_t kw = r % s.kW, kh = (r / s.kW) % s.kH, co = g * cog + r / kk;
      const Range iw = inputs_for_tap(kw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
      rows[r] = Row{co * s.H_out, kh * s.dH - s.pH, kw * s.dW - s.pW, iw.begin, iw.end};
    }
  }
  // d[i - iw0] = C[r, (n, ih, i)] for i in [iw0, iw1).
  template <typename T>
  void gather(const T* gy, int64_t r, int64_t n, int64_t ih, int64_t iw0, int64_t iw1, T* d) const {
    const Row& w = rows[r];
    const int64_t oh = ih * s.sH + w.oh0;
    if (oh < 0 || oh >= s.H_out) return std::fill(d, d + (iw1 - iw0), T(0.f));
    const int64_t a = std::clamp(w.ib, iw0, iw1), b = std::clamp(w.ie, a, iw1);
    std::fill(d, d + (a - iw0), T(0.f));
    const T* src = gy + (n * s.C_out * s.H_out + w.plane + oh) * s.W_out + w.ow0;
    strided_values(src + a * s.sW, s.sW, b - a, d + (a - iw0), avx2);
    std::fill(d + (b - iw0), d + (iw1 - iw0), T(0.f));
  }
  // Rows r and r + 1 in one pass over gy when they are taps kw and kw + 1 of one gy row and sW == 2, dW == 1
  // (DCGAN, U-Net): at input pixel i they read gy[..., 2i + ow0] and its right neighbour. Pixel i of row r
  // goes to d[(i - iw0) * step], of row r + 1 to d[(i - iw0) * step + other]: step 2, other 1 interleaves
  // them (then away from the borders it is a straight copy of gy), step 1, other = a row stride writes two
  // rows. False (nothing written) for other rows.
  template <typename T>
  bool gather_pair(const T* gy, int64_t r, int64_t n, int64_t ih, int64_t iw0, int64_t iw1, T* d, int64_t other,
                   int64_t step) const {
    if (s.sW != 2 || s.dW != 1 || r + 1 >= int64_t(rows.size()) || (r % s.kW) + 1 >= s.kW) return false;
    const Row &w0 = rows[r], &w1 = rows[r + 1];
    const int64_t oh = ih * s.sH + w0.oh0;
    const bool inside = oh >= 0 && oh < s.H_out;
    // src[2i + 1]: row r + 1 (only read inside the image)
    const T* src = inside ? gy + (n * s.C_out * s.H_out + w0.plane + oh) * s.W_out + w0.ow0 : gy;
    auto edge = [&](int64_t i) {
      d[(i - iw0) * step] = inside && i >= w0.ib && i < w0.ie ? src[2 * i] : T(0.f);
      d[(i - iw0) * step + other] = inside && i >= w1.ib && i < w1.ie ? src[2 * i + 1] : T(0.f);
    };
    // [a, b): both rows inside the image.
    const int64_t a = inside ? std::clamp(std::max(w0.ib, w1.ib), iw0, iw1) : iw1;
    const int64_t b = inside ? std::clamp(std::min(w0.ie, w1.ie), a, iw1) : iw1;
    for (int64_t i = iw0; i < a; ++i) edge(i);
    if (step == 2 && other == 1) {
      std::copy(src + 2 * a, src + 2 * b, d + 2 * (a - iw0));
    } else {
      T* e = d - iw0 * step;
      for (int64_t i = a; i < b; ++i) e[i * step] = src[2 * i], e[i * step + other] = src[2 * i + 1];
    }
    for (int64_t i = b; i < iw1; ++i) edge(i);
    return true;
  }
};

struct Run {
  int64_t ih, iw0, iw1, j;
};

// The float32 rows of C read from the column-deinterleaved gy instead (deinterleave_columns, rows of Wd =
// W_in + (kW - 1) dW / sW per column phase): tap kw's values along an input row are contiguous there, kw dW =
// q sW + r giving phase r and shift q, and zero outside the image, so the pixels of a run are one plain copy
// (the gather above reads gy sW apart and clamps every run to the tap's valid inputs). Measured on DCGAN
// 128->64 (k4 s2): gathering took 0.73x the micro-kernel's time in grad_input, 0.5x in grad_weight.
struct PhaseRows {
  struct Row {
    int64_t plane, oh0, offset;  // gy row of (co, oh = 0); oh at ih = 0; offset in a deinterleaved row
  };
  const ConvT2dShape& s;
  int64_t Wd;
  std::vector<Row> rows;
  static int64_t width(const ConvT2dShape& s) { return s.W_in + (s.kW - 1) * s.dW / s.sW; }
  // Rows as long as the direct kernels' deinterleaved gy where those could take this configuration (the
  // direct grad_weight of a fused backward then reuses this one: share_deinterleaved_gy).
  static int64_t shared_width(const ConvT2dShape& s) {
    return use_direct(s, at::kFloat) ? std::max(width(s), direct_gy_width(s)) : width(s);
  }
  PhaseRows(const ConvT2dShape& shape, int64_t g) : s(shape), Wd(shared_width(shape)) {
    const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW;
    rows.resize(cog * kk);
    for (int64_t r = 0; r < cog * kk; ++r) {
      const int64_t kw = r % s.kW, kh = (r / s.kW) % s.kH, co = g * cog + r / kk;
      rows[r] = Row{co * s.H_out, kh * s.dH - s.pH, (kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW};
    }
  }
  // d[j + i - iw0] = C[r, (n, ih, i)] for the runs (ih, iw0, iw1, j) of a tile.
  void gather(const float* gyd, int64_t r, int64_t n, const std::vector<Run>& runs, float* d) const {
    const Row& w = rows[r];
    const float* base = gyd + (n * s.C_out * s.H_out + w.plane) * s.sW * Wd + w.offset;
    for (const Run& u : runs) {
      const int64_t oh = u.ih * s.sH + w.oh0, len = u.iw1 - u.iw0;
      float* out = d + u.j;
      if (oh < 0 || oh >= s.H_out) std::memset(out, 0, len * sizeof(float));
      else std::memcpy(out, base + oh * s.sW * Wd + u.iw0, len * sizeof(float));  // (libc's wide copies)
    }
  }
};

// float32 gathers from the deinterleaved gy (PhaseRows) when a gy column feeds more than one tap of a row
// (kW dW > sW with sW > 1: DCGAN's k4 s2): then the deinterleaving pass costs less than the strided reads
// it saves (grad_input of DCGAN 128->64 and 512->256 12-19% faster, grad_weight 2-4%). With sW == 1 the
// gathers are contiguous already, and k2 s2 (U-Net) reads each gy value once: there the extra pass made both
// gradients 11-13% slower.
bool gather_by_phase(const ConvT2dShape& s) { return s.sW > 1 && s.kW * s.dW > s.sW; }

// Calls f(ih, iw0, iw1, j) for the runs of input row ih that the pixels [j0, j0 + count) of an image cover,
// j being the run's offset from j0.
template <typename F>
void for_each_run(const ConvT2dShape& s, int64_t j0, int64_t count, const F& f) {
  for (int64_t j = 0; j < count;) {
    const int64_t ih = (j0 + j) / s.W_in, iw = (j0 + j) % s.W_in, run = std::min(count - j, s.W_in - iw);
    f(ih, iw, iw + run, j);
    j += run;
  }
}

// The runs of pixels [j0, j0 + count) of an image (for_each_run), into `runs`.
void tile_runs(const ConvT2dShape& s, int64_t j0, int64_t count, std::vector<Run>& runs) {
  runs.clear();
  for_each_run(s, j0, count, [&](int64_t ih, int64_t iw0, int64_t iw1, int64_t j) { runs.push_back({ih, iw0, iw1, j}); });
}

// Whether every output pixel is one tap of one input pixel: kernel == stride, no dilation, padding or
// output_padding (U-Net's k2s2). Then the scatter stores instead of adding.
bool taps_tile_output(const ConvT2dShape& s) {
  return s.kH == s.sH && s.kW == s.sW && s.dH == 1 && s.dW == 1 && s.pH == 0 && s.pW == 0 &&
         s.H_out == s.H_in * s.sH && s.W_out == s.W_in * s.sW;
}

// y[i] += z[i] for i < n: AVX2 vectors where the CPU has them (this file is built for baseline x86-64, where
// the compiler's loop takes 4 floats at a time).
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void add_row_avx2(float* y, const float* z, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(z + i)));
  for (; i < n; ++i) y[i] += z[i];
}
#endif
inline void add_row(float* y, const float* z, int64_t n, bool avx2) {
#if defined(__x86_64__)
  if (avx2) return add_row_avx2(y, z, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += z[i];
}

// a (rows x cols, row stride lda) transposed into d (cols x rows, row stride ldd): 8 x 8 register blocks
// (transpose8x8) with AVX2, the rest one value at a time. Also for 32-bit words (bfloat16 pairs) as floats.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void transpose_blocks(const float* a, int64_t rows, int64_t cols, int64_t lda,
                                                          float* d, int64_t ldd) {
  for (int64_t i = 0; i + 8 <= rows; i += 8)
    for (int64_t j = 0; j + 8 <= cols; j += 8) transpose8x8(a + i * lda + j, lda, d + j * ldd + i, ldd);
}
#endif
void transpose_tile(const float* a, int64_t rows, int64_t cols, int64_t lda, float* d, int64_t ldd, bool avx2) {
  int64_t R8 = 0, C8 = 0;
#if defined(__x86_64__)
  if (avx2) R8 = rows / 8 * 8, C8 = cols / 8 * 8, transpose_blocks(a, R8, C8, lda, d, ldd);
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = i < R8 ? C8 : 0; j < cols; ++j) d[j * ldd + i] = a[i * lda + j];
}
// The same for a whole matrix, in parallel blocks of 64 of a's columns (d's rows). For the weights' and
// grad_weight's re-layouts, where copy_ of a transposed matrix runs on one thread: DCGAN 512->256's 8 MB
// W^T (forward) and gw^T (grad_weight) took 2-2.5 ms each, 6-12% of the op.
void parallel_transpose(const float* a, int64_t rows, int64_t cols, int64_t lda, float* d, int64_t ldd) {
  const bool avx2 = isa_level() >= 1;
  parallel_tasks(ceil_div(cols, 64), std::max<int64_t>(1, 4096 / std::max<int64_t>(1, rows)), [&](int64_t t0, int64_t t1) {
    for (int64_t j0 = t0 * 64; j0 < std::min(cols, t1 * 64); j0 += 64)
      transpose_tile(a + j0, rows, std::min<int64_t>(64, cols - j0), lda, d + j0 * ldd, ldd, avx2);
  });
}
// w (A x B x kH x kW, any strides over A and B) as a contiguous (kH kW, A, B) tensor, out[tap][a][b] =
// w[a][b][tap]: the weights tap by tap (the stacked and per-phase GEMMs' B or A). float32 with each kernel's
// taps contiguous: for every a, B x kH kW transposed in registers, in parallel over a (the element-wise copy of
// the permuted view had taken 6% of DCGAN 512->256's channels_last forward); otherwise permute + contiguous.
at::Tensor taps_major(const at::Tensor& w) {
  const int64_t A = w.size(0), B = w.size(1), kk = w.size(2) * w.size(3);
  if (w.scalar_type() != at::kFloat || w.stride(3) != 1 || w.stride(2) != w.size(3))
    return w.permute({2, 3, 0, 1}).contiguous().view({kk, A, B});
  auto out = at::empty({kk, A, B}, w.options().memory_format(c10::MemoryFormat::Contiguous));
  const float* src = w.const_data_ptr<float>();
  float* d = out.mutable_data_ptr<float>();
  const int64_t sa = w.stride(0), sb = w.stride(1);
  const bool avx2 = isa_level() >= 1;
  parallel_tasks(A, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, B * kk)), [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) transpose_tile(src + a * sa, B, kk, sb, d + a * B, A * B, avx2);
  });
  return out;
}

// Tasks: (image, block of output channels), or bands of their input rows; Z tile = the block's (channel,
// tap) rows x up to NB pixels.
template <typename T>
void tiled_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const at::Tensor& y) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, Kp = padded_k<T>(cig);
  const int64_t HW = s.H_in * s.W_in, plane = s.H_out * s.W_out;
  // Z rows per task: about 64 (channel, tap) rows; all of a few output channels (the RGB layer's 3 x 81: B
  // read once for the three, 2.42 -> 2.30 ms)
  const int64_t cb = cog <= kDirectMaxCout && cog * kk <= 512 ? cog : std::min(cog, std::max<int64_t>(1, 64 / kk));
  const int64_t blocks = ceil_div(cog, cb);
  const int64_t NB = tile_columns<T>(Kp);
  const std::vector<T> zeros(s.W_in, T(0.f));
  // Where a y column receives more than one tap of a row (gather_by_phase: kW dW > sW, sW > 1), the col2im adds
  // go to a task-local column-deinterleaved copy of its planes, contiguous per run, which is then interleaved
  // into y once, instead of adding sW apart per tap. Wd covers j = iw + q for every tap, and
  // sW Wd >= W_out + pW, so every output has its slot.
  // Where the taps tile the output (taps_tile_output: U-Net's k2s2), float32 stores each output once with the
  // bias, with no fill of y first (U-Net 128->64 1.24-1.41 -> 1.16-1.32 ms); in bfloat16 that measured
  // 12% slower (0.79-0.91 -> 0.90-1.06 ms), so it keeps the fill and the adds.
  const bool phased = gather_by_phase(s), tiling = taps_tile_output(s) && std::is_same_v<T, float>;
  const int64_t Wd = std::max(PhaseRows::width(s), ceil_div(s.W_out + s.pW, s.sW));
  const int64_t yd_size = phased ? cb * s.H_out * s.sW * Wd : 0;
  // Row bands (see below) where there are fewer than 8 (image, channel block) tasks: about 16 per task, of
  // R >= (kH - 1) dH / sH rows. The choice depends on the shape only.
  const int64_t R = s.N * blocks >= 8 ? s.H_in : std::max(ceil_div(s.H_in, 16), ceil_div((s.kH - 1) * s.dH, s.sH));
  const int64_t bands = ceil_div(s.H_in, std::max<int64_t>(1, R));
  const bool avx2 = isa_level() >= 1;
  // channels_last x (float32, one output channel in all: y's layout is NCHW's; see tiled_nhwc_forward): each
  // block of pixels transposed in cache into B
  const bool nhwc_x = !x.is_contiguous();
  TORCH_INTERNAL_ASSERT(!nhwc_x || (kRows<T> == 1 && s.C_out == 1));
  std::vector<Range> kw_inputs(s.kW);  // the input columns each kw reaches
  for (int64_t kw = 0; kw < s.kW; ++kw) kw_inputs[kw] = inputs_for_tap(kw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
  const float* bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* yp = y.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto a = padded(w.narrow(0, g * cig, cig).reshape({cig, cog * kk}).t(), Kp);  // rows (col, tap)
    const at::Tensor xb = forward_b<T>(s, x, g * cig, cig, Kp, zeros);
    const T* ap = a.const_data_ptr<T>();
    const T* xp = xb.const_data_ptr<T>();
    // Image n's B: the packed copy (bfloat16) or its channels in x (float); columns kRows apart.
    const int64_t image_stride = kRows<T> == 2 ? Kp * HW : s.C_in * HW, first = kRows<T> == 2 ? 0 : g * cig * HW;
    // A task's work: the input rows [ih0, ih1) of image n into the planes of its channels [c0, c0 + nc):
    // y's (pre-filled, or stored once where the taps tile the output) or the deinterleaved ones at yd.
    auto rows = [&](int64_t n, int64_t c0, int64_t nc, int64_t ih0, int64_t ih1, float* yd, float* z, T* xt,
                    std::vector<Run>& runs) {
      float* planes = yp + (n * s.C_out + g * cog + c0) * plane;
      for (int64_t j0 = ih0 * s.W_in; j0 < ih1 * s.W_in; j0 += NB) {
        const int64_t nb = std::min(NB, ih1 * s.W_in - j0);
        const T* bp = xp + n * image_stride + first + j0 * kRows<T>;  // B: x's channels, HW apart
        int64_t ldb = HW;
        if constexpr (kRows<T> == 1) {
          if (nhwc_x) {  // the block's pixels (rows of C_in) transposed in cache: channels x pixels
            transpose_tile(xp + (n * HW + j0) * s.C_in + g * cig, nb, cig, s.C_in, xt, NB, avx2);
            bp = xt, ldb = NB;
          }
        }
        kernel(nc * kk, nb, Kp, Kp, ldb, NB, false, ap + c0 * kk * Kp, bp, z);
        // col2im of the tile: y[n, c, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW] += Z[(c, kh, kw), (ih, iw)],
        // row of Z by row, over the tile's runs of input rows.
        tile_runs(s, j0, nb, runs);
        if (tiling) {  // every output once: stored with the bias, y[c][ih sH + kh][iw sW + kw]
          for (int64_t c = 0; c < nc; ++c) {
            const float add = bias ? bias[g * cog + c0 + c] : 0.f;
            for (int64_t kh = 0; kh < s.kH; ++kh)
              for (const Run& u : runs) {
                float* yr = planes + c * plane + (u.ih * s.sH + kh) * s.W_out;
                for (int64_t kw = 0; kw < s.kW; ++kw) {
                  const float* zr = z + ((c * s.kH + kh) * s.kW + kw) * NB + u.j - u.iw0;
                  for (int64_t i = u.iw0; i < u.iw1; ++i) yr[i * s.sW + kw] = zr[i] + add;
                }
              }
          }
          continue;
        }
        if (phased) {  // into the deinterleaved planes: yd[c][oh][r][iw + q] with kw dW = q sW + r
          for (int64_t c = 0; c < nc; ++c)
            for (int64_t kh = 0; kh < s.kH; ++kh)
              for (int64_t kw = 0; kw < s.kW; ++kw) {
                const float* zrow = z + ((c * s.kH + kh) * s.kW + kw) * NB;
                float* base = yd + c * s.H_out * s.sW * Wd + (kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW;
                for (const Run& u : runs) {
                  const int64_t oh = u.ih * s.sH - s.pH + kh * s.dH;
                  if (oh < 0 || oh >= s.H_out) continue;
                  add_row(base + oh * s.sW * Wd + u.iw0, zrow + u.j, u.iw1 - u.iw0, avx2);
                }
              }
          continue;
        }
        for (int64_t c = 0; c < nc; ++c)
          for (int64_t kh = 0; kh < s.kH; ++kh)
            for (int64_t kw = 0; kw < s.kW; ++kw) {
              const float* zrow = z + ((c * s.kH + kh) * s.kW + kw) * NB;
              float* ybase = planes + c * plane - s.pW + kw * s.dW;
              const Range& r = kw_inputs[kw];
              for (const Run& u : runs) {
                const int64_t oh = u.ih * s.sH - s.pH + kh * s.dH;
                if (oh < 0 || oh >= s.H_out) continue;
                const int64_t i0 = std::max(r.begin, u.iw0), i1 = std::min(r.end, u.iw1);
                const float* zr = zrow + u.j - u.iw0;
                float* yr = ybase + oh * s.W_out;
                if (s.sW == 1) add_row(yr + i0, zr + i0, i1 - i0, avx2);
                else if (s.sW == 2) for (int64_t i = i0; i < i1; ++i) yr[2 * i] += zr[i];
                else for (int64_t i = i0; i < i1; ++i) yr[i * s.sW] += zr[i];
              }
            }
      }
    };
    // Before: the planes (y's or yd's) filled with the bias, unless the taps tile the output. After: y[c][oh][ow]
    // = yd[c][oh][r][j], ow + pW = j sW + r. Output rows [oh0, oh1) of nc channels.
    auto fill = [&](int64_t n, int64_t c0, int64_t nc, int64_t oh0, int64_t oh1, float* yd) {
      float* planes = yp + (n * s.C_out + g * cog + c0) * plane;
      for (int64_t c = 0; c < nc; ++c) {
        const float v = bias ? bias[g * cog + c0 + c] : 0.f;
        if (phased) std::fill(yd + (c * s.H_out + oh0) * s.sW * Wd, yd + (c * s.H_out + oh1) * s.sW * Wd, v);
        else if (!tiling) std::fill(planes + c * plane + oh0 * s.W_out, planes + c * plane + oh1 * s.W_out, v);
      }
    };
    auto interleave_out = [&](int64_t n, int64_t c0, int64_t nc, int64_t oh0, int64_t oh1, const float* yd) {
      float* planes = yp + (n * s.C_out + g * cog + c0) * plane;
      for (int64_t c = 0; c < nc; ++c)
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          const float* d = yd + (c * s.H_out + oh) * s.sW * Wd;
          float* yr = planes + c * plane + oh * s.W_out;
          for (int64_t r = 0; r < s.sW; ++r) {
            const int64_t j0 = std::max<int64_t>(0, ceil_div(s.pW - r, s.sW));
            const int64_t j1 = floor_div(s.W_out - 1 + s.pW - r, s.sW) + 1;
            const float* dr = d + r * Wd;
            float* yo = yr + r - s.pW;
            for (int64_t j = j0; j < j1; ++j) yo[j * s.sW] = dr[j];
          }
        }
    };
    if (bands == 1) {
      parallel_tasks(s.N * blocks, 1, [&](int64_t t0, int64_t t1) {
        std::vector<float> z(cb * kk * NB);
        const std::unique_ptr<T[]> xt(new T[nhwc_x ? cig * NB : 0]);
        // The deinterleaved planes: a per-thread buffer kept across calls up to 32 MB, as scratch() does
        // (megabytes for large outputs; a fresh vector per task chunk paid page faults each time).
        thread_local std::vector<float> kept;
        std::vector<float> own;
        std::vector<float>& yd = yd_size * int64_t(sizeof(float)) <= (int64_t(32) << 20) ? kept : own;
        if (int64_t(yd.size()) < yd_size) yd.resize(yd_size);
        std::vector<Run> runs;
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n = t / blocks, c0 = (t % blocks) * cb, nc = std::min(cb, cog - c0);
          fill(n, c0, nc, 0, s.H_out, yd.data());
          rows(n, c0, nc, 0, s.H_in, yd.data(), z.data(), xt.get(), runs);
          if (phased) interleave_out(n, c0, nc, 0, s.H_out, yd.data());
        }
      });
      continue;
    }
    // Bands of R input rows (few images and channel blocks: the SR layers' one image and one output channel
    // were one task): the even bands of every task, then the odd ones, so that two bands adding to the same
    // output rows never run at once (R sH >= (kH - 1) dH: a band's outputs end before those of the band two
    // on begin), each output summing its bands in the same order whatever the thread count. The planes are
    // shared by a task's bands: y's, or one deinterleaved copy per task.
    // The tasks in rounds of `round` whose deinterleaved planes together stay within 32 MB (or one task), so
    // the planes never take more than that or one task's (about its output's size).
    const int64_t units = s.N * blocks;
    const int64_t round = phased ? std::clamp<int64_t>((int64_t(8) << 20) / std::max<int64_t>(1, yd_size), 1, units) : units;
    const at::Tensor yd_all = phased ? scratch(Scratch::planes, round * yd_size, y.options()) : at::Tensor();
    const int64_t row_tasks = ceil_div(s.H_out, 16);
    for (int64_t u0 = 0; u0 < units; u0 += round) {
      const int64_t nu = std::min(round, units - u0);
      auto yd_of = [&](int64_t u) { return phased ? yd_all.mutable_data_ptr<float>() + (u - u0) * yd_size : nullptr; };
      parallel_tasks(nu * row_tasks, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t u = u0 + t / row_tasks, oh0 = (t % row_tasks) * 16, c0 = (u % blocks) * cb;
          fill(u / blocks, c0, std::min(cb, cog - c0), oh0, std::min(s.H_out, oh0 + 16), yd_of(u));
        }
      });
      for (int64_t parity = 0; parity < 2; ++parity) {
        const int64_t half = (bands - parity + 1) / 2;  // bands parity, parity + 2, ...
        parallel_tasks(nu * half, 1, [&](int64_t t0, int64_t t1) {
          std::vector<float> z(cb * kk * NB);
          const std::unique_ptr<T[]> xt(new T[nhwc_x ? cig * NB : 0]);
          std::vector<Run> runs;
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t u = u0 + t / half, band = 2 * (t % half) + parity, c0 = (u % blocks) * cb;
            rows(u / blocks, c0, std::min(cb, cog - c0), band * R, std::min(s.H_in, (band + 1) * R), yd_of(u),
                 z.data(), xt.get(), runs);
          }
        });
      }
      if (phased)
        parallel_tasks(nu * row_tasks, 1, [&](int64_t t0, int64_t t1) {
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t u = u0 + t / row_tasks, oh0 = (t % row_tasks) * 16, c0 = (u % blocks) * cb;
            interleave_out(u / blocks, c0, std::min(cb, cog - c0), oh0, std::min(s.H_out, oh0 + 16), yd_of(u));
          }
        });
    }
  }
}

// Tasks: (image, block of NB pixels); the C tile (KB taps x those pixels; packed for bfloat16) is gathered
// and gx[n, group's channels, pixels] += Wg[:, taps] C_tile straight into gx, for the KB-blocks of taps in
// order.
template <typename T>
void tiled_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group(), taps = s.cout_per_group() * s.kH * s.kW, Kp = padded_k<T>(taps);
  // float32 tiles of up to 768 pixels (still about 256 KB) where the taps are few: FSRCNN x4 / FSRCNN-s x2
  // (81 taps) 1.92 / 1.96 -> 1.70 / 1.76 ms against 256
  const int64_t KB = std::min<int64_t>(Kp, 512 * kRows<T>);
  const int64_t NB = kRows<T> == 1 ? std::clamp<int64_t>(65536 / KB / 16 * 16, 16, 768) : tile_columns<T>(KB);
  const int64_t HW = s.H_in * s.W_in, per_image = ceil_div(HW, NB);
  const T* src = gy.const_data_ptr<T>();
  float* out = gx.mutable_data_ptr<float>();
  const at::Tensor gyd = kRows<T> == 1 && gather_by_phase(s) ? deinterleave_columns(s, gy, PhaseRows::shared_width(s)) : at::Tensor();
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto a = padded(w.narrow(0, g * cig, cig).reshape({cig, taps}), Kp);
    const T* ap = a.const_data_ptr<T>();
    const TapRows tr(s, g);
    const PhaseRows pr(s, g);
    parallel_tasks(s.N * per_image, 1, [&](int64_t t0, int64_t t1) {
      const std::unique_ptr<T[]> tile(new T[KB * NB]);  // (not zeroed: every row is gathered in full)
      std::vector<T> pair(2 * s.W_in);
      std::vector<Run> runs;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / per_image, j0 = (t % per_image) * NB, nb = std::min(NB, HW - j0);
        tile_runs(s, j0, nb, runs);
        for (int64_t k0 = 0; k0 < Kp; k0 += KB) {
          const int64_t kb = std::min(KB, Kp - k0);
          for (int64_t p = 0; p < kb / kRows<T>; ++p) {
            const int64_t r = k0 + p * kRows<T>;
            T* d = tile.get() + p * NB * kRows<T>;
            if constexpr (kRows<T> == 1) {
              if (gyd.defined()) pr.gather(gyd.const_data_ptr<float>(), r, n, runs, d);
              else for (const Run& u : runs) tr.gather(src, r, n, u.ih, u.iw0, u.iw1, d + u.j);
            } else {  // rows r and r + 1 (a zero row past the last tap), interleaved
              for (const Run& u : runs) {
                if (tr.gather_pair(src, r, n, u.ih, u.iw0, u.iw1, d + 2 * u.j, 1, 2)) continue;
                const int64_t len = u.iw1 - u.iw0;
                if (r < taps) tr.gather(src, r, n, u.ih, u.iw0, u.iw1, pair.data());
                else std::fill(pair.begin(), pair.begin() + len, T(0.f));
                if (r + 1 < taps) tr.gather(src, r + 1, n, u.ih, u.iw0, u.iw1, pair.data() + s.W_in);
                else std::fill(pair.begin() + s.W_in, pair.begin() + s.W_in + len, T(0.f));
                interleave(pair.data(), pair.data() + s.W_in, len, d + 2 * u.j);
              }
            }
          }
          kernel(cig, nb, kb, Kp, NB, HW, k0 > 0, ap + k0, tile.get(), out + (n * s.C_in + g * cig) * HW + j0);
        }
      }
    });
  }
}

// Tasks: blocks of MB taps (rows of gw_g^T); each walks the images and their pixels in blocks of KB, the C
// tile (MB taps x KB pixels) gathered row-major, and accumulates gw_g^T[block] += C_tile X^T[pixels].
template <typename T>
void tiled_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t cig = s.cin_per_group(), kk = s.kH * s.kW, taps = s.cout_per_group() * kk;
  const int64_t HW = s.H_in * s.W_in, HWp = padded_k<T>(HW);
  constexpr int64_t KB = 256;
  const int64_t MB = std::clamp<int64_t>(ceil_div(ceil_div(taps, 8), 16) * 16, 16, 64), tasks = ceil_div(taps, MB);
  const T* src = gy.const_data_ptr<T>();
  auto acc = at::empty({taps, cig}, gw.options());
  float* accp = acc.mutable_data_ptr<float>();
  const at::Tensor gyd = kRows<T> == 1 && gather_by_phase(s) ? deinterleave_columns(s, gy, PhaseRows::shared_width(s)) : at::Tensor();
  for (int64_t g = 0; g < s.groups; ++g) {
    const at::Tensor xt = weight_b<T>(s, x, g * cig, cig);
    const T* xp = xt.const_data_ptr<T>();
    const TapRows tr(s, g);
    const PhaseRows pr(s, g);
    parallel_tasks(tasks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<T> tile(MB * KB);
      std::vector<Run> runs;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * MB, mb = std::min(MB, taps - r0);
        bool first = true;
        for (int64_t n = 0; n < s.N; ++n)
          for (int64_t j0 = 0; j0 < HW; j0 += KB) {
            const int64_t kb = std::min(KB, HW - j0), kbp = padded_k<T>(kb);
            if (gyd.defined()) {
              if constexpr (kRows<T> == 1) {
                tile_runs(s, j0, kb, runs);
                for (int64_t r = 0; r < mb; ++r) pr.gather(gyd.const_data_ptr<float>(), r0 + r, n, runs, tile.data() + r * KB);
              }
            } else {
              for (int64_t r = 0; r < mb; ++r) {
                T* d = tile.data() + r * KB;
                bool both = false;  // rows r and r + 1 in one pass
                for_each_run(s, j0, kb, [&](int64_t ih, int64_t iw0, int64_t iw1, int64_t j) {
                  if (r + 1 < mb && tr.gather_pair(src, r0 + r, n, ih, iw0, iw1, d + j, KB, 1)) both = true;
                  else tr.gather(src, r0 + r, n, ih, iw0, iw1, d + j);
                });
                if (kbp > kb) d[kb] = T(0.f);
                if (both) {
                  if (kbp > kb) d[KB + kb] = T(0.f);
                  ++r;
                }
              }
            }
            kernel(mb, cig, kbp, KB, cig, cig, !first, tile.data(), xp + (n * HWp + j0) * cig, accp + r0 * cig);
            first = false;
          }
      }
    });
    TORCH_INTERNAL_ASSERT(gw.is_contiguous());  // (gw_g = acc^T: cig x taps at g cig taps)
    parallel_transpose(accp, taps, cig, cig, gw.mutable_data_ptr<float>() + g * cig * taps, taps);
  }
}

// float32 grad_weight with stride 1 and no gathers (NCHW, and channels_last below). gw[ci, co, kh, kw] = sum
// over (n, ih, iw) of x[n, ci, ih, iw] gy[n, co, ih + kh dH - pH, iw + kw dW - pW]. gy is copied into padded
// planes P[n][co] (each task those of its output channels, one image at a time, right before its GEMMs) of
// Ha x Wd values, entry (a, b) = gy[n, co, a - pH, b - pW] or 0 outside gy, Ha = H_in + (kH - 1) dH,
// Wd = W_in + (kW - 1) dW: every tap's values for all input pixels (ih, iw) are then ONE contiguous run of the
// plane if the pixels are counted on the padded grid ih Wd + iw, so a tap is a plain GEMM gwT[tap] (co x ci)
// += P(shifted by kh dH Wd + kw dW) (co x pixels, row stride = the plane's) X^T (pixels x ci, with zero rows
// for the grid's columns iw >= W_in). Those zero rows meet gy values of a neighbouring row or plane (finite
// values times exact zeros add nothing; a NaN or inf in gy can reach more entries of gw than PyTorch's, which
// has NaN/inf there too, in the taps that read it).
// Tasks: blocks of output channels, each walking the images and K-chunks of pixels in order and, per chunk
// (X^T's rows in cache), every tap: one sum order per element whatever the thread count.
// 11-26% faster than the gathered tiles on 3x3 / 5x5, dilated or not, 32-128 channels. With gy's stride
// phases as planes (below) it is slower at stride 2 on small images (DCGAN 512->256 on 8x8 images 0.86x) and
// where kernel == stride (U-Net k2s2 0.91x): the padded grid's extra columns are a large share of small
// images, and every K-chunk ends with its image; by_planes says where it is taken.
// bfloat16: the same, X^T's pixels in pairs (B's rows), Wd rounded up to even so that a pair is two
// neighbours of one grid row. Against the gathered tiles, on the AMX tiles: 3x3 64 -> 64 0.74 -> 0.35 ms
// (dilated alike), 5x5 32 -> 48 0.44 -> 0.13, 3x3 128 -> 128 1.00 -> 0.61; one to three output channels even.
// With strides above 1 the planes are per stride phase of gy: tap kh reads gy row sH ih + kh dH - pH =
// sH (ih + q) + r (r in [0, sH)), i.e. row ih + q of phase r's plane, whose row a holds gy row sH (a + q0) + r
// (q0: the least q of the taps); likewise for columns. Planes (n, phase, co), Ha = H_in + q1 - q0 rows.
struct GyPlanes {
  int64_t Ha, Wd, size, phases, qh0, qw0;  // plane rows, row length, values per plane, phases; least shifts
  GyPlanes(const ConvT2dShape& s, int64_t rows)  // rows: B's rows per packed row (Wd a multiple)
      : phases(s.sH * s.sW), qh0(shift(0, s.dH, s.pH, s.sH)), qw0(shift(0, s.dW, s.pW, s.sW)) {
    // q grows with k: the first tap has the least, the last the greatest
    Ha = s.H_in + shift(s.kH - 1, s.dH, s.pH, s.sH) - qh0;
    Wd = ceil_div(s.W_in + shift(s.kW - 1, s.dW, s.pW, s.sW) - qw0, rows) * rows, size = Ha * Wd;
    // columns b in [b0[rw], b1[rw]) of a phase-rw plane row hold gy's ow = sW (b + qw0) + rw in [0, W_out)
    for (int64_t rw = 0; rw < s.sW; ++rw) {
      b0.push_back(std::clamp<int64_t>(ceil_div(-rw, s.sW) - qw0, 0, Wd));
      b1.push_back(std::clamp<int64_t>(floor_div(s.W_out - 1 - rw, s.sW) + 1 - qw0, b0.back(), Wd));
    }
  }
  std::vector<int64_t> b0, b1;
  // Tap k's q and r along a dimension: k d - p = st q + r.
  static int64_t shift(int64_t k, int64_t d, int64_t p, int64_t st) { return floor_div(k * d - p, st); }
  static int64_t rest(int64_t k, int64_t d, int64_t p, int64_t st) { return k * d - p - st * shift(k, d, p, st); }
  // The plane group (phase) of tap (kh, kw), and the offset of its run within a plane.
  int64_t phase(const ConvT2dShape& s, int64_t kh, int64_t kw) const {
    return rest(kh, s.dH, s.pH, s.sH) * s.sW + rest(kw, s.dW, s.pW, s.sW);
  }
  int64_t tap_offset(const ConvT2dShape& s, int64_t kh, int64_t kw) const {
    return (shift(kh, s.dH, s.pH, s.sH) - qh0) * Wd + shift(kw, s.dW, s.pW, s.sW) - qw0;
  }
};

// The planes of image n and gy channels [co0, co0 + cb), every phase: plane (phase, co) at dst + (phase cb +
// co - co0) size. Each gy row is read once, its sW column phases written one after the other.
template <typename T>
void build_planes(const ConvT2dShape& s, const GyPlanes& P, const T* gy, int64_t n, int64_t co0, int64_t cb, T* dst,
                  bool avx2) {
  for (int64_t c = 0; c < cb; ++c)
    for (int64_t a = 0; a < P.Ha; ++a)
      for (int64_t rh = 0; rh < s.sH; ++rh) {
        const int64_t oh = s.sH * (a + P.qh0) + rh;
        for (int64_t rw = 0; rw < s.sW; ++rw) {
          T* dr = dst + ((rh * s.sW + rw) * cb + c) * P.size + a * P.Wd;
          if (oh < 0 || oh >= s.H_out) {
            std::fill(dr, dr + P.Wd, T(0.f));
            continue;
          }
          const int64_t b0 = P.b0[rw], b1 = P.b1[rw];
          const T* gr = gy + ((n * s.C_out + co0 + c) * s.H_out + oh) * s.W_out + rw + s.sW * P.qw0;  // b at gr + sW b
          for (int64_t b = 0; b < b0; ++b) dr[b] = T(0.f);  // (a few values: no memset calls)
          strided_values(gr + s.sW * b0, s.sW, b1 - b0, dr + b0, avx2);
          for (int64_t b = b1; b < P.Wd; ++b) dr[b] = T(0.f);
        }
      }
}

// The same from channels_last gy (float32), whose pixels hold their channels contiguous: per plane row, the
// pixels' blocks of cb channels transposed (8 x 8 register blocks, transpose_tile).
void build_planes_nhwc(const ConvT2dShape& s, const GyPlanes& P, const float* gy, int64_t n, int64_t co0, int64_t cb,
                       float* dst, bool avx2) {
  for (int64_t a = 0; a < P.Ha; ++a)
    for (int64_t rh = 0; rh < s.sH; ++rh) {
      const int64_t oh = s.sH * (a + P.qh0) + rh;
      for (int64_t rw = 0; rw < s.sW; ++rw) {
        float* d = dst + (rh * s.sW + rw) * cb * P.size + a * P.Wd;  // channel c's row at d + c size
        const int64_t b0 = oh < 0 || oh >= s.H_out ? P.Wd : P.b0[rw], b1 = std::max(b0, P.b1[rw]);
        for (int64_t c = 0; c < cb; ++c) {
          std::fill(d + c * P.size, d + c * P.size + b0, 0.f);
          std::fill(d + c * P.size + b1, d + c * P.size + P.Wd, 0.f);
        }
        if (b1 == b0) continue;
        // pixel b's channels at g + b sW C_out
        const float* g = gy + ((n * s.H_out + oh) * s.W_out + rw + s.sW * P.qw0) * s.C_out + co0;
        transpose_tile(g + b0 * s.sW * s.C_out, b1 - b0, cb, s.sW * s.C_out, d + b0, P.size, avx2);
      }
    }
}

// Channels [c0, c0 + count) of x as X^T on the padded grid: (N, H_in * Wd, count), the rows of the grid's
// columns iw >= W_in zero; bfloat16 in pairs of rows ((N, H_in * Wd / 2, count, 2)). A transpose of 32-bit
// words (a float, or two neighbouring bfloat16 pixels), in 8 x 8 register blocks where the rows allow.
template <typename T>
at::Tensor grid_xt(const ConvT2dShape& s, const at::Tensor& x, int64_t c0, int64_t count, int64_t Wd, bool nhwc) {
  constexpr int64_t kR = kRows<T>;
  const int64_t HW = s.H_in * s.W_in, grid = s.H_in * Wd;
  auto out = scratch(Scratch::packed_x, s.N * grid * count, x.options()).view({s.N, grid, count});
  const T* src = x.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  // a transpose of words when every image row is a whole number of them (and word-aligned)
  const bool words = s.W_in % kR == 0, avx2 = isa_level() >= 1;
  parallel_tasks(s.N * s.H_in, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / s.H_in, ih = t % s.H_in;
      T* d = dst + (n * grid + ih * Wd) * count;  // pixel iw, channel c at ((iw / kR) * count + c) * kR + iw % kR
      if (nhwc) {  // (float32) the pixels' channels as they are
        const T* a = src + (n * HW + ih * s.W_in) * s.C_in + c0;
        for (int64_t iw = 0; iw < s.W_in; ++iw) std::copy(a + iw * s.C_in, a + iw * s.C_in + count, d + iw * count);
        std::fill(d + s.W_in * count, d + Wd * count, T(0.f));
        continue;
      }
      const T* a = src + (n * s.C_in + c0) * HW + ih * s.W_in;  // channel c's row at a + c * HW
      if (words)
        transpose_tile(reinterpret_cast<const float*>(a), count, s.W_in / kR, HW / kR, reinterpret_cast<float*>(d),
                       count, avx2);
      else
        for (int64_t c = 0; c < count; ++c)
          for (int64_t iw = 0; iw < s.W_in; ++iw) d[((iw / kR) * count + c) * kR + iw % kR] = a[c * HW + iw];
      for (int64_t iw = s.W_in; iw < Wd; ++iw)  // the grid's columns past the image: zero rows
        for (int64_t c = 0; c < count; ++c) d[((iw / kR) * count + c) * kR + iw % kR] = T(0.f);
    }
  });
  return out;
}

template <typename T>
void planes_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw,
                        bool nhwc) {
  // channels_last only in float32 (tiled_nhwc_grad_weight): the bfloat16 planes have no NHWC builder
  TORCH_INTERNAL_ASSERT(!nhwc || (std::is_same_v<T, float>));
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  const GyPlanes P(s, kRows<T>);
  const int64_t grid = s.H_in * P.Wd;
  // X^T chunk ~256 KB (float32), in whole pairs of rows (bfloat16)
  const int64_t KC = std::clamp<int64_t>(65536 / std::max<int64_t>(1, cig), 64, 1024) / kRows<T> * kRows<T>;
  const int64_t CB = std::min<int64_t>(cog, 16), tasks = ceil_div(cog, CB);  // (16 x 16 x 64 was no faster on AMX)
  const T* src = gy.const_data_ptr<T>();
  const bool avx2 = isa_level() >= 1;
  std::vector<int64_t> phase(kk), shift(kk);  // tap's plane group, and the offset of its run within a plane
  for (int64_t kh = 0; kh < s.kH; ++kh)
    for (int64_t kw = 0; kw < s.kW; ++kw)
      phase[kh * s.kW + kw] = P.phase(s, kh, kw), shift[kh * s.kW + kw] = P.tap_offset(s, kh, kw);
  auto acc = at::empty({kk, cog, cig}, gw.options());  // gw_g as (tap, co, ci)
  float* accp = acc.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    const at::Tensor xt = grid_xt<T>(s, x, g * cig, cig, P.Wd, nhwc);
    const T* xp = xt.const_data_ptr<T>();
    parallel_tasks(tasks, 1, [&](int64_t t0, int64_t t1) {
      // The task's planes of one image, built right before its GEMMs read them (in cache; one pass over gy
      // for all tasks). + Wd: the last tap's run reads up to Wd values past the last plane (into the zero-X
      // columns), which stay zero.
      std::vector<T> planes(P.phases * CB * P.size + P.Wd, T(0.f));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t co0 = t * CB, cb = std::min(CB, cog - co0);
        for (int64_t n = 0; n < s.N; ++n) {
          if constexpr (std::is_same_v<T, float>)
            if (nhwc) build_planes_nhwc(s, P, src, n, g * cog + co0, cb, planes.data(), avx2);
          if (!nhwc) build_planes(s, P, src, n, g * cog + co0, cb, planes.data(), avx2);
          for (int64_t j0 = 0; j0 < grid; j0 += KC) {
            const int64_t kc = std::min(KC, grid - j0);
            // rows co of A: the planes (phase, co), size apart
            for (int64_t tap = 0; tap < kk; ++tap)
              kernel(cb, cig, kc, P.size, cig, cig, n > 0 || j0 > 0,
                     planes.data() + phase[tap] * cb * P.size + shift[tap] + j0, xp + (n * grid + j0) * cig,
                     accp + (tap * cog + co0) * cig);
          }
        }
      }
    });
    // gw[g*cig + ci, co, kh, kw] = acc[tap, co, ci]
    gw.narrow(0, g * cig, cig).view({cig, cog, kk}).copy_(acc.permute({2, 1, 0}));
  }
}

// float32 grad_weight with few output channels per group (the direct path's layers: FSRCNN's last layer, RGB
// outputs), NCHW or channels_last, on the im2col rows of gy, C (taps x pixels), in slices of the pixels.
// Each slice (a fixed run of blocks of whole image rows: the same for any thread count) gathers its C
// tiles as tiled_grad_input does (from the column-deinterleaved gy, shared with a fused backward's
// grad_input, or straight from gy) and sums one product per block into its own partial; the partials are
// added in slice order: gw_g^T (taps x cig) += C_tile X^T[block], x's pixels read in place (channels_last)
// or the block of NCHW x transposed in cache (the tile transposed instead, with x's rows read in place as
// A, ran 1.1-1.6x slower). tiled_grad_weight's tap blocks have M = 16 on these shapes and stream X^T once
// per block. Taken by the channels_last layers of the direct path (direct_on_tiles); in NCHW their direct
// kernels' dot products are as fast, so this serves the gemm path when forced. gy's rows are read as NCHW:
// channels_last gy only with one output channel in all (the same memory) or when gathered from the
// deinterleaved copy, which reads either layout.
}  // namespace
bool grad_weight_by_slices(const ConvT2dShape& s, bool nhwc) {
  return s.cout_per_group() <= kDirectMaxCout && (!nhwc || s.C_out == 1 || gather_by_phase(s));
}
namespace {
void sliced_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const bool nhwc = !x.is_contiguous(), avx2 = isa_level() >= 1;
  const int64_t cig = s.cin_per_group(), taps = s.cout_per_group() * s.kH * s.kW, HW = s.H_in * s.W_in;
  // blocks of whole rows of about P pixels (the C tile near 160 KB), or of P pixels of a row where rows are
  // longer. P up to 512: FSRCNN-s x2 / x4 channels_last 1.69-1.86 / 1.23-1.31 -> 1.58 / 1.11 ms against 256
  const int64_t P = std::clamp<int64_t>(40960 / taps / 16 * 16, 64, 512);
  const int64_t NB = s.W_in <= P ? s.W_in * std::max<int64_t>(1, P / s.W_in) : P;
  const int64_t per_image = ceil_div(HW, NB), blocks = s.N * per_image;
  const int64_t per_slice = ceil_div(blocks, std::min<int64_t>(blocks, 32)), slices = ceil_div(blocks, per_slice);
  const float* src = gy.const_data_ptr<float>();
  const float* xp = x.const_data_ptr<float>();
  const at::Tensor gyd = gather_by_phase(s) ? deinterleave_columns(s, gy, PhaseRows::shared_width(s)) : at::Tensor();
  auto partial = at::empty({slices, taps * cig}, gw.options());  // (taps, cig) each
  float* pp = partial.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    const TapRows tr(s, g);
    const PhaseRows pr(s, g);
    parallel_tasks(slices, 1, [&](int64_t t0, int64_t t1) {
      // (not zeroed: every row of the tile is gathered in full, and the transposed part written)
      const std::unique_ptr<float[]> tile(new float[taps * NB]), tt(new float[nhwc ? 0 : NB * cig]);
      std::vector<Run> runs;
      for (int64_t sl = t0; sl < t1; ++sl) {
        float* acc = pp + sl * taps * cig;
        const int64_t b0 = sl * per_slice, b1 = std::min(blocks, b0 + per_slice);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t n = b / per_image, j0 = (b % per_image) * NB, nb = std::min(NB, HW - j0);
          tile_runs(s, j0, nb, runs);
          for (int64_t r = 0; r < taps; ++r) {
            float* d = tile.get() + r * NB;
            if (gyd.defined()) pr.gather(gyd.const_data_ptr<float>(), r, n, runs, d);
            else for (const Run& u : runs) tr.gather(src, r, n, u.ih, u.iw0, u.iw1, d + u.j);
          }
          if (nhwc) {
            kernel(taps, cig, nb, NB, s.C_in, cig, b > b0, tile.get(), xp + (n * HW + j0) * s.C_in + g * cig, acc);
          } else {
            transpose_tile(xp + (n * s.C_in + g * cig) * HW + j0, cig, nb, HW, tt.get(), cig, avx2);
            kernel(taps, cig, nb, NB, cig, cig, b > b0, tile.get(), tt.get(), acc);
          }
        }
      }
    });
    // gw[g cig + ci, tap]: the partials' sum in slice order
    auto acc = partial[0].clone();
    for (int64_t sl = 1; sl < slices; ++sl) acc.add_(partial[sl]);
    const auto gwg = gw.narrow(0, g * cig, cig).view({cig, taps});
    gwg.copy_(acc.view({taps, cig}).t());
  }
}

// Whether NCHW grad_weight runs on the planes: stride 1, or strides above 1 where a stride phase has 2+ taps
// (kernel > stride) with 16+ output channels and rows of 16+ pixels. Against the gathered tiles: DCGAN
// 128->64 float32 8.9 -> 8.5 ms, bfloat16 4.1 -> 3.5; decoder k3s2 64->32 on 32x32 float32 2.0 -> 1.7,
// bfloat16 even. Not taken: rows of 8 (DCGAN 512->256 bfloat16 12.6 -> 19.0), kernel == stride (U-Net k2s2
// bfloat16 0.60 -> 0.91), 1-3 output channels (DCGAN 64->3 bfloat16 1.3 -> 1.8).
bool by_planes(const ConvT2dShape& s) {
  if (s.sH == 1 && s.sW == 1) return true;
  return s.kH * s.dH > s.sH && s.kW * s.dW > s.sW && s.cout_per_group() >= 16 && s.W_in >= 16;
}

// ---- the same on channels_last (NHWC) images: pixels are the GEMM rows (see gemm_nhwc.cpp) -------------

// (K x N) row-major float32 matrix b as the micro-kernel's B: float32 as it is (contiguous), bfloat16 in
// pairs of rows, K padded to even.
template <typename T>
at::Tensor as_b(const at::Tensor& b) {
  if constexpr (kRows<T> == 1) return b.contiguous();
  else return pack_b(b);
}

// Forward tasks: (image, block of nc output channels). Z tile = MB pixels x (tap, channel) of the block,
// then y[n, oh, ow, block] += Z[pixel, (tap, :)]: adds over nc contiguous channels. Where the taps tile the
// output (taps_tile_output), tasks are (image, block of MB pixels, channel block) and Z + bias is stored
// (no pass to fill y with the bias first, and finer tasks: U-Net k2s2 128->64 channels_last 1.20 -> 1.03 ms).
template <typename T>
void tiled_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& y) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, Kp = padded_k<T>(cig);
  // Blocks of up to ~512 (tap, channel) columns, the channels split evenly.
  const int64_t blocks = ceil_div(cog, std::clamp<int64_t>(512 / kk, 1, cog)), cb = ceil_div(cog, blocks);
  const int64_t HW = s.H_in * s.W_in;
  constexpr int64_t MB = 64;
  const bool a_in_place = Kp == cig;  // rows of x read in place (lda = C_in)
  const T* xp = x.const_data_ptr<T>();
  const float* bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* yp = y.mutable_data_ptr<float>();
  const bool tiling = taps_tile_output(s);
  const int64_t pixel_blocks = tiling ? ceil_div(HW, MB) : 1;
  for (int64_t g = 0; g < s.groups; ++g) {
    // B of block k: (cig x kk*nc), columns (tap, channel of the block).
    std::vector<at::Tensor> bs(blocks);
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t c0 = k * cb, nc = std::min(cb, cog - c0);
      bs[k] = as_b<T>(w.narrow(0, g * cig, cig).narrow(1, c0, nc).reshape({cig, nc, kk}).transpose(1, 2)
                          .reshape({cig, kk * nc}));
    }
    if (tiling && blocks == 1 && s.groups == 1) {
      // One output channel block and group: for input row ih and row tap kh, the outputs (ih sH + kh,
      // iw sW + kw, co) of a run of pixels are one contiguous stretch of y in the order of Z's columns
      // (kw, co) (kW == sW), so the GEMM writes them in place (ldc = kW C_out), then the bias is added there.
      const bool avx2 = isa_level() >= 1;
      const int64_t ncols = kk * cog, row_cols = s.kW * cog;
      std::vector<float> bias_row(bias ? row_cols : 0);
      for (int64_t i = 0; i < int64_t(bias_row.size()); ++i) bias_row[i] = bias[i % cog];
      parallel_tasks(s.N * pixel_blocks, 1, [&](int64_t t0, int64_t t1) {
        std::vector<T> a(a_in_place ? 0 : MB * Kp, T(0.f));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t q0 = t % pixel_blocks * MB, n = t / pixel_blocks, mb = std::min(MB, HW - q0);
          const T* xr = xp + (n * HW + q0) * s.C_in;
          if (!a_in_place)
            for (int64_t i = 0; i < mb; ++i) std::copy(xr + i * s.C_in, xr + i * s.C_in + cig, a.data() + i * Kp);
          for (int64_t q = q0; q < q0 + mb;) {  // runs of the block's pixels along input rows
            const int64_t ih = q / s.W_in, iw0 = q % s.W_in, len = std::min(s.W_in - iw0, q0 + mb - q);
            const T* ap = a_in_place ? xr + (q - q0) * s.C_in : a.data() + (q - q0) * Kp;
            for (int64_t kh = 0; kh < s.kH; ++kh) {
              float* yo = yp + ((n * s.H_out + ih * s.sH + kh) * s.W_out + iw0 * s.sW) * s.C_out;
              kernel(len, row_cols, Kp, a_in_place ? s.C_in : Kp, ncols, row_cols, false, ap,
                     bs[0].template const_data_ptr<T>() + kh * row_cols * kRows<T>, yo);
              if (bias)
                for (int64_t i = 0; i < len; ++i) add_row(yo + i * row_cols, bias_row.data(), row_cols, avx2);
            }
            q += len;
          }
        }
      });
      continue;
    }
    if (tiling) {
      parallel_tasks(s.N * pixel_blocks * blocks, 1, [&](int64_t t0, int64_t t1) {
        std::vector<float> z(MB * kk * cb);
        std::vector<T> a(a_in_place ? 0 : MB * Kp, T(0.f));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t k = t % blocks, q0 = (t / blocks) % pixel_blocks * MB, n = t / blocks / pixel_blocks;
          const int64_t c0 = k * cb, nc = std::min(cb, cog - c0), ncols = kk * nc, mb = std::min(MB, HW - q0);
          const T* xr = xp + (n * HW + q0) * s.C_in + g * cig;
          if (!a_in_place)
            for (int64_t i = 0; i < mb; ++i) std::copy(xr + i * s.C_in, xr + i * s.C_in + cig, a.data() + i * Kp);
          kernel(mb, ncols, Kp, a_in_place ? s.C_in : Kp, ncols, ncols, false, a_in_place ? xr : a.data(),
                 bs[k].template const_data_ptr<T>(), z.data());
          const float* bc = bias ? bias + g * cog + c0 : nullptr;
          for (int64_t i = 0; i < mb; ++i) {
            const int64_t ih = (q0 + i) / s.W_in, iw = (q0 + i) % s.W_in;
            for (int64_t kh = 0; kh < s.kH; ++kh)
              for (int64_t kw = 0; kw < s.kW; ++kw) {
                float* yo = yp + (((n * s.H_out + ih * s.sH + kh) * s.W_out + iw * s.sW + kw) * s.C_out) + g * cog + c0;
                const float* zr = z.data() + i * ncols + (kh * s.kW + kw) * nc;
                for (int64_t c = 0; c < nc; ++c) yo[c] = zr[c] + (bc ? bc[c] : 0.f);
              }
          }
        }
      });
      continue;
    }
    parallel_tasks(s.N * blocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> z(MB * kk * cb);
      std::vector<T> a(a_in_place ? 0 : MB * Kp, T(0.f));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / blocks, k = t % blocks, c0 = k * cb, nc = std::min(cb, cog - c0), ncols = kk * nc;
        float* yc = yp + n * s.H_out * s.W_out * s.C_out + g * cog + c0;
        for (int64_t q = 0; q < s.H_out * s.W_out; ++q)
          for (int64_t c = 0; c < nc; ++c) yc[q * s.C_out + c] = bias ? bias[g * cog + c0 + c] : 0.f;
        const T* bp = bs[k].template const_data_ptr<T>();
        for (int64_t q0 = 0; q0 < HW; q0 += MB) {
          const int64_t mb = std::min(MB, HW - q0);
          const T* xr = xp + (n * HW + q0) * s.C_in + g * cig;
          if (!a_in_place)
            for (int64_t i = 0; i < mb; ++i) std::copy(xr + i * s.C_in, xr + i * s.C_in + cig, a.data() + i * Kp);
          kernel(mb, ncols, Kp, a_in_place ? s.C_in : Kp, ncols, ncols, false, a_in_place ? xr : a.data(), bp, z.data());
          for (int64_t i = 0; i < mb; ++i) {
            const int64_t ih = (q0 + i) / s.W_in, iw = (q0 + i) % s.W_in;
            for (int64_t kh = 0; kh < s.kH; ++kh) {
              const int64_t oh = ih * s.sH - s.pH + kh * s.dH;
              if (oh < 0 || oh >= s.H_out) continue;
              for (int64_t kw = 0; kw < s.kW; ++kw) {
                const int64_t ow = iw * s.sW - s.pW + kw * s.dW;
                if (ow < 0 || ow >= s.W_out) continue;
                float* yo = yc + (oh * s.W_out + ow) * s.C_out;
                const float* zr = z.data() + i * ncols + (kh * s.kW + kw) * nc;
                for (int64_t c = 0; c < nc; ++c) yo[c] += zr[c];
              }
            }
          }
        }
      }
    });
  }
}

// C[(n, ih, iw), (tap, co)] for taps [tap0, tap1) of pixel q, written to d (cog values per tap).
template <typename T>
void gather_taps(const ConvT2dShape& s, const T* gy, int64_t g, int64_t q, int64_t tap0, int64_t tap1, T* d) {
  const int64_t cog = s.cout_per_group(), HW = s.H_in * s.W_in;
  const int64_t n = q / HW, ih = (q % HW) / s.W_in, iw = q % s.W_in;
  for (int64_t tap = tap0; tap < tap1; ++tap, d += cog) {
    const int64_t kh = tap / s.kW, kw = tap % s.kW;
    const int64_t oh = ih * s.sH - s.pH + kh * s.dH, ow = iw * s.sW - s.pW + kw * s.dW;
    if (oh < 0 || oh >= s.H_out || ow < 0 || ow >= s.W_out) {
      std::fill(d, d + cog, T(0.f));
    } else {
      const T* src = gy + ((n * s.H_out + oh) * s.W_out + ow) * s.C_out + g * cog;
      std::copy(src, src + cog, d);
    }
  }
}

// grad_input tasks: blocks of MB pixels. The C tile (pixels x a block of KB columns (tap, co)) is gathered
// and gx[pixels, group] += C_tile Wp^T[columns] straight into gx, for the column blocks in order.
template <typename T>
void tiled_nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, K = kk * cog;
  const int64_t TB = std::max<int64_t>(1, 512 / cog), KB = TB * cog, pixels = s.N * s.H_in * s.W_in;
  constexpr int64_t MB = 64;
  const T* src = gy.const_data_ptr<T>();
  float* out = gx.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    // Wp^T: rows (tap, co), columns ci, one B per block of TB taps (bfloat16: each padded to even rows).
    const auto wpt = taps_major(w.narrow(0, g * cig, cig).transpose(0, 1)).view({K, cig});
    std::vector<at::Tensor> bs;
    for (int64_t k0 = 0; k0 < K; k0 += KB) bs.push_back(as_b<T>(wpt.narrow(0, k0, std::min(KB, K - k0))));
    parallel_tasks(ceil_div(pixels, MB), 1, [&](int64_t t0, int64_t t1) {
      std::vector<T> tile(MB * padded_k<T>(KB), T(0.f));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t q0 = t * MB, mb = std::min(MB, pixels - q0);
        for (int64_t k = 0; k * KB < K; ++k) {
          const int64_t tap0 = k * TB, tap1 = std::min(kk, tap0 + TB), kb = (tap1 - tap0) * cog, kbp = padded_k<T>(kb);
          for (int64_t i = 0; i < mb; ++i) {
            gather_taps(s, src, g, q0 + i, tap0, tap1, tile.data() + i * kbp);
            if (kbp > kb) tile[i * kbp + kb] = T(0.f);
          }
          kernel(mb, cig, kbp, kbp, cig, s.C_in, k > 0, tile.data(), bs[k].template const_data_ptr<T>(),
                 out + q0 * s.C_in + g * cig);
        }
      }
    });
  }
}

// grad_weight: acc (cig x (tap, co)) += X^T C. Work items: (part, block of TB taps) -- the pixels (images,
// then blocks of KB) are split into two contiguous parts (one if there is one block), each summed into its
// own acc in order, and the parts' accs are added in order at the end -- with B = the C tile (KB pixels x
// the block's columns, pixels in pairs for bfloat16) and A = the X^T tile (cig x KB pixels). The items are
// split into one contiguous range per thread, and each thread transposes each X^T tile of its parts once
// for all of its items (tiles only: no transposed copy of the image). The parts are a fixed number, so the sums do not depend on the
// thread count; with two threads each takes one part (with tap blocks alone, 9 taps in blocks of 2 gave
// the threads 6 and 3 taps: 3x3 stride 1, 64 -> 64 channels spent 19% of its time waiting).
template <typename T>
void tiled_nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, K = kk * cog;
  const int64_t HW = s.H_in * s.W_in;
  const int64_t TB = std::max<int64_t>(1, std::min(std::max<int64_t>(1, 256 / cog), ceil_div(kk, 8)));
  constexpr int64_t KB = 256;
  const int64_t tap_blocks = ceil_div(kk, TB), per_image = ceil_div(HW, KB), blocks = s.N * per_image;
  const int64_t parts = std::min<int64_t>(2, blocks), items = parts * tap_blocks;
  const T* src = gy.const_data_ptr<T>();
  const T* xp = x.const_data_ptr<T>();
  auto acc = at::empty({parts, cig, K}, gw.options());
  float* accp = acc.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    at::parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
      std::vector<T> a(cig * KB), tile(KB * TB * cog), row(2 * TB * cog);
      for (int64_t part = i0 / tap_blocks; part < parts && part * tap_blocks < i1; ++part) {
        const int64_t b0 = std::max(i0, part * tap_blocks) - part * tap_blocks;
        const int64_t b1 = std::min(i1, (part + 1) * tap_blocks) - part * tap_blocks;
        float* pacc = accp + part * cig * K;
        const int64_t first = blocks * part / parts, last = blocks * (part + 1) / parts;
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t n = blk / per_image, j0 = blk % per_image * KB;
          const int64_t kb = std::min(KB, HW - j0), kbp = padded_k<T>(kb);
          const T* xr = xp + (n * HW + j0) * s.C_in + g * cig;
          for (int64_t q0 = 0; q0 < kbp; q0 += 16)  // a[c][i] = x[n, pixel j0 + i, g*cig + c] (0 past kb)
            for (int64_t c = 0; c < cig; ++c)
              for (int64_t i = q0; i < std::min(q0 + 16, kbp); ++i) a[c * kbp + i] = i < kb ? xr[i * s.C_in + c] : T(0.f);
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t tap0 = b * TB, tap1 = std::min(kk, tap0 + TB), ncols = (tap1 - tap0) * cog;
            if constexpr (kRows<T> == 1) {
              for (int64_t i = 0; i < kb; ++i) gather_taps(s, src, g, n * HW + j0 + i, tap0, tap1, tile.data() + i * ncols);
            } else {
              for (int64_t i = 0; i < kbp; i += 2) {  // pixels i and i + 1 interleaved (a zero pixel past the end)
                gather_taps(s, src, g, n * HW + j0 + i, tap0, tap1, row.data());
                if (i + 1 < kb) gather_taps(s, src, g, n * HW + j0 + i + 1, tap0, tap1, row.data() + ncols);
                else std::fill(row.begin() + ncols, row.begin() + 2 * ncols, T(0.f));
                interleave(row.data(), row.data() + ncols, ncols, tile.data() + i * ncols);
              }
            }
            kernel(cig, ncols, kbp, kbp, ncols, K, blk > first, a.data(), tile.data(), pacc + tap0 * cog);
          }
        }
      }
    });
    for (int64_t part = 1; part < parts; ++part) acc[0].add_(acc[part]);
    gw.narrow(0, g * cig, cig).view({cig, cog, kk}).copy_(acc[0].view({cig, kk, cog}).transpose(1, 2));
  }
}

// ---- forward by output phase (NCHW and channels_last) -----------------------------------------------------
// The forward as one GEMM per output phase instead of a GEMM and a col2im scatter: the outputs
// o = s*q + r - p of phase r (per dimension) are reached only by the taps k with k*d = r (mod s), from
// input i = q - e_k, e_k = (k*d - r) / s. So, per phase, y[n, co, q, v] = sum over the phase's taps and
// ci of W[ci, co, kh, kw] x[n, ci, q - e_kh, v - e_kw]: for every tap a GEMM whose B (NCHW: ci x pixels;
// channels_last: pixels x ci as A) is x shifted by (e_kh, e_kw) -- gathered per tile, zero outside the
// image -- summed in the tile in a fixed tap order and stored once (each output element belongs to one
// phase). Tasks: (image, phase, block of the phase's pixels).
struct PhaseDim {
  int64_t r, first, count;    // outputs o = s*(first + j) + r - p, j < count
  std::vector<int64_t> k, e;  // the phase's taps and their input offsets
};
std::vector<PhaseDim> phase_dims(int64_t kernel, int64_t s, int64_t p, int64_t d, int64_t out) {
  std::vector<PhaseDim> phases;
  for (int64_t r = 0; r < s; ++r) {
    PhaseDim ph{r, ceil_div(p - r, s), 0, {}, {}};
    ph.count = std::max<int64_t>(0, floor_div(out - 1 + p - r, s) - ph.first + 1);
    for (int64_t k = 0; k < kernel; ++k)
      if ((k * d) % s == r) ph.k.push_back(k), ph.e.push_back((k * d - r) / s);
    if (ph.count > 0) phases.push_back(std::move(ph));
  }
  return phases;
}

struct PhaseBlock {
  int64_t h, w, j0;  // phase indices into the two PhaseDim lists, first pixel of the block
};

// The tasks' blocks: every (row phase, column phase) cut into blocks of NB pixels.
std::vector<PhaseBlock> phase_blocks(const std::vector<PhaseDim>& hs, const std::vector<PhaseDim>& ws, int64_t NB) {
  std::vector<PhaseBlock> blocks;
  for (int64_t a = 0; a < int64_t(hs.size()); ++a)
    for (int64_t b = 0; b < int64_t(ws.size()); ++b)
      for (int64_t j0 = 0; j0 < hs[a].count * ws[b].count; j0 += NB) blocks.push_back({a, b, j0});
  return blocks;
}

// Task t of a phase kernel (tasks: image-major, then the blocks): its image, phases and pixel count, and in
// `runs` the block's pixels as runs along phase rows -- Run{q, v0, v1, j}: phase row q (ph.first-based, as
// the phase's outputs are), phase columns [v0, v1), the run's first pixel j within the block.
struct PhaseTask {
  int64_t n, nb;
  const PhaseDim &ph, &pw;
};
PhaseTask phase_task(const std::vector<PhaseDim>& hs, const std::vector<PhaseDim>& ws,
                     const std::vector<PhaseBlock>& blocks, int64_t NB, int64_t t, std::vector<Run>& runs) {
  const int64_t nblocks = blocks.size();
  const PhaseBlock& blk = blocks[t % nblocks];
  const PhaseDim &ph = hs[blk.h], &pw = ws[blk.w];
  const int64_t nb = std::min(NB, ph.count * pw.count - blk.j0);
  runs.clear();
  for (int64_t j = 0; j < nb;) {
    const int64_t q = (blk.j0 + j) / pw.count, v = (blk.j0 + j) % pw.count, run = std::min(nb - j, pw.count - v);
    runs.push_back({ph.first + q, pw.first + v, pw.first + v + run, j});
    j += run;
  }
  return {t / nblocks, nb, ph, pw};
}

// The input pixels a tap reads for a block's runs, as segments contiguous in the image (pixel offset in the
// image, first pixel of the block, length). False when a pixel lies outside the image (then the block is
// gathered).
struct Segment {
  int64_t offset, j, len;
};
bool inside_segments(const ConvT2dShape& s, const std::vector<Run>& runs, int64_t eh, int64_t ew,
                     std::vector<Segment>& segs) {
  segs.clear();
  for (const Run& u : runs) {
    const int64_t ih = u.ih - eh, i0 = u.iw0 - ew, i1 = u.iw1 - ew;
    if (ih < 0 || ih >= s.H_in || i0 < 0 || i1 > s.W_in) return false;
    const int64_t offset = ih * s.W_in + i0;
    if (!segs.empty() && segs.back().offset + segs.back().len == offset) segs.back().len += i1 - i0;
    else segs.push_back({offset, u.j, i1 - i0});
  }
  return true;
}

bool stacked(const ConvT2dShape& s, at::ScalarType t);
template <typename T>
void stacked_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const float* bias,
                     const at::Tensor& y);

// NCHW. B per tap: (Kp / kRows planes) x NB words, a word being a float or (bfloat16) a pair of channels of
// the packed x (forward_b); A per tap: W[ci, co, kh, kw] as (co x Kp); the C tile (cog x NB) sums the taps.
template <typename T>
void phase_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const at::Tensor& y) {
  const float* bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  if (stacked(s, x.scalar_type())) return stacked_forward<T>(s, x, w, bias, y);
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), Kp = padded_k<T>(cig), planes = Kp / kRows<T>;
  const int64_t HW = s.H_in * s.W_in, NB = tile_columns<T>(Kp), CB = 64;
  const auto hs = phase_dims(s.kH, s.sH, s.pH, s.dH, s.H_out), ws = phase_dims(s.kW, s.sW, s.pW, s.dW, s.W_out);
  const auto blocks = phase_blocks(hs, ws, NB);
  const int64_t nblocks = blocks.size();
  const std::vector<T> zeros(s.W_in, T(0.f));
  float* yp = y.mutable_data_ptr<float>();
  for (int64_t g = 0; g < s.groups; ++g) {
    // A: (kH, kW, cog, Kp), zero-padded along ci.
    const auto a = padded(taps_major(w.narrow(0, g * cig, cig).transpose(0, 1)).view({s.kH * s.kW * cog, cig}), Kp);
    const at::Tensor xb = forward_b<T>(s, x, g * cig, cig, Kp, zeros);
    const T* ap = a.const_data_ptr<T>();
    // Plane p of image n: floats of x (float32) or channel pairs of the packed copy (bfloat16), as words.
    const auto* xw = reinterpret_cast<const u32a*>(xb.const_data_ptr<T>());
    const int64_t image_stride = kRows<T> == 2 ? planes * HW : s.C_in * HW, first = kRows<T> == 2 ? 0 : g * cig * HW;
    parallel_tasks(s.N * nblocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<uint32_t> tile(planes * NB);
      std::vector<float> c(cog * NB);
      std::vector<Run> runs;
      std::vector<Segment> segs;
      for (int64_t t = t0; t < t1; ++t) {
        const auto [n, nb, ph, pw] = phase_task(hs, ws, blocks, NB, t, runs);
        const u32a* image = xw + n * image_stride + first;
        bool any = false;
        for (size_t th = 0; th < ph.k.size(); ++th)
          for (size_t tw = 0; tw < pw.k.size(); ++tw) {
            const int64_t eh = ph.e[th], ew = pw.e[tw];
            const T* at = ap + (ph.k[th] * s.kW + pw.k[tw]) * cog * Kp;
            if (inside_segments(s, runs, eh, ew, segs)) {  // B read in place: planes HW apart
              for (const Segment& u : segs)
                for (int64_t c0 = 0; c0 < cog; c0 += CB)
                  kernel(std::min(CB, cog - c0), u.len, Kp, Kp, HW, NB, any, at + c0 * Kp,
                         reinterpret_cast<const T*>(image + u.offset), c.data() + c0 * NB + u.j);
              any = true;
              continue;
            }
            for (int64_t pl = 0; pl < planes; ++pl) {
              const u32a* src = image + pl * HW;
              uint32_t* d = tile.data() + pl * NB;
              for (const Run& u : runs) {  // u.ih = q, [u.iw0, u.iw1) = v: input row q - eh, columns v - ew
                uint32_t* dr = d + u.j - u.iw0;
                const int64_t ih = u.ih - eh;
                const int64_t a0 = ih < 0 || ih >= s.H_in ? u.iw1 : std::clamp(ew, u.iw0, u.iw1);
                const int64_t a1 = std::clamp(s.W_in + ew, a0, u.iw1);
                std::fill(dr + u.iw0, dr + a0, 0u);
                if (a1 > a0) std::copy(src + ih * s.W_in + a0 - ew, src + ih * s.W_in + a1 - ew, dr + a0);
                std::fill(dr + a1, dr + u.iw1, 0u);
              }
            }
            for (int64_t c0 = 0; c0 < cog; c0 += CB)
              kernel(std::min(CB, cog - c0), nb, Kp, Kp, NB, NB, any, at + c0 * Kp,
                     reinterpret_cast<const T*>(tile.data()), c.data() + c0 * NB);
            any = true;
          }
        for (int64_t co = 0; co < cog; ++co) {
          const float add = bias ? bias[g * cog + co] : 0.f;
          const float* cr = c.data() + co * NB;
          float* plane = yp + (n * s.C_out + g * cog + co) * s.H_out * s.W_out;
          for (const Run& u : runs) {
            float* yr = plane + (s.sH * u.ih + ph.r - s.pH) * s.W_out + pw.r - s.pW;
            const float* z = cr + u.j - u.iw0;
            if (!any) for (int64_t v = u.iw0; v < u.iw1; ++v) yr[s.sW * v] = add;
            else if (s.sW == 1) for (int64_t v = u.iw0; v < u.iw1; ++v) yr[v] = z[v] + add;
            else if (s.sW == 2) for (int64_t v = u.iw0; v < u.iw1; ++v) yr[2 * v] = z[v] + add;
            else for (int64_t v = u.iw0; v < u.iw1; ++v) yr[s.sW * v] = z[v] + add;
          }
        }
      }
    });
  }
}

// The step between the input columns that a column phase's taps read: g = dW / gcd(sW, dW) (1 without
// column dilation). Columns g apart are neighbours in a class of padded_nhwc's copy.
int64_t column_step(const ConvT2dShape& s) { return s.dW / std::gcd(s.sW, s.dW); }

// Whether a stacked GEMM's B (K x N, one row tap's stacked weights) stays within 512 KB: past that it is read
// from beyond L2 for every block of rows. DCGAN-like k4 s2 layers: 512->256 on 16x16 images (B 512 KB in
// bfloat16) 7.8 -> 7.2 ms stacked, but in float32 (1 MB) 29.8 -> 31.4; 1024->512 bfloat16 (2 MB) 14.0 -> 16.9;
// grad_input of 512->256 (K = 4 x 256, N = 512) float32 30 -> 49.
bool b_fits(int64_t K, int64_t N, at::ScalarType t) {
  return K * N * (t == at::kBFloat16 ? 2 : 4) <= (int64_t(512) << 10);
}

// Whether a stacked GEMM runs over several short phase rows laid end to end (the pixels between them computed
// and dropped) rather than one GEMM per row: bfloat16 on AMX, where a tile call costs more than a few extra
// rows. With oneDNN capped below AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16, as on AVX512-BF16 CPUs without
// it) float32's rule ran faster: 3x3 64->64 1.73 -> 1.65 ms, DCGAN 128->64 12.0 -> 10.9, 512->256 50.3 ->
// 46.0 (its rows of 8 then take the scatter).
bool rows_span(at::ScalarType t) { return t == at::kBFloat16 && bf16_gemm_on_amx(); }

// Whether the phase forward of s (NCHW or channels_last images, float32 or bfloat16 operands) runs as
// stacked_forward: one group, some column phase with two or more taps, B within b_fits, and
//   - bfloat16: an even C_in (B's rows in pairs). 3x3 stride 1 64 -> 64 NCHW 0.74 -> 0.33 ms (one GEMM
//     per row tap with K = 192 on the AMX tiles instead of three with K = 64);
//   - float32, and bfloat16 without AMX: 16+ pixels in every column group (one GEMM per phase row: DCGAN
//     512 -> 256's rows of 8 ran 5-25% slower than the per-tap GEMMs or the scatter, also with GEMMs over
//     several rows; see rows_span for bfloat16 without AMX).
bool stacked(const ConvT2dShape& s, at::ScalarType t) {
  if (s.groups != 1 || (t == at::kBFloat16 && s.C_in % 2 != 0)) return false;
  const auto ws = phase_dims(s.kW, s.sW, s.pW, s.dW, s.W_out);
  if (std::none_of(ws.begin(), ws.end(), [](const PhaseDim& pw) { return pw.e.size() > 1; })) return false;
  for (const PhaseDim& pw : ws)
    if (!b_fits(int64_t(pw.e.size()) * s.C_in, s.C_out, t)) return false;
  if (rows_span(t)) return true;
  const int64_t g = column_step(s);
  return std::all_of(ws.begin(), ws.end(), [&](const PhaseDim& pw) { return pw.count / g >= 16; });
}

// What stacked_into computes: images (N, C, H, W) read, (N, cog, Ho, Wo) written; output phase pixel (q, v)
// (q, v counted from the phases' `first`) is the sum over its row taps and column taps of the read image's
// pixel (rs q - e_row, cs v - e_col) times the tap's (C x cog) weight, and lands at output row
// osH q + r - opH, column osW v + r - opW. A transposed convolution's forward (forward_plan): the output
// phases, rs = cs = 1; a grad_input (grad_input_plan): one phase, the correlation of gy with the kernel,
// rs = sH, cs = sW.
struct StackedPlan {
  int64_t N, C, H, W, cog, Ho, Wo;
  std::vector<PhaseDim> hs, ws;  // e ascending; a column phase's taps g columns apart
  int64_t rs, cs, osH, opH, osW, opW, g;
};
StackedPlan forward_plan(const ConvT2dShape& s) {
  return {s.N, s.C_in, s.H_in, s.W_in, s.C_out, s.H_out, s.W_out, phase_dims(s.kH, s.sH, s.pH, s.dH, s.H_out),
          phase_dims(s.kW, s.sW, s.pW, s.dW, s.W_out), 1, 1, s.sH, s.pH, s.sW, s.pW, column_step(s)};
}
// gx[ih, iw] reads gy[sH ih - pH + kh dH, sW iw - pW + kw dW]: e = p - k d, ascending as k descends.
PhaseDim correlation_dim(int64_t kernel, int64_t p, int64_t d, int64_t count) {
  PhaseDim dim{0, 0, count, {}, {}};
  for (int64_t k = kernel; k-- > 0;) dim.k.push_back(k), dim.e.push_back(p - k * d);
  return dim;
}
StackedPlan grad_input_plan(const ConvT2dShape& s) {
  return {s.N, s.C_out, s.H_out, s.W_out, s.C_in, s.H_in, s.W_in, {correlation_dim(s.kH, s.pH, s.dH, s.H_in)},
          {correlation_dim(s.kW, s.pW, s.dW, s.W_in)}, s.sH, s.sW, 1, 0, 1, 0, 1};
}
// Whether an NCHW grad_input can run as stacked_grad_input: strides above 1 (stride 1 is a forward,
// grad_input_by_phase), one group, no column dilation (the window of kW taps is kW whole pixels), 2+ column
// taps, 16+ input channels (a tile of B's columns), 16+ output channels (K = kW C_out: the RGB layer's 3 ran
// 10% slower than the tiles) and B within b_fits; bfloat16 wants an even C_out (pairs of B's rows).
// channels_last keeps its im2col tiles, which gather whole channel runs (DCGAN 128->64 float32 5.97 ms
// there, 7.12 stacked; bfloat16 even).
bool stacks_grad_input(const ConvT2dShape& s, at::ScalarType t) {
  // float32 where the taps tile the output (U-Net's k2s2: each gy value meets one tap) keeps the im2col tiles,
  // whose gathers (even / odd columns, AVX2) cost less than the stacked path's transposes of gy and gx:
  // U-Net k2s2 128->64 backward 4.0 -> 3.6 ms (bfloat16 stacked 1.87, tiles 1.96)
  if (t == at::kFloat && taps_tile_output(s)) return false;
  if (s.groups != 1 || s.dW != 1 || s.kW < 2 || (s.sH == 1 && s.sW == 1) || s.C_in < 16 || s.C_out < 16) return false;
  if (!b_fits(s.kW * s.C_out, s.C_in, t)) return false;
  return t != at::kBFloat16 || s.C_out % 2 == 0;
}

// x (NCHW or channels_last) as zero-padded NHWC images of T: rows of Wp pixels, the image at rows
// [PT, PT + H_in) and columns [PL, PL + W_in). With g > 1 each row's columns are split into g classes by
// column % g (column c at index c / g of class c % g; rows of Wq = ceil(Wp / g) pixels), so that columns g
// apart are neighbours; with rs > 1 likewise the rows (row r at index r / rs of row class r % rs, Hq =
// ceil(Hp / rs) rows): (N, g, rs, Hq, Wq, C_in). NCHW x is transposed in registers (8 pixels x 8 float32
// or 16 bfloat16 channels at a time).
template <typename T>
at::Tensor padded_nhwc(const StackedPlan& P, const at::Tensor& x, bool nhwc, int64_t PT, int64_t Hp, int64_t PL,
                       int64_t Wp, int64_t n0, int64_t n1) {
  const int64_t N = n1 - n0, C = P.C, H = P.H, W = P.W, HW = H * W, g = P.g, Wq = ceil_div(Wp, g);
  const int64_t rs = P.rs, Hq = ceil_div(Hp, rs), rows = rs * Hq;
  const bool avx2 = isa_level() >= 1;
  auto out = scratch(Scratch::padded_x, N * g * rows * Wq * C, x.options().memory_format(c10::MemoryFormat::Contiguous));
  const T* src = x.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  // padded row r of image n, column class k: at ((n g + k) rs + r % rs) Hq + r / rs
  auto row_at = [&](int64_t n, int64_t k, int64_t r) { return dst + (((n * g + k) * rs + r % rs) * Hq + r / rs) * Wq * C; };
  parallel_tasks(N * rows, std::max<int64_t>(1, 16384 / (Wp * C)), [&](int64_t t0, int64_t t1) {
    std::vector<T> row(g > 1 ? Wq * g * C : 0);  // a padded row, then split into the classes
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / rows, ih = t % rows - PT;  // (n counted from n0)
      T* d = g > 1 ? row.data() : row_at(n, 0, t % rows);
      if (ih < 0 || ih >= H) {
        std::fill(d, d + Wq * g * C, T(0.f));
      } else {
        std::fill(d, d + PL * C, T(0.f));
        std::fill(d + (PL + W) * C, d + Wq * g * C, T(0.f));
        T* e = d + PL * C;
        if (nhwc) {
          std::memcpy(e, src + ((n0 + n) * H + ih) * W * C, W * C * sizeof(T));
        } else {
          const T* a = src + (n0 + n) * C * HW + ih * W;  // channel c's row at a + c * HW
          int64_t W8 = 0, CV = 0;
#if defined(__x86_64__)
          if (avx2) {
            constexpr int64_t cv = std::is_same_v<T, float> ? 8 : 16;  // channels per transposed block
            W8 = W / 8 * 8, CV = C / cv * cv;
            for (int64_t c0 = 0; c0 < CV; c0 += cv)
              for (int64_t w0 = 0; w0 < W8; w0 += 8) {
                if constexpr (std::is_same_v<T, float>) transpose8x8(a + c0 * HW + w0, HW, e + w0 * C + c0, C);
                else transpose16x8(a + c0 * HW + w0, HW, e + w0 * C + c0, C);
              }
          }
#endif
          for (int64_t c = CV; c < C; ++c)
            for (int64_t w = 0; w < W8; ++w) e[w * C + c] = a[c * HW + w];
          for (int64_t w = W8; w < W; ++w)
            for (int64_t c = 0; c < C; ++c) e[w * C + c] = a[c * HW + w];
        }
      }
      if (g > 1)
        for (int64_t c = 0; c < Wq * g; ++c) std::memcpy(row_at(n, c % g, t % rows) + c / g * C, d + c * C, C * sizeof(T));
    }
  });
  return out;
}

#if defined(__x86_64__)
// The stores of bfloat16 results run only where the CPU has AVX512-BF16 (the native bfloat16 path): they round
// with its conversion instruction (to nearest even, as c10::BFloat16 does; NaN stays NaN, but subnormal
// float32 inputs become zero, as the dot products already treat them).
#define DECONV_BF16_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl,avx512bf16")))

// Eight float32 values to d, as they are or rounded to bfloat16.
__attribute__((target("avx2,fma"))) inline void store(__m256 v, float* d) { _mm256_storeu_ps(d, v); }
DECONV_BF16_TARGET inline void store(__m256 v, bf16* d) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d), reinterpret_cast<__m128i>(_mm256_cvtneps_pbh(v)));
}

// store_row's bfloat16 vectors: from i on, sixteen values at a time.
DECONV_BF16_TARGET void store_row_bf16(const float* z, const float* bias, int64_t n, bf16* y, int64_t& i) {
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(z + i);
    if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  }
}

// Eight pixel rows (z + i * zs) of eight channels plus their bias (or none), transposed: channel j's eight
// outputs to y + j * ys, float32 or rounded to bfloat16. With a second such tile zo (the odd column phase of
// stride 2), its pixels interleave with z's: channel j's 16 outputs z0 zo0 z1 zo1 ... at y + j * ys.
#define DECONV_TRANSPOSED_TILE_BODY                                                                 \
  __m256 r[8], o[8];                                                                                \
  const __m256 add = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();                            \
  for (int i = 0; i < 8; ++i) r[i] = _mm256_add_ps(_mm256_loadu_ps(z + i * zs), add);               \
  transpose8x8_in_registers(r);                                                                     \
  if (!zo) {                                                                                        \
    for (int j = 0; j < 8; ++j) store(r[j], y + j * ys);                                            \
    return;                                                                                         \
  }                                                                                                 \
  for (int i = 0; i < 8; ++i) o[i] = _mm256_add_ps(_mm256_loadu_ps(zo + i * zs), add);             \
  transpose8x8_in_registers(o);                                                                     \
  for (int j = 0; j < 8; ++j) {                                                                     \
    const __m256 lo = _mm256_unpacklo_ps(r[j], o[j]), hi = _mm256_unpackhi_ps(r[j], o[j]);          \
    store(_mm256_permute2f128_ps(lo, hi, 0x20), y + j * ys);                                        \
    store(_mm256_permute2f128_ps(lo, hi, 0x31), y + j * ys + 8);                                    \
  }
__attribute__((target("avx2,fma"))) void store_transposed_tile(const float* z, const float* zo, int64_t zs,
                                                               const float* bias, float* y, int64_t ys) {
  DECONV_TRANSPOSED_TILE_BODY
}
DECONV_BF16_TARGET void store_transposed_tile(const float* z, const float* zo, int64_t zs, const float* bias, bf16* y,
                                              int64_t ys) {
  DECONV_TRANSPOSED_TILE_BODY
}
#undef DECONV_TRANSPOSED_TILE_BODY
#endif

// y[i] = z[i] + bias[i] (bias may be null) for i < n, rounded to bfloat16 where y is (in vectors with avx2).
#if defined(__x86_64__)
// float32: from i on, eight values at a time (the channels_last stores: 7% of DCGAN 128->64's stacked
// forward in the compiler's 4-wide loop with the bias test inside).
__attribute__((target("avx2,fma"))) void store_row_f32(const float* z, const float* bias, int64_t n, float* y, int64_t& i) {
  if (bias)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(z + i), _mm256_loadu_ps(bias + i)));
  else
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_loadu_ps(z + i));
}
#endif
template <typename Y>
void store_row(const float* z, const float* bias, int64_t n, Y* y, bool avx2) {
  int64_t i = 0;
#if defined(__x86_64__)
  if constexpr (std::is_same_v<Y, bf16>) {
    if (avx2) store_row_bf16(z, bias, n, y, i);
  } else {
    if (avx2) store_row_f32(z, bias, n, y, i);
  }
#endif
  for (; i < n; ++i) y[i] = Y(z[i] + (bias ? bias[i] : 0.f));
}

// stacked_into's B matrices in one tensor, (row tap kh, column phase b)'s at b_at[kh * phases + b]: K = NE C
// rows, row ((e_hi - e) / g) C + ci holding w[ci, :, kh, k(e)] (w: C x cog x kH x kW, any strides),
// bfloat16 in pairs of rows (K is even there). w is first permuted to (kH, kW, C, cog), so each B row is a
// copy of cog contiguous values (bfloat16: two rows interleaved).
template <typename T>
at::Tensor stacked_b(const at::Tensor& w, const std::vector<PhaseDim>& ws, std::vector<int64_t>& b_at) {
  const int64_t C = w.size(0), cog = w.size(1), kH = w.size(2), kW = w.size(3), phases = ws.size();
  const at::Tensor wt = taps_major(w);
  const T* src = wt.const_data_ptr<T>();
  b_at.assign(kH * phases, 0);
  int64_t total = 0;
  for (int64_t kh = 0; kh < kH; ++kh)
    for (int64_t b = 0; b < phases; ++b) b_at[kh * phases + b] = total, total += padded_k<T>(ws[b].k.size() * C) * cog;
  auto out = at::empty({total}, w.options().memory_format(c10::MemoryFormat::Contiguous));
  T* d = out.mutable_data_ptr<T>();
  // Tasks: (kh, b, j): B rows [j C, (j + 1) C) = tap k(e) with j = (e_hi - e) / g, i.e. k index NE - 1 - j.
  std::vector<std::array<int64_t, 3>> tasks;
  for (int64_t kh = 0; kh < kH; ++kh)
    for (int64_t b = 0; b < phases; ++b)
      for (int64_t j = 0; j < int64_t(ws[b].k.size()); ++j) tasks.push_back({kh, b, j});
  parallel_tasks(tasks.size(), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const auto [kh, b, j] = tasks[t];
      const int64_t kw = ws[b].k[ws[b].k.size() - 1 - j];
      const T* rows = src + (kh * kW + kw) * C * cog;  // row ci at rows + ci * cog
      T* base = d + b_at[kh * phases + b];
      if constexpr (kRows<T> == 2) {
        TORCH_INTERNAL_ASSERT(C % 2 == 0);  // (stacked() / stacks_grad_input() ask for it)
        for (int64_t ci = 0; ci < C; ci += 2)
          interleave(rows + ci * cog, rows + (ci + 1) * cog, cog, base + (j * C + ci) * cog);
      } else {
        std::memcpy(base + j * C * cog, rows, C * cog * sizeof(T));
      }
    }
  });
  return out;
}

// Stacked GEMMs (a StackedPlan: the forward's output phases, or the strided grad_input's correlation), NCHW
// or channels_last images read and written, float32 or bfloat16 operands, the result float32 or (with
// bfloat16 operands) bfloat16. A column phase whose taps read input columns cs v - e, e = e_lo, e_lo + g, ...,
// e_hi, reads for pixel v the window of columns [cs v - e_hi, cs v - e_lo]: NE whole pixels g apart, NE C
// contiguous values of a row of the copy below. So each row tap is one GEMM with K = NE C whose A is the
// windows (rows cs C apart, overlapping where cs C < K) and whose B stacks the NE taps' (C x cog) weights, e
// descending: instead of NE GEMMs with K = C, each adding its product to C, and no pixel is gathered.
//   - A is read from a zero-padded NHWC copy of the read image (padded_nhwc; NCHW transposed in registers),
//     its columns in g classes (column dilation) and its rows in rs classes (the correlation's row stride),
//     so that the pixels and rows a GEMM reads are neighbours.
//   - Blocks: rows of a row phase and a range of their pixels, for every column group (a phase's pixels of
//     one column class), so that output rows are stored whole. float32 with rows of 16+ pixels runs one GEMM
//     per phase row; otherwise (bfloat16 on AMX, where a tile call costs more than a few extra rows, and
//     short float32 rows) one GEMM covers all the block's rows laid end to end, the pixels between two
//     rows computed and dropped.
//   - The C tile (pixels x cog) is stored with the bias as rows (channels_last) or transposed in 8 x 8
//     register blocks (NCHW; two column groups of step 2 interleaved), rounded to bfloat16 where the result is.
// 3x3 stride 1 64 -> 64: channels_last float32 150 -> 164 GF/s per core (the per-tap GEMMs gathered 6 of the
// 9 taps' blocks, whose windows crossed a row end); NCHW bfloat16 on AMX 0.74 -> 0.33 ms.
template <typename T, typename Y>
void stacked_into(const StackedPlan& P, const at::Tensor& x, const at::Tensor& w, const float* bias, const at::Tensor& y) {
  const bool nhwc_in = !x.is_contiguous(), nhwc_out = !y.is_contiguous();
  const int64_t C = P.C, cog = P.cog, CB = 256, plane = P.Ho * P.Wo, g = P.g, rs = P.rs, cs = P.cs;
  const int64_t NB = kRows<T> == 2 ? 128 : 64;
  const auto &hs = P.hs, &ws = P.ws;
  const bool avx2 = isa_level() >= 1;  // (read once: isa_level() reads the environment)
  int64_t PT = 0, PB = 0, PL = 0, PR = 0, widest = 0;
  for (const PhaseDim& ph : hs) {
    if (ph.e.empty()) continue;  // a phase no tap reaches: bias only
    PT = std::max(PT, ph.e.back() - rs * ph.first);
    PB = std::max(PB, rs * (ph.first + ph.count - 1) - ph.e.front() - (P.H - 1));
  }
  for (const PhaseDim& pw : ws) {
    widest = std::max(widest, pw.count);
    if (pw.e.empty()) continue;
    PL = std::max(PL, pw.e.back() - cs * pw.first);
    PR = std::max(PR, cs * (pw.first + pw.count - 1) - pw.e.front() - (P.W - 1));
  }
  // Rows of a multiple of cs pixels (so that A's rows cs pixels apart run on into the next row).
  const int64_t Wp = ceil_div(std::max(PL + P.W + PR, cs * widest), cs) * cs, Hp = PT + P.H + PB;
  const int64_t Wq = ceil_div(Wp, g), Hq = ceil_div(Hp, rs);
  std::vector<int64_t> b_at;
  const at::Tensor bs = stacked_b<T>(w, ws, b_at);
  const T* b_all = bs.template const_data_ptr<T>();
  // Column groups: the pixels v = sigma + g u of a column phase (u = 0, 1, ...), whose windows start at
  // padded column c = cs (first + sigma) - e_hi + PL + g u: index c / g + u of class c % g (g > 1 has cs == 1;
  // with cs > 1, g == 1 and pixel u's window starts cs u columns on).
  struct Group {
    int64_t b, count, cls, index, ow0, step;  // phase, pixels, class, pixel 0's window, its y column, y step
  };
  std::vector<Group> groups;
  int64_t longest = 0;
  for (int64_t b = 0; b < int64_t(ws.size()); ++b) {
    const PhaseDim& pw = ws[b];
    const int64_t e_hi = pw.e.empty() ? 0 : pw.e.back();
    for (int64_t sigma = 0; sigma < std::min(g, pw.count); ++sigma) {
      const int64_t c = std::max<int64_t>(0, cs * (pw.first + sigma) - e_hi + PL);  // (c >= 0 unless no taps)
      groups.push_back({b, ceil_div(pw.count - sigma, g), c % g, c / g, P.osW * (pw.first + sigma) + pw.r - P.opW,
                        P.osW * g});
      longest = std::max(longest, groups.back().count);
    }
  }
  // Blocks: rows [q0, q1) of a row phase and their pixels [u0, u1), for every column group (so that y's rows
  // can be stored whole): R rows of up to NB pixels in all, or segments of NB pixels of one row. The pixel
  // (q, u) of a group is row (q - q0) * pitch + u - u0 of its C tile (pitch: A's rows between two phase rows
  // where a GEMM spans them, else just the row).
  struct Block {
    int64_t h, q0, q1, u0, u1;
  };
  // float32 runs one GEMM per phase row where rows are 16+ pixels; else (bfloat16 on AMX: a tile call costs
  // more than a few extra rows; short float32 rows) one GEMM per block for all its rows laid end to end,
  // A's rows between two phase rows computed and dropped: rows of pitch = Wq / cs pixels (with rs > 1 the
  // copy's row classes make the rows a GEMM reads neighbours).
  const bool per_row = !rows_span(kRows<T> == 2 ? at::kBFloat16 : at::kFloat) && longest >= 16;
  const int64_t pitch = per_row ? longest : Wq / cs, seg = std::min(longest, NB);
  const int64_t R = longest >= NB ? 1 : (NB - longest) / pitch + 1, cap = (R - 1) * pitch + seg;
  std::vector<Block> blocks;
  for (int64_t a = 0; a < int64_t(hs.size()); ++a) {
    const int64_t nr = ceil_div(hs[a].count, R), rows = ceil_div(hs[a].count, nr);
    for (int64_t q0 = 0; q0 < hs[a].count; q0 += rows)
      for (int64_t u0 = 0; u0 < longest; u0 += seg)
        blocks.push_back({a, q0, std::min(hs[a].count, q0 + rows), u0, std::min(longest, u0 + seg)});
  }
  const int64_t nblocks = blocks.size(), ngroups = groups.size();
  // NCHW y in vectors: one group of step 1, or two of step 2 whose outputs interleave (pixel u of `even`
  // at y column ow, of `odd` at ow + 1).
  int64_t even = -1, odd = -1;
  if (ngroups == 1 && groups[0].step == 1) even = 0;
  if (ngroups == 2 && groups[0].step == 2 && groups[1].step == 2) {
    if (groups[1].ow0 == groups[0].ow0 + 1) even = 0, odd = 1;
    if (groups[0].ow0 == groups[1].ow0 + 1) even = 1, odd = 0;
  }
  Y* yp = y.mutable_data_ptr<Y>();
  // Rounds of images where the padded copy exceeds 4 MB (the two cores' L2): the copy of a round's images
  // (about 1 MB, and 8+ tasks) is made right before its blocks read it, so that it is read from cache
  // rather than memory: DCGAN 128->64's grad_input (a 9 MB copy of gy) 8.85 -> 8.55 ms, its forward 1.5%.
  const int64_t image_bytes = g * rs * Hq * Wq * C * int64_t(sizeof(T));
  const int64_t NI = P.N * image_bytes <= (int64_t(4) << 20)
                         ? P.N
                         : std::min(P.N, std::max(ceil_div(8, nblocks), (int64_t(1) << 20) / image_bytes));
  for (int64_t n0 = 0; n0 < P.N; n0 += NI) {
    const int64_t n1 = std::min(P.N, n0 + NI);
    const auto xq = padded_nhwc<T>(P, x, nhwc_in, PT, Hp, PL, Wp, n0, n1);
    const T* xp = xq.template const_data_ptr<T>();  // image n's copy at (n - n0) g rs Hq Wq C
    parallel_tasks((n1 - n0) * nblocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> tiles(ngroups * cap * cog);  // group i's C tile at i * cap * cog
      for (int64_t t = n0 * nblocks + t0; t < n0 * nblocks + t1; ++t) {
        const int64_t n = t / nblocks;
        const Block& blk = blocks[t % nblocks];
        const PhaseDim& ph = hs[blk.h];
        for (int64_t i = 0; i < ngroups; ++i) {
          const Group& gr = groups[i];
          const PhaseDim& pw = ws[gr.b];
          const int64_t NE = pw.e.size(), u1 = std::min(gr.count, blk.u1);
          float* c = tiles.data() + i * cap * cog;
          const int64_t taps = NE > 0 && u1 > blk.u0 ? ph.k.size() : 0;
          for (int64_t th = 0; th < taps; ++th) {
            const T* bp = b_all + b_at[ph.k[th] * ws.size() + gr.b];
            // The window of the group's pixel (q0, u0) for this row tap; pixel u's is lda = cs C further, row q's
            // q rows of its row class further (A's row (q - q0) pitch + u - u0 where one GEMM spans the rows).
            const int64_t r0 = rs * (ph.first + blk.q0) - ph.e[th] + PT;  // padded row of phase row q0
            const T* a = xp + (((((n - n0) * g + gr.cls) * rs + r0 % rs) * Hq + r0 / rs) * Wq + gr.index + cs * blk.u0) * C;
            for (int64_t c0 = 0; c0 < cog; c0 += CB) {
              const int64_t nc = std::min(CB, cog - c0);
              if (per_row) {
                for (int64_t q = 0; q < blk.q1 - blk.q0; ++q)
                  kernel(u1 - blk.u0, nc, NE * C, cs * C, cog, cog, th > 0, a + q * Wq * C, bp + c0 * kRows<T>,
                         c + q * pitch * cog + c0);
              } else {
                kernel((blk.q1 - blk.q0 - 1) * pitch + u1 - blk.u0, nc, NE * C, cs * C, cog, cog, th > 0, a,
                       bp + c0 * kRows<T>, c + c0);
              }
            }
          }
          if (taps == 0) std::fill(c, c + cap * cog, 0.f);  // bias only
        }
        for (int64_t q = blk.q0; q < blk.q1; ++q) {
          const int64_t oh = P.osH * (ph.first + q) + ph.r - P.opH;
          const int64_t row = (q - blk.q0) * pitch * cog;  // the row's pixels in each C tile
          if (nhwc_out) {
            for (int64_t i = 0; i < ngroups; ++i) {
              const Group& gr = groups[i];
              const float* z = tiles.data() + i * cap * cog + row;
              Y* yo = yp + ((n * P.Ho + oh) * P.Wo + gr.ow0 + gr.step * blk.u0) * cog;
              for (int64_t u = 0; u < std::min(gr.count, blk.u1) - blk.u0; ++u)
                store_row(z + u * cog, bias, cog, yo + u * gr.step * cog, avx2);
            }
            continue;
          }
          Y* yrow = yp + n * cog * plane + oh * P.Wo;  // channel co's row at yrow + co * plane
          int64_t C8 = 0, V8 = 0;
#if defined(__x86_64__)
          if (avx2 && even >= 0) {
            // 8 channels x 8 pixels of a group (two interleaved groups: 16 outputs) at a time.
            const Group& ge = groups[even];
            const int64_t count = odd >= 0 ? std::min(ge.count, groups[odd].count) : ge.count;
            C8 = cog / 8 * 8, V8 = std::max<int64_t>(0, std::min(count, blk.u1) - blk.u0) / 8 * 8;
            Y* y0 = yrow + ge.ow0 + ge.step * blk.u0;
            const float* ze = tiles.data() + even * cap * cog + row;
            const float* zo = odd >= 0 ? tiles.data() + odd * cap * cog + row : nullptr;
            for (int64_t c0 = 0; c0 < C8; c0 += 8)
              for (int64_t v = 0; v < V8; v += 8)
                store_transposed_tile(ze + v * cog + c0, zo ? zo + v * cog + c0 : nullptr, cog,
                                      bias ? bias + c0 : nullptr, y0 + c0 * plane + ge.step * v, plane);
          }
#endif
          // The rest one value at a time.
          for (int64_t i = 0; i < ngroups; ++i) {
            const Group& gr = groups[i];
            const float* z = tiles.data() + i * cap * cog + row;
            Y* yo = yrow + gr.ow0 + gr.step * blk.u0;
            const int64_t nu = std::min(gr.count, blk.u1) - blk.u0;
            for (int64_t co = 0; co < cog; ++co) {
              const float add = bias ? bias[co] : 0.f;
              for (int64_t u = co < C8 ? V8 : 0; u < nu; ++u) yo[co * plane + u * gr.step] = Y(z[u * cog + co] + add);
            }
          }
        }
      }
    });
  }
}

template <typename T>
void stacked(const StackedPlan& P, const at::Tensor& x, const at::Tensor& w, const float* bias, const at::Tensor& y) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (y.scalar_type() == at::kBFloat16) return stacked_into<bf16, bf16>(P, x, w, bias, y);
  }
  stacked_into<T, float>(P, x, w, bias, y);
}
template <typename T>
void stacked_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const float* bias,
                     const at::Tensor& y) {
  stacked<T>(forward_plan(s), x, w, bias, y);
}
// grad_input (stacked_grad_input): gx = the correlation of gy with w, read as (C_out x C_in) per tap.
template <typename T>
void stacked_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  stacked<T>(grad_input_plan(s), gy, w.transpose(0, 1), nullptr, gx);
}

// channels_last. A per tap: NB pixels x Kp channels of x shifted (rows copied, zero outside the image and
// past cig); B per tap: W[ci, co, kh, kw] as (cig x cog) (bfloat16: pairs of rows); the C tile
// (NB x cog) sums the taps and is stored to the pixels' y rows.
template <typename T>
void phase_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& y) {
  const float* bias = b.defined() ? b.const_data_ptr<float>() : nullptr;
  if (stacked(s, x.scalar_type())) return stacked_forward<T>(s, x, w, bias, y);
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), Kp = padded_k<T>(cig), kk = s.kH * s.kW;
  const int64_t NB = std::min<int64_t>(64, tile_columns<T>(Kp)), CB = 256;
  const auto hs = phase_dims(s.kH, s.sH, s.pH, s.dH, s.H_out), ws = phase_dims(s.kW, s.sW, s.pW, s.dW, s.W_out);
  const auto blocks = phase_blocks(hs, ws, NB);
  const int64_t nblocks = blocks.size();
  const T* xp = x.const_data_ptr<T>();
  float* yp = y.mutable_data_ptr<float>();
  const bool avx2 = isa_level() >= 1;
  for (int64_t g = 0; g < s.groups; ++g) {
    std::vector<at::Tensor> bs(kk);  // tap's B: (cig x cog), row-major or pairs of rows
    const auto wt = taps_major(w.narrow(0, g * cig, cig));  // (kk, cig, cog)
    for (int64_t tap = 0; tap < kk; ++tap) bs[tap] = as_b<T>(wt[tap]);
    parallel_tasks(s.N * nblocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<T> a(NB * Kp, T(0.f));
      std::vector<float> c(NB * cog);
      std::vector<Run> runs;
      std::vector<Segment> segs;
      for (int64_t t = t0; t < t1; ++t) {
        const auto [n, nb, ph, pw] = phase_task(hs, ws, blocks, NB, t, runs);
        bool any = false;
        for (size_t th = 0; th < ph.k.size(); ++th)
          for (size_t tw = 0; tw < pw.k.size(); ++tw) {
            const int64_t eh = ph.e[th], ew = pw.e[tw];
            const T* bp = bs[ph.k[th] * s.kW + pw.k[tw]].template const_data_ptr<T>();
            if (Kp == cig && inside_segments(s, runs, eh, ew, segs)) {  // A read in place: pixels C_in apart
              for (const Segment& u : segs)
                for (int64_t c0 = 0; c0 < cog; c0 += CB)
                  kernel(u.len, std::min(CB, cog - c0), Kp, s.C_in, cog, cog, any,
                         xp + (n * s.H_in * s.W_in + u.offset) * s.C_in + g * cig, bp + c0 * kRows<T>,
                         c.data() + u.j * cog + c0);
              any = true;
              continue;
            }
            for (const Run& u : runs) {
              const int64_t ih = u.ih - eh;
              for (int64_t v = u.iw0; v < u.iw1; ++v) {
                T* d = a.data() + (u.j + v - u.iw0) * Kp;
                const int64_t iw = v - ew;
                if (ih < 0 || ih >= s.H_in || iw < 0 || iw >= s.W_in) {
                  std::fill(d, d + cig, T(0.f));
                } else {
                  const T* src = xp + ((n * s.H_in + ih) * s.W_in + iw) * s.C_in + g * cig;
                  std::copy(src, src + cig, d);
                }
              }
            }
            for (int64_t c0 = 0; c0 < cog; c0 += CB) {
              const int64_t nc = std::min(CB, cog - c0);
              kernel(nb, nc, Kp, Kp, cog, cog, any, a.data(), bp + c0 * kRows<T>, c.data() + c0);
            }
            any = true;
          }
        for (const Run& u : runs) {
          const int64_t oh = s.sH * u.ih + ph.r - s.pH;
          for (int64_t v = u.iw0; v < u.iw1; ++v) {
            const int64_t ow = s.sW * v + pw.r - s.pW;
            float* yo = yp + ((n * s.H_out + oh) * s.W_out + ow) * s.C_out + g * cog;
            const float* z = c.data() + (u.j + v - u.iw0) * cog;
            if (any) store_row(z, bias ? bias + g * cog : nullptr, cog, yo, avx2);
            else for (int64_t co = 0; co < cog; ++co) yo[co] = bias ? bias[g * cog + co] : 0.f;
          }
        }
      }
    });
  }
}

// DECONV_EXT_CPU_GEMM_FORWARD: 1 phase, 0 scatter, -1 auto.
int forced_formulation() {
  const char* forced = std::getenv("DECONV_EXT_CPU_GEMM_FORWARD");
  if (forced == nullptr || *forced == 0 || std::strcmp(forced, "auto") == 0) return -1;
  if (std::strcmp(forced, "phase") == 0) return 1;
  if (std::strcmp(forced, "scatter") == 0) return 0;
  TORCH_CHECK(false, "DECONV_EXT_CPU_GEMM_FORWARD: expected one of auto, phase, scatter, got '", std::string(forced),
              "'");
}

// With stride 1, grad_input is itself a transposed convolution -- a correlation is one with the kernel
// flipped, the channel roles swapped and padding d(k-1) - p (possibly negative: the phase geometry does not
// mind) -- whose input is gy and whose output is gx. Then it can run on the phase forward: one phase, every
// tap a shift of gy, read in place where a block's shifted pixels lie inside it. Measured against the im2col
// grad_input (k3 and k5, stride 1, 32-256 channels): 1.3-1.9x faster for NCHW bfloat16 (whose im2col tiles
// interleave pairs of taps), within +-6% for NCHW float32 but 17% slower on 8x8 images, and no faster for
// channels_last (whose im2col copies whole channel runs). So NCHW bfloat16 takes it unless the forward's rule
// says otherwise; DECONV_EXT_CPU_GEMM_FORWARD=phase|scatter forces it either way for every stride-1 call.
ConvT2dShape grad_input_as_forward(const ConvT2dShape& s) {
  return ConvT2dShape{s.N, s.C_out, s.H_out, s.W_out, s.C_in, s.H_in, s.W_in, s.kH, s.kW, 1, 1,
                      s.dH * (s.kH - 1) - s.pH, s.dW * (s.kW - 1) - s.pW, s.dH, s.dW, s.groups};
}
at::Tensor flipped_transposed(const ConvT2dShape& s, const at::Tensor& w) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  return w.reshape({s.groups, cig, cog, s.kH, s.kW}).transpose(1, 2).flip({3, 4}).reshape({s.C_out, cig, s.kH, s.kW});
}
// NCHW strided grad_input as the stacked correlation of gy (stacks_grad_input) unless
// DECONV_EXT_CPU_GEMM_FORWARD=scatter (tests reach the im2col tiles that way): DCGAN 128->64 float32
// 9.97 -> 6.95 ms (PyTorch 6.5), bfloat16 3.70 -> 1.86 (1.83).
bool grad_input_stacked(const ConvT2dShape& s, bool nhwc, at::ScalarType t) {
  return !nhwc && stacks_grad_input(s, t) && forced_formulation() != 0;
}
bool grad_input_by_phase(const ConvT2dShape& s, bool nhwc, at::ScalarType t) {
  if (s.sH != 1 || s.sW != 1) return false;
  const int forced = forced_formulation();
  if (forced >= 0) return forced == 1;
  // float32 whose flipped taps stack (stacked_forward): channels_last 0-15% faster than the im2col
  // grad_input on 3x3 and 5x5, 32-256 channels; NCHW 3x3 64 -> 64 1.57 -> 1.05 ms (PyTorch 1.0-1.6).
  const ConvT2dShape f = grad_input_as_forward(s);
  if (t == at::kFloat && s.C_in >= 16 && stacked(f, t)) return true;
  return !nhwc && t == at::kBFloat16 && forward_by_phase(f, nhwc, t);
}

}  // namespace

// Which forward formulation: by output phase (phase_forward: gathers C_in values per output pixel and tap,
// stores y once) or the scatter (tiled_forward: C_out values per input pixel and tap added into y). The
// gathers cost more than the scatter when C_in exceeds C_out (NCHW) or 2 C_out (channels_last, whose
// gathers are contiguous channel runs), measured on the bench's and other shapes (float32 and bfloat16).
// A forward whose column taps stack (stacked()) runs by phase when it has 16+ output channels (a whole tile
// of B's columns): the stacked forward gathers nothing (bfloat16 NCHW DCGAN 128->64 4.4 -> 2.2 ms, 512->256
// 11.0 -> 8.3, channels_last about even; float32 NCHW 3x3 64->64 1.19 -> 1.02 ms, dilated 1.16 -> 1.00,
// DCGAN 128->64 7.7 -> 6.5), but with fewer its GEMMs are mostly empty tiles (bfloat16 FSRCNN's one
// channel 1.5-2.5x slower, DCGAN 64->3 1.4x).
// DECONV_EXT_CPU_GEMM_FORWARD=auto|phase|scatter forces one (tests, diagnosis).
bool forward_by_phase(const ConvT2dShape& s, bool nhwc, at::ScalarType t) {
  const int forced = forced_formulation();
  if (forced >= 0) return forced == 1;
  if (s.cout_per_group() >= 16 && stacked(s, t)) return true;
  if (nhwc && taps_tile_output(s)) return false;  // the scatter stores (U-Net k2s2 channels_last 1.32 -> 1.03 ms)
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  return nhwc ? 2 * cog >= cig : cog >= cig;
}

bool gemm_forward_writes_bf16(const ConvT2dShape& s, bool nhwc) {
  return use_tiles(at::kBFloat16) && forward_by_phase(s, nhwc, at::kBFloat16) && stacked(s, at::kBFloat16);
}
bool gemm_grad_input_writes_bf16(const ConvT2dShape& s, bool nhwc) {
  if (!use_tiles(at::kBFloat16)) return false;
  if (grad_input_stacked(s, nhwc, at::kBFloat16)) return true;
  return grad_input_by_phase(s, nhwc, at::kBFloat16) && stacked(grad_input_as_forward(s), at::kBFloat16);
}

void tiled_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const at::Tensor& y) {
  begin_op();
  if (forward_by_phase(s, false, x.scalar_type())) {
    if (x.scalar_type() == at::kBFloat16) return phase_forward<bf16>(s, x, w, b, y);
    return phase_forward<float>(s, x, w, b, y);
  }
  if (x.scalar_type() == at::kBFloat16) return tiled_forward<bf16>(s, x, w, b, y);
  tiled_forward<float>(s, x, w, b, y);
}
void tiled_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  begin_op();
  if (grad_input_stacked(s, false, gy.scalar_type())) {
    if (gy.scalar_type() == at::kBFloat16) return stacked_grad_input<bf16>(s, gy, w, gx);
    return stacked_grad_input<float>(s, gy, w, gx);
  }
  if (grad_input_by_phase(s, false, gy.scalar_type())) {
    const auto f = grad_input_as_forward(s);
    if (gy.scalar_type() == at::kBFloat16) return phase_forward<bf16>(f, gy, flipped_transposed(s, w), {}, gx);
    return phase_forward<float>(f, gy, flipped_transposed(s, w), {}, gx);
  }
  if (gy.scalar_type() == at::kBFloat16) return tiled_grad_input<bf16>(s, gy, w, gx);
  tiled_grad_input<float>(s, gy, w, gx);
}
void tiled_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  begin_op();
  if (x.scalar_type() == at::kBFloat16) {
    if (by_planes(s)) return planes_grad_weight<bf16>(s, gy, x, gw, false);
    return tiled_grad_weight<bf16>(s, gy, x, gw);
  }
  if (grad_weight_by_slices(s, false)) return sliced_grad_weight(s, gy, x, gw);
  if (by_planes(s)) return planes_grad_weight<float>(s, gy, x, gw, false);
  tiled_grad_weight<float>(s, gy, x, gw);
}
void tiled_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& y) {
  begin_op();
  if (forward_by_phase(s, true, x.scalar_type())) {
    if (x.scalar_type() == at::kBFloat16) return phase_nhwc_forward<bf16>(s, x, w, b, y);
    return phase_nhwc_forward<float>(s, x, w, b, y);
  }
  if (x.scalar_type() == at::kBFloat16) return tiled_nhwc_forward<bf16>(s, x, w, b, y);
  tiled_nhwc_forward<float>(s, x, w, b, y);
}
void tiled_nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  begin_op();
  if (grad_input_by_phase(s, true, gy.scalar_type())) {
    const auto f = grad_input_as_forward(s);
    if (gy.scalar_type() == at::kBFloat16) return phase_nhwc_forward<bf16>(f, gy, flipped_transposed(s, w), {}, gx);
    return phase_nhwc_forward<float>(f, gy, flipped_transposed(s, w), {}, gx);
  }
  if (gy.scalar_type() == at::kBFloat16) return tiled_nhwc_grad_input<bf16>(s, gy, w, gx);
  tiled_nhwc_grad_input<float>(s, gy, w, gx);
}
void tiled_nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  begin_op();
  if (x.scalar_type() == at::kBFloat16) return tiled_nhwc_grad_weight<bf16>(s, gy, x, gw);
  if (grad_weight_by_slices(s, true)) return sliced_grad_weight(s, gy, x, gw);
  // stride 1 on the planes (gy's pixels transposed per task): 3x3 64->64 and its dilated twin 1.52 -> 1.38 ms;
  // DCGAN 128->64 (stride 2) ran 7% slower there than on the im2col tiles
  if (s.sH == 1 && s.sW == 1) return planes_grad_weight<float>(s, gy, x, gw, true);
  tiled_nhwc_grad_weight<float>(s, gy, x, gw);
}

}  // namespace cpu
}  // namespace deconv_ext
