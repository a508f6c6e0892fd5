// Direct float32 kernels for few output channels per group (see fast_paths.h for when they are used).
//
// Work unit: a "strip" of CB output channels x (L*V) consecutive outputs of one row (L = 8 lanes, 16
// with AVX-512), accumulated in registers over R source rows x T taps. Inputs are laid out so that a strip's source values are
// contiguous for every tap:
//   forward      output column ow with (ow + pW) = sW*m + rw (phase rw) is fed by taps kw with
//                kw*dW = rw (mod sW), from input column m - e(kw), e = (kw*dW - rw) / sW >= 0: a strip
//                runs over consecutive m of one phase, reading a zero-padded copy of the input
//                (E = max e columns on the left, so no bounds tests inside the loops). With column
//                strides 2-4 a strip covers every phase instead (all_phases_body): each loaded vector
//                feeds all the taps that read it.
//   grad_input   gx[iw] reads gy at column iw*sW - pW + kw*dW = sW*(iw + q) + r - pW, with
//                kw*dW = sW*q + r: a copy of gy split into sW column phases ("deinterleaved", zeros
//                outside the image) makes it contiguous in iw.
//   grad_weight  the same two buffers; each weight element is a dot product over (n, ih, iw),
//                vectorised along iw and summed across lanes in a fixed order.
// Extra memory: a zero-padded copy of the whole input (forward, and grad_weight when its rows are not
// whole vectors) and the deinterleaved gy (output-sized, backward).
// channels_last (NHWC) images: the padded copy and the deinterleaved gy are built from them directly,
// grad_weight is vectorised along the input channels instead (nhwc_grad_weight; with fewer than half a
// vector of them, depthwise for one, it gathers rows as below), and y / gx are stored with NHWC strides by
// the strip kernel.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <atomic>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <string>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fast_paths.h"
#include "transpose.h"

// `acc += w * x` must become one fused multiply-add; GCC does not contract in ISO C++ mode.
#pragma GCC optimize("fp-contract=fast")
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types never cross a call boundary: all helpers are always_inline

namespace deconv_ext {
namespace cpu {
namespace {

typedef float vec8 __attribute__((vector_size(32)));
typedef float vec16 __attribute__((vector_size(64)));
#define DECONV_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename VT>
DECONV_ALWAYS_INLINE VT loadv(const float* p) {
  VT v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Work per parallel chunk: ~64k multiply-adds, so small problems stay on one thread.
int64_t grain(int64_t work_per_item) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work_per_item)); }

// x (rows of W columns) copied into rows of Wp columns starting at column E, zeros around: the kernels
// then read whole vectors with no bounds tests. Filled here rather than with at::zeros + copy_: one
// dynamically scheduled pass instead of two statically split ones (which cost much more when the cores
// are shared with other processes). `tail` zeros follow the last row, for kernels whose lanes past a row's
// end (discarded) may read the next row or, after the last one, the tail.
at::Tensor padded_storage(int64_t rows, int64_t Wp, int64_t tail, const at::TensorOptions& options) {
  auto flat = scratch(Scratch::padded_x, rows * Wp + tail, options);
  if (tail > 0) flat.narrow(0, rows * Wp, tail).zero_();
  return flat.narrow(0, 0, rows * Wp).view({rows, Wp});
}
// Values of x (any floating type; the direct kernels get float32, bfloat16 or float16) as float32.
template <typename T>
void widen_copy(const T* src, int64_t count, float* dst) {
  if constexpr (std::is_same_v<T, float>) std::memcpy(dst, src, count * sizeof(float));
  else for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
}

// x may be bfloat16 or float16 too: the copy is float32 (the forward then needs no separate widened copy).
at::Tensor padded_rows(const at::Tensor& x, int64_t rows, int64_t W, int64_t E, int64_t Wp, int64_t tail = 0) {
  auto out = padded_storage(rows, Wp, tail, x.options().dtype(at::kFloat));
  float* dst = out.mutable_data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "padded_rows", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    parallel_tasks(rows, grain(Wp), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* d = dst + r * Wp;
        std::fill(d, d + E, 0.f);
        widen_copy(src + r * W, W, d + E);
        std::fill(d + E + W, d + Wp, 0.f);
      }
    });
  });
  return out;
}

int current_isa();

// One channels_last row block (W pixels x C channels) into C padded rows, channel c's at d + c * cstride:
// 8 x 8 blocks transposed in registers (float32 and bfloat16, AVX2), the rest 32 pixels (32 x C values, in
// L1) at a time.
template <typename T>
void nhwc_row_padded(const T* block, int64_t C, int64_t W, int64_t E, int64_t Wp, float* d, int64_t cstride) {
  for (int64_t c = 0; c < C; ++c) {
    std::fill(d + c * cstride, d + c * cstride + E, 0.f);
    std::fill(d + c * cstride + E + W, d + c * cstride + Wp, 0.f);
  }
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, c10::BFloat16>) {
    if (current_isa() >= 1 && C >= 8) {
      const int64_t W8 = W / 8 * 8, C8 = C / 8 * 8;
      for (int64_t p0 = 0; p0 < W8; p0 += 64) {
        const int64_t p1 = std::min(W8, p0 + 64);
        for (int64_t c0 = 0; c0 < C8; c0 += 8)
          for (int64_t w0 = p0; w0 < p1; w0 += 8)
            transpose8x8(block + w0 * C + c0, C, d + c0 * cstride + E + w0, cstride);
        for (int64_t c = C8; c < C; ++c)
          for (int64_t w = p0; w < p1; ++w) d[c * cstride + E + w] = static_cast<float>(block[w * C + c]);
      }
      for (int64_t w = W8; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) d[c * cstride + E + w] = static_cast<float>(block[w * C + c]);
      return;
    }
  }
#endif
  for (int64_t w0 = 0; w0 < W; w0 += 32) {
    const int64_t w1 = std::min(W, w0 + 32);
    for (int64_t c = 0; c < C; ++c) {
      float* dc = d + c * cstride + E;
      for (int64_t w = w0; w < w1; ++w) dc[w] = static_cast<float>(block[w * C + c]);
    }
  }
}

// Rows [h0, h1) of every channel of images [n0, n0 + images) of x padded as padded_rows does:
// (images, C_in, h1 - h0, Wp). From NCHW, or from channels_last (NHWC) x, which is transposed on the way
// (tasks over (n, h): each reads one W x C block of x), so a channels_last input costs no extra pass.
at::Tensor padded_image_rows(const ConvT2dShape& s, const at::Tensor& x, int64_t n0, int64_t images, int64_t h0,
                             int64_t h1, int64_t E, int64_t Wp, int64_t tail = 0) {
  const int64_t C = s.C_in, H = s.H_in, W = s.W_in, rows = h1 - h0;
  const bool nhwc = !x.is_contiguous() && x.is_contiguous(c10::MemoryFormat::ChannelsLast);
  auto out = padded_storage(images * C * rows, Wp, tail, x.options().dtype(at::kFloat));
  float* dst = out.mutable_data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "padded_image_rows", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    if (nhwc) {
      parallel_tasks(images * rows, grain(C * Wp), [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n = t / rows, h = t % rows;
          nhwc_row_padded(src + ((n0 + n) * H + h0 + h) * W * C, C, W, E, Wp, dst + (n * C * rows + h) * Wp,
                          rows * Wp);
        }
      });
      return;
    }
    parallel_tasks(images * C * rows, grain(Wp), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {  // t = (n, c, h)
        const int64_t nc = t / rows, h = h0 + t % rows;
        float* d = dst + t * Wp;
        std::fill(d, d + E, 0.f);
        widen_copy(src + ((n0 * C + nc) * H + h) * W, W, d + E);
        std::fill(d + E + W, d + Wp, 0.f);
      }
    });
  });
  return out;
}

// ---- the strip micro-kernel ------------------------------------------------------------------------
struct Strip {
  const float* const* src;  // R source rows (pointer to column 0 of the strip's frame)
  const float* const* wrow;  // R weight pointers (first channel of the block)
  int64_t R;
  const int64_t* soff;  // T source offsets (added to src[r] + shift)
  const int64_t* wtap;  // T weight offsets (added to wrow[r])
  int64_t T;
  int64_t wcb;    // weight stride between the CB channels of the block
  int64_t shift;  // first strip position
  const float* bias;  // CB values or null
  float* out;
  int64_t ocb, olane, count;  // output strides (channel, lane) and number of lanes to store
};

// The sum over the rows and taps. With the block's weights contiguous (wcb == 1, known at compile time) each
// weight is an FMA's broadcast operand at a constant offset; a runtime stride made the compiler chain one
// address add per channel (16 dependent adds per tap for 16 channels: half the FMA rate).
template <typename VT, int CB, int V, bool kUnit>
DECONV_ALWAYS_INLINE void strip_sum(const Strip& a, VT (&acc)[CB][V]) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  const int64_t wcb = kUnit ? 1 : a.wcb;
  for (int64_t r = 0; r < a.R; ++r) {
    const float* s = a.src[r] + a.shift;
    const float* wr = a.wrow[r];
    for (int64_t t = 0; t < a.T; ++t) {
      const float* st = s + a.soff[t];
      const float* wt = wr + a.wtap[t];
      VT xv[V];
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) xv[v] = loadv<VT>(st + kL * v);
#pragma GCC unroll 16
      for (int c = 0; c < CB; ++c) {
        const float wv = wt[c * wcb];
#pragma GCC unroll 16
        for (int v = 0; v < V; ++v) acc[c][v] += wv * xv[v];
      }
    }
  }
}

template <typename VT, int CB, int V>
DECONV_ALWAYS_INLINE void strip_body(const Strip& a) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  VT acc[CB][V];
#pragma GCC unroll 16
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) acc[c][v] = VT{};
  if (CB > 1 && a.wcb == 1) strip_sum<VT, CB, V, true>(a, acc);
  else strip_sum<VT, CB, V, false>(a, acc);
  for (int c = 0; c < CB; ++c) {
    const float b = a.bias ? a.bias[c] : 0.f;
    float* o = a.out + c * a.ocb;
    if (a.olane == 1 && a.count == kL * V) {  // full contiguous strip: vector stores
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) {
        const VT r = acc[c][v] + b;
        std::memcpy(o + kL * v, &r, sizeof r);
      }
      continue;
    }
    float lane[kL * V];
    std::memcpy(lane, acc[c], sizeof lane);
    for (int64_t l = 0; l < a.count; ++l) o[l * a.olane] = lane[l] + b;
  }
}

// ---- grad_weight micro-kernel: CI input channels x TB taps of one weight row, dot products along iw ----
// Each gy load feeds CI FMAs and each x load TB of them. The vector accumulators live in `acc` between
// calls, so a caller can run all tap blocks over a few rows while those rows are in L1, then move on.
struct DotRows {
  const float* const* x;   // R input rows of the first channel (zero beyond W_in up to `width`)
  const float* const* gy;  // R deinterleaved gy rows
  int64_t R, width;        // rows, columns rounded up to a whole number of vectors
  int64_t xc;              // stride between the CI input channels
  const int64_t* soff;     // TB offsets into the gy rows
  float* acc;              // CI x TB vectors (channel-major), read and updated
};

template <typename VT, int CI, int TB>
DECONV_ALWAYS_INLINE void dot_body(const DotRows& a) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  VT acc[CI][TB];
#pragma GCC unroll 8
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) acc[c][t] = loadv<VT>(a.acc + (c * TB + t) * kL);
  int64_t so[TB];
  for (int t = 0; t < TB; ++t) so[t] = a.soff[t];
  for (int64_t r = 0; r < a.R; ++r) {
    const float* xr = a.x[r];
    const float* gr = a.gy[r];
    for (int64_t i = 0; i < a.width; i += kL) {
      VT g[TB];
#pragma GCC unroll 8
      for (int t = 0; t < TB; ++t) g[t] = loadv<VT>(gr + so[t] + i);
#pragma GCC unroll 8
      for (int c = 0; c < CI; ++c) {
        const VT xv = loadv<VT>(xr + c * a.xc + i);
#pragma GCC unroll 8
        for (int t = 0; t < TB; ++t) acc[c][t] += xv * g[t];
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < CI; ++c)
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) std::memcpy(a.acc + (c * TB + t) * kL, &acc[c][t], sizeof(VT));
}

// ---- channels_last grad_weight micro-kernel: CV vectors of input channels x TB taps of one weight row --
// Vectorised along the input channels, which are contiguous in an NHWC pixel: for each pixel of R rows,
// CV vectors of x times TB gy values (broadcast), in registers. Each x load feeds TB FMAs, each gy value CV.
struct ChanDot {
  const float* x;          // R rows of W pixels, `px` floats per pixel (channels zero-padded)
  const float* const* gy;  // R deinterleaved gy rows; nullptr: that row is outside gy (skipped)
  int64_t R, W, px;
  const int64_t* soff;     // TB offsets into the gy rows
  float* acc;              // TB taps x CV vectors, taps `px` floats apart; read and updated
};

template <typename VT, int CV, int TB>
DECONV_ALWAYS_INLINE void chan_dot_body(const ChanDot& a) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  VT acc[TB][CV];
#pragma GCC unroll 8
  for (int t = 0; t < TB; ++t)
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) acc[t][c] = loadv<VT>(a.acc + t * a.px + c * kL);
  int64_t so[TB];
  for (int t = 0; t < TB; ++t) so[t] = a.soff[t];
  for (int64_t r = 0; r < a.R; ++r) {
    const float* gr = a.gy[r];
    if (gr == nullptr) continue;
    const float* xr = a.x + r * a.W * a.px;
    for (int64_t i = 0; i < a.W; ++i) {
      VT xv[CV];
#pragma GCC unroll 8
      for (int c = 0; c < CV; ++c) xv[c] = loadv<VT>(xr + i * a.px + c * kL);
#pragma GCC unroll 8
      for (int t = 0; t < TB; ++t) {
        const float g = gr[so[t] + i];  // (vector * scalar: a broadcast load, no vector ALU op)
#pragma GCC unroll 8
        for (int c = 0; c < CV; ++c) acc[t][c] += xv[c] * g;
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < TB; ++t)
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) std::memcpy(a.acc + t * a.px + c * kL, &acc[t][c], sizeof(VT));
}

// ---- channels_last grad_input micro-kernel: P pixels x CV vectors of input channels ------------------
// gx[pixel, channels] = sum over T (output channel, tap) of W[channels, co, tap] * gy value: for each of the
// T terms, CV weight vectors (reused by the P pixels) times P broadcast gy values, in registers.
struct ChanAxpy {
  const float* const* w;   // T pointers to weight vectors (channels contiguous); the CV used start at + woff
  const float* const* gy;  // T pointers to gy rows; the P pixels' values (consecutive) start at + goff
  int64_t T, woff, goff;
  float* out;              // P x CV vectors, pixels `px` floats apart (written)
  int64_t px;
};

template <typename VT, int CV, int P>
DECONV_ALWAYS_INLINE void chan_axpy_body(const ChanAxpy& a) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  VT acc[P][CV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) acc[p][c] = VT{};
  for (int64_t t = 0; t < a.T; ++t) {
    const float* wt = a.w[t] + a.woff;
    const float* gt = a.gy[t] + a.goff;
    VT wv[CV];
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) wv[c] = loadv<VT>(wt + c * kL);
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      const float g = gt[p];  // (vector * scalar: a broadcast load, no vector ALU op)
#pragma GCC unroll 8
      for (int c = 0; c < CV; ++c) acc[p][c] += wv[c] * g;
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) std::memcpy(a.out + p * a.px + c * kL, &acc[p][c], sizeof(VT));
}

// ---- forward micro-kernel for few output channels: every column phase of a strip at once ----------------
// With few output channels the strip kernel loads V vectors of x per tap for CB*V FMAs: it is load-bound. This
// one covers all S = sW column phases of V*L consecutive phase positions m (output columns S*m + rw - pW,
// rw < S; dW = 1) for CB output channels. Tap kw belongs to phase kw % S and reads x at m - kw / S, so for each
// source row the V vectors at m - e are loaded once per shift e and feed the S taps kw = S*e + rw of every
// channel (CB*kW FMAs per row instead of CB per loaded vector). Each output sums its rows in order and, within
// a row, its taps in ascending kw: the order of the strip kernel, so the results are bitwise the same.
struct AllPhases {
  const float* const* src;   // R source rows (column 0 of the strip's frame: x column m at src[r][m])
  const float* const* wrow;  // R weight rows (the kW taps of one kh, first channel of the block)
  int64_t R, kW, NE;         // rows, taps, shifts (ceil(kW / S))
  int64_t wcb;               // weight stride between the CB channels
  int64_t shift;             // first m of the strip
  const float* bias;         // CB values or null
  float* out;                // the output row (column 0) of the first channel
  int64_t ocb, pW, W_out, ostep;  // channels ocb apart; columns S*m + rw - pW in [0, W_out) stored, ostep apart
};

template <typename VT, int CB, int S, int V>
DECONV_ALWAYS_INLINE void all_phases_body(const AllPhases& a) {
  constexpr int kL = sizeof(VT) / sizeof(float);
  VT acc[CB][S][V];
#pragma GCC unroll 8
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 8
    for (int rw = 0; rw < S; ++rw)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[c][rw][v] = VT{};
  for (int64_t r = 0; r < a.R; ++r) {
    const float* src = a.src[r] + a.shift;
    const float* w = a.wrow[r];
    for (int64_t e = 0; e < a.NE; ++e) {
      VT xv[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) xv[v] = loadv<VT>(src - e + kL * v);
#pragma GCC unroll 8
      for (int rw = 0; rw < S; ++rw) {
        if (S * e + rw >= a.kW) break;
#pragma GCC unroll 8
        for (int c = 0; c < CB; ++c) {
          const float wv = w[c * a.wcb + S * e + rw];
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[c][rw][v] += wv * xv[v];
        }
      }
    }
  }
  const int64_t c0 = S * a.shift - a.pW;  // the column of (m = shift, rw = 0)
  const int64_t i0 = std::max<int64_t>(0, -c0), i1 = std::min<int64_t>(S * kL * V, a.W_out - c0);
  for (int c = 0; c < CB; ++c) {
    float lane[S][kL * V];
    std::memcpy(lane, acc[c], sizeof lane);
    const float b = a.bias ? a.bias[c] : 0.f;
    float* o = a.out + c * a.ocb;
    for (int64_t i = i0; i < i1; ++i) o[(c0 + i) * a.ostep] = lane[i % S][i / S] + b;
  }
}

// ---- ISA dispatch: AVX-512 and AVX2/FMA clones on x86-64, 8-lane baseline code elsewhere -------------
using StripFn = void (*)(const Strip&);
using DotFn = void (*)(const DotRows&);
using ChanFn = void (*)(const ChanDot&);
using AxpyFn = void (*)(const ChanAxpy&);
using PhasesFn = void (*)(const AllPhases&);

template <int CB, int V> void strip_base(const Strip& a) { strip_body<vec8, CB, V>(a); }
template <int CI, int TB> void dot_base(const DotRows& a) { dot_body<vec8, CI, TB>(a); }
template <int CV, int TB> void chan_base(const ChanDot& a) { chan_dot_body<vec8, CV, TB>(a); }
template <int CV, int P> void axpy_base(const ChanAxpy& a) { chan_axpy_body<vec8, CV, P>(a); }
template <int CB, int S, int V> void phases_base(const AllPhases& a) { all_phases_body<vec8, CB, S, V>(a); }
#if defined(__x86_64__)
#define DECONV_AVX2 __attribute__((target("avx2,fma")))
#define DECONV_AVX512 __attribute__((target("avx512f,avx2,fma")))
template <int CB, int V> DECONV_AVX2 void strip_avx2(const Strip& a) { strip_body<vec8, CB, V>(a); }
template <int CI, int TB> DECONV_AVX2 void dot_avx2(const DotRows& a) { dot_body<vec8, CI, TB>(a); }
template <int CV, int TB> DECONV_AVX2 void chan_avx2(const ChanDot& a) { chan_dot_body<vec8, CV, TB>(a); }
template <int CV, int P> DECONV_AVX2 void axpy_avx2(const ChanAxpy& a) { chan_axpy_body<vec8, CV, P>(a); }
template <int CB, int S, int V> DECONV_AVX2 void phases_avx2(const AllPhases& a) { all_phases_body<vec8, CB, S, V>(a); }
template <int CB, int V> DECONV_AVX512 void strip_avx512(const Strip& a) { strip_body<vec16, CB, V>(a); }
template <int CI, int TB> DECONV_AVX512 void dot_avx512(const DotRows& a) { dot_body<vec16, CI, TB>(a); }
template <int CV, int TB> DECONV_AVX512 void chan_avx512(const ChanDot& a) { chan_dot_body<vec16, CV, TB>(a); }
template <int CV, int P> DECONV_AVX512 void axpy_avx512(const ChanAxpy& a) { chan_axpy_body<vec16, CV, P>(a); }
template <int CB, int S, int V> DECONV_AVX512 void phases_avx512(const AllPhases& a) {
  all_phases_body<vec16, CB, S, V>(a);
}
#endif

int hardware_isa_level() {
#if defined(__x86_64__)
  static const int level = __builtin_cpu_supports("avx512f") ? 2
                           : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
  return level;
#else
  return 0;
#endif
}

}  // namespace

// Read at every call (a few getenv per op call, nothing per strip), so a test can switch it in-process.
int isa_level() {
  const char* cap = std::getenv("DECONV_EXT_CPU_ISA");
  const int hw = hardware_isa_level();
  if (cap == nullptr || *cap == 0 || std::strcmp(cap, "auto") == 0 || std::strcmp(cap, "avx512") == 0) return hw;
  if (std::strcmp(cap, "avx2") == 0) return std::min(hw, 1);
  if (std::strcmp(cap, "baseline") == 0) return 0;
  TORCH_CHECK(false, "DECONV_EXT_CPU_ISA: expected one of auto, avx512, avx2, baseline, got '", std::string(cap), "'");
}
bool cpu_isa_available(int level) { return level <= hardware_isa_level(); }
const char* isa_name(int level) { return level == 2 ? "avx512" : level == 1 ? "avx2" : "baseline"; }

namespace {

// The ISA of the call in progress: each direct_* entry point reads isa_level() once and stores it here,
// so every strip of one call uses the same variant (process-wide, like the environment it comes from).
std::atomic<int> call_isa{0};
int current_isa() { return call_isa.load(std::memory_order_relaxed); }
void begin_call() { call_isa.store(isa_level(), std::memory_order_relaxed); }

int64_t lanes() { return current_isa() == 2 ? 16 : 8; }

template <int CB, int V> StripFn strip_fn() {
#if defined(__x86_64__)
  if (current_isa() == 2) return &strip_avx512<CB, V>;
  if (current_isa() == 1) return &strip_avx2<CB, V>;
#endif
  return &strip_base<CB, V>;
}
template <int CI, int TB> DotFn dot_fn() {
#if defined(__x86_64__)
  if (current_isa() == 2) return &dot_avx512<CI, TB>;
  if (current_isa() == 1) return &dot_avx2<CI, TB>;
#endif
  return &dot_base<CI, TB>;
}

// Accumulators CB*V stay within 8 vector registers (of 16 on AVX2, minus the loaded inputs).
int max_v(int64_t cb) { return cb == 1 ? 8 : cb == 2 ? 4 : 2; }
int pick_v(int64_t cb, int64_t width) {
  int v = 1;
  while (v < max_v(cb) && lanes() * v < width) v *= 2;
  return v;
}
// Row length of the deinterleaved gy that the strip kernels' grad_input and grad_weight read: whole strips of
// grad_input's widest strip (one channel: pick_v(1, W_in) vectors) past W_in, plus the taps' reach. The same
// for both, so that a fused backward builds it once (share_deinterleaved_gy).
int64_t strip_wd(const ConvT2dShape& s) {
  return round_up(s.W_in, lanes() * pick_v(1, s.W_in)) + (s.kW - 1) * s.dW / s.sW;
}
// The forward's strips, with the widths 3 and 6 too (one channel: 1, 2, 3, 4, 6, 8 vectors; two: 1-4): the
// fewest vectors computed plus one per strip (its fixed cost), ties to the wider strip. 192 outputs are 2
// strips of 6 vectors rather than 2 of 8 (a quarter of the lanes idle), 48 one of 3 rather than one of 4.
// What a row of `width` outputs costs in strips of v vectors: the vectors computed plus one per strip.
int64_t strips_cost(int64_t width, int v) {
  const int64_t need = std::max<int64_t>(1, ceil_div(width, lanes()));
  return ceil_div(need, v) * (v + 1);
}
int pick_v_forward(int64_t cb, int64_t width) {
  static constexpr int kOne[] = {1, 2, 3, 4, 6, 8}, kTwo[] = {1, 2, 3, 4}, kMore[] = {1, 2};
  const int* opts = cb == 1 ? kOne : cb == 2 ? kTwo : kMore;
  const int count = cb == 1 ? 6 : cb == 2 ? 4 : 2;
  int best = 1;
  for (int i = 0; i < count; ++i)
    if (strips_cost(width, opts[i]) <= strips_cost(width, best)) best = opts[i];
  return best;
}
StripFn pick_strip(int64_t cb, int v) {
  switch (cb * 16 + v) {
    case 16 + 1: return strip_fn<1, 1>();
    case 16 + 2: return strip_fn<1, 2>();
    case 16 + 3: return strip_fn<1, 3>();
    case 16 + 6: return strip_fn<1, 6>();
    case 32 + 3: return strip_fn<2, 3>();
    case 16 + 4: return strip_fn<1, 4>();
    case 16 + 8: return strip_fn<1, 8>();
    case 32 + 1: return strip_fn<2, 1>();
    case 32 + 2: return strip_fn<2, 2>();
    case 32 + 4: return strip_fn<2, 4>();
    case 48 + 1: return strip_fn<3, 1>();
    case 48 + 2: return strip_fn<3, 2>();
    case 64 + 1: return strip_fn<4, 1>();
    case 128 + 1: return strip_fn<8, 1>();
    case 128 + 2: return strip_fn<8, 2>();
    case 256 + 1: return strip_fn<16, 1>();
    default: return strip_fn<4, 2>();
  }
}
template <int CB, int S, int V> PhasesFn phases_fn() {
#if defined(__x86_64__)
  if (current_isa() == 2) return &phases_avx512<CB, S, V>;
  if (current_isa() == 1) return &phases_avx2<CB, S, V>;
#endif
  return &phases_base<CB, S, V>;
}
// The all-phases forward's kernels: vectors per strip V with CB * S * V accumulators plus V loaded vectors
// within the registers (32 with AVX-512, 16 with AVX2); for one channel the cheapest of two or three widths
// (strips_cost, as pick_v_forward). {0, nullptr} where none fits (CB 4 at stride 4 on
// AVX2): the strip kernel then serves.
struct PhasesKernel {
  int V;
  PhasesFn fn;
};
PhasesKernel pick_phases(int64_t CB, int64_t S, int64_t positions) {
  using K = PhasesKernel;
  using Opts = std::vector<K>;
  const bool wide = current_isa() == 2;
  Opts opts;
  switch (CB * 10 + S) {
    case 12: opts = wide ? Opts{{4, phases_fn<1, 2, 4>()}, {8, phases_fn<1, 2, 8>()}}
                         : Opts{{2, phases_fn<1, 2, 2>()}, {4, phases_fn<1, 2, 4>()}}; break;
    case 13: opts = wide ? Opts{{4, phases_fn<1, 3, 4>()}, {6, phases_fn<1, 3, 6>()}}
                         : Opts{{2, phases_fn<1, 3, 2>()}, {3, phases_fn<1, 3, 3>()}}; break;
    case 14: opts = wide ? Opts{{3, phases_fn<1, 4, 3>()}, {4, phases_fn<1, 4, 4>()}, {6, phases_fn<1, 4, 6>()}}
                         : Opts{{2, phases_fn<1, 4, 2>()}, {3, phases_fn<1, 4, 3>()}}; break;
    case 22: opts = wide ? Opts{{6, phases_fn<2, 2, 6>()}} : Opts{{2, phases_fn<2, 2, 2>()}}; break;
    case 23: opts = wide ? Opts{{4, phases_fn<2, 3, 4>()}} : Opts{{2, phases_fn<2, 3, 2>()}}; break;
    case 24: opts = wide ? Opts{{3, phases_fn<2, 4, 3>()}} : Opts{{1, phases_fn<2, 4, 1>()}}; break;
    case 32: opts = wide ? Opts{{4, phases_fn<3, 2, 4>()}} : Opts{{2, phases_fn<3, 2, 2>()}}; break;
    case 33: opts = wide ? Opts{{3, phases_fn<3, 3, 3>()}} : Opts{{1, phases_fn<3, 3, 1>()}}; break;
    case 34: opts = wide ? Opts{{2, phases_fn<3, 4, 2>()}} : Opts{{1, phases_fn<3, 4, 1>()}}; break;
    case 42: opts = wide ? Opts{{3, phases_fn<4, 2, 3>()}} : Opts{{1, phases_fn<4, 2, 1>()}}; break;
    case 43: opts = wide ? Opts{{2, phases_fn<4, 3, 2>()}} : Opts{{1, phases_fn<4, 3, 1>()}}; break;
    case 44: if (wide) opts = Opts{{1, phases_fn<4, 4, 1>()}}; break;
    default: break;
  }
  if (opts.empty()) return {0, nullptr};
  K best = opts[0];
  for (const K& o : opts)
    if (strips_cost(positions, o.V) <= strips_cost(positions, best.V)) best = o;
  return best;
}
// ci in {1, 2, 4}, tb in 1..6.
template <int CI> DotFn pick_dot_tb(int64_t tb) {
  switch (tb) {
    case 1: return dot_fn<CI, 1>();
    case 2: return dot_fn<CI, 2>();
    case 3: return dot_fn<CI, 3>();
    case 4: return dot_fn<CI, 4>();
    case 5: return dot_fn<CI, 5>();
    default: return dot_fn<CI, 6>();
  }
}
DotFn pick_dot(int64_t ci, int64_t tb) {
  return ci == 4 ? pick_dot_tb<4>(tb) : ci == 2 ? pick_dot_tb<2>(tb) : pick_dot_tb<1>(tb);
}
template <int CV, int TB> ChanFn chan_fn() {
#if defined(__x86_64__)
  if (current_isa() == 2) return &chan_avx512<CV, TB>;
  if (current_isa() == 1) return &chan_avx2<CV, TB>;
#endif
  return &chan_base<CV, TB>;
}
// cv in 1..4 (AVX-512; 1..2 otherwise, see kChanVectors), tb in 1..6.
template <int CV> ChanFn pick_chan_tb(int64_t tb) {
  switch (tb) {
    case 1: return chan_fn<CV, 1>();
    case 2: return chan_fn<CV, 2>();
    case 3: return chan_fn<CV, 3>();
    case 4: return chan_fn<CV, 4>();
    case 5: return chan_fn<CV, 5>();
    default: return chan_fn<CV, 6>();
  }
}
template <int CV, int P> AxpyFn axpy_fn() {
#if defined(__x86_64__)
  if (current_isa() == 2) return &axpy_avx512<CV, P>;
  if (current_isa() == 1) return &axpy_avx2<CV, P>;
#endif
  return &axpy_base<CV, P>;
}
// cv in 1..4 (AVX-512; 1..2 otherwise), p 4 or 1.
AxpyFn pick_axpy(int64_t cv, int64_t p) {
  switch (cv * 8 + p) {
    case 8 + 4: return axpy_fn<1, 4>();
    case 16 + 4: return axpy_fn<2, 4>();
    case 24 + 4: return axpy_fn<3, 4>();
    case 32 + 4: return axpy_fn<4, 4>();
    case 8 + 1: return axpy_fn<1, 1>();
    case 16 + 1: return axpy_fn<2, 1>();
    case 24 + 1: return axpy_fn<3, 1>();
    default: return axpy_fn<4, 1>();
  }
}
ChanFn pick_chan(int64_t cv, int64_t tb) {
  switch (cv) {
    case 1: return pick_chan_tb<1>(tb);
    case 2: return pick_chan_tb<2>(tb);
    case 3: return pick_chan_tb<3>(tb);
    default: return pick_chan_tb<4>(tb);
  }
}

}  // namespace

int64_t direct_gy_width(const ConvT2dShape& s) {
  begin_call();  // as a direct grad_weight would: the ISA read now
  return strip_wd(s);
}

// ---- forward -------------------------------------------------------------------------------------------
bool direct_forward_all_phases(const ConvT2dShape& s) {
  return s.cout_per_group() <= 4 && s.dW == 1 && s.sW >= 2 && s.sW <= 4;
}

void direct_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& y) {
  begin_call();
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  struct Phase {
    int64_t m_lo, m_hi, L;
    StripFn fn;
    std::vector<int64_t> soff, wtap;
  };
  std::vector<Phase> phases(s.sW);
  int64_t E = 0, read_end = s.W_in;
  for (int64_t rw = 0; rw < s.sW; ++rw)
    for (int64_t kw = 0; kw < s.kW; ++kw)
      if ((kw * s.dW - rw) % s.sW == 0) E = std::max(E, (kw * s.dW - rw) / s.sW);
  for (int64_t rw = 0; rw < s.sW; ++rw) {
    Phase& ph = phases[rw];
    for (int64_t kw = 0; kw < s.kW; ++kw)
      if ((kw * s.dW - rw) % s.sW == 0) {
        ph.soff.push_back(-(kw * s.dW - rw) / s.sW);
        ph.wtap.push_back(kw);
      }
    ph.m_lo = std::max<int64_t>(0, ceil_div(s.pW - rw, s.sW));
    ph.m_hi = floor_div(s.W_out - 1 + s.pW - rw, s.sW);
    const int v = pick_v_forward(cog, ph.m_hi - ph.m_lo + 1);
    ph.L = lanes() * v;
    ph.fn = pick_strip(cog, v);
    if (ph.m_hi >= ph.m_lo) read_end = std::max(read_end, ph.m_lo + round_up(ph.m_hi - ph.m_lo + 1, ph.L));
  }
  // Up to 4 output channels per group, strides 2-4, no column dilation: every column phase per strip
  // (all_phases_body), over the positions [M_lo, M_hi] of all phases together.
  int64_t M_lo = phases[0].m_lo, M_hi = phases[0].m_hi, NE = ceil_div(s.kW, s.sW);
  for (const Phase& ph : phases) M_lo = std::min(M_lo, ph.m_lo), M_hi = std::max(M_hi, ph.m_hi);
  const PhasesKernel pk = direct_forward_all_phases(s) && current_isa() >= 1
                              ? pick_phases(cog, s.sW, M_hi - M_lo + 1) : PhasesKernel{0, nullptr};
  const bool all_phases = pk.fn != nullptr;
  // Positions up to M_hi read inside their row (read_end > M_hi); the last strip's lanes past M_hi, which are
  // not stored, may read on into the next row, and after the last row into a tail (no wider rows: the copy
  // stays the size of the strip kernel's).
  const int64_t Wp = E + read_end;
  const float* wp = w.const_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  float* yp = y.mutable_data_ptr<float>();
  const bool nhwc = !y.is_contiguous();  // channels_last y (see launch_layout): stored in place

  // The padded copy is made a piece at a time, at most kPaddedChunk values (16 MB): whole images while one
  // fits (as many as fit), else ranges of output rows of one image with the input rows they read. (At 2M
  // values FSRCNN x4 and FSRCNN-s, just above it, ran in two pieces and were 5-30% slower than whole.) It
  // lives in the scratch buffer (scratch.cpp: reused across pieces and calls, so no page faults). A copy of the whole batch paid fresh page faults on every call (4 x 32 x 256 x 256, k4 s2,
  // 2 output channels: 19.9 ms for a 35 MB copy, 3.6 ms in chunks of one image; the tiled gemm forward:
  // 3.1 ms), and a copy of a whole large image was the forward's peak memory (FSRCNN x3 on 512 x 512: the
  // copy was 57 MB, above PyTorch's whole peak). Each task computes what it did before: the same bits.
  constexpr int64_t kPaddedChunk = int64_t(1) << 22;
  const int64_t per_image = s.C_in * s.H_in * Wp, tail = all_phases ? lanes() * pk.V : 0;
  struct Piece {
    int64_t n0, images, oh0, oh1, h0, h1;  // images [n0, n0 + images), output rows [oh0, oh1), input rows [h0, h1)
  };
  std::vector<Piece> pieces;
  if (per_image <= kPaddedChunk) {
    const int64_t chunk = std::max<int64_t>(1, kPaddedChunk / std::max<int64_t>(1, per_image));
    for (int64_t n0 = 0; n0 < s.N; n0 += chunk) pieces.push_back({n0, std::min(chunk, s.N - n0), 0, s.H_out, 0, s.H_in});
  } else {
    // Input rows of output row oh: [lo(oh), hi(oh)], both nondecreasing in oh.
    auto rows_of = [&](int64_t oh) {
      const TapRun th = taps_for_output(oh, s.H_in, s.kH, s.sH, s.pH, s.dH);
      if (th.count() == 0) return std::pair<int64_t, int64_t>{s.H_in, -1};
      return std::pair<int64_t, int64_t>{th.input(th.j_end - 1), th.input(th.j_begin)};
    };
    const int64_t max_rows = std::max<int64_t>(1, kPaddedChunk / std::max<int64_t>(1, s.C_in * Wp));
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t oh0 = 0; oh0 < s.H_out;) {
        int64_t lo = s.H_in, hi = -1, oh1 = oh0;
        while (oh1 < s.H_out) {  // at least one output row per piece
          const auto [l, h] = rows_of(oh1);
          const int64_t nlo = std::min(lo, l), nhi = std::max(hi, h);
          if (oh1 > oh0 && nhi >= nlo && nhi - nlo + 1 > max_rows) break;
          lo = nlo, hi = nhi, ++oh1;
        }
        if (hi < lo) lo = 0, hi = 0;  // rows reading no input: any one row
        pieces.push_back({n, 1, oh0, oh1, lo, hi + 1});
        oh0 = oh1;
      }
  }
  for (const Piece& pc : pieces) {
    const int64_t prows = pc.h1 - pc.h0, pout = pc.oh1 - pc.oh0;
    const auto xpad = padded_image_rows(s, x, pc.n0, pc.images, pc.h0, pc.h1, E, Wp, tail);
    const float* xp = xpad.const_data_ptr<float>();

    const int64_t tasks = pc.images * s.groups * pout;
    const int64_t work = cig * cog * kk / (s.sH * s.sW) * s.W_out + s.W_out;
    parallel_tasks(tasks, grain(work), [&](int64_t t0, int64_t t1) {
      std::vector<const float*> src(cig * s.kH), wr(cig * s.kH);
      for (int64_t task = t0; task < t1; ++task) {
        // channels_last y: the groups of one output row are consecutive tasks, so the row's lines (each
        // holding several groups' values) are written while in cache (depthwise 64 channels, 4 x 64 x 64:
        // group-major tasks took 32 ms, each line of y read for ownership once per group; row-major 3 ms).
        const int64_t oh = pc.oh0 + (nhwc ? task / s.groups % pout : task % pout);
        const int64_t g = nhwc ? task % s.groups : (task / pout) % s.groups, nl = task / (pout * s.groups);
        const int64_t n = pc.n0 + nl;
        const TapRun th = taps_for_output(oh, s.H_in, s.kH, s.sH, s.pH, s.dH);
        int64_t R = 0;
        for (int64_t cil = 0; cil < cig; ++cil) {
          const int64_t ci = g * cig + cil;
          for (int64_t j = th.j_begin; j < th.j_end; ++j, ++R) {
            src[R] = xp + ((nl * s.C_in + ci) * prows + th.input(j) - pc.h0) * Wp + E;
            wr[R] = wp + ci * cog * kk + th.tap(j) * s.kW;
          }
        }
        // NCHW y: channels H_out*W_out apart, a row's values 1 apart; channels_last: channels 1, values C_out.
        const int64_t ocb = nhwc ? 1 : s.H_out * s.W_out, ostep = nhwc ? s.C_out : 1;
        float* yrow = nhwc ? yp + ((n * s.H_out + oh) * s.W_out) * s.C_out + g * cog
                           : yp + ((n * s.C_out + g * cog) * s.H_out + oh) * s.W_out;
        if (all_phases) {
          AllPhases a{src.data(), wr.data(), R, s.kW, NE, kk, 0, bp ? bp + g * cog : nullptr, yrow, ocb, s.pW,
                      s.W_out, ostep};
          for (int64_t m0 = M_lo; m0 <= M_hi; m0 += lanes() * pk.V) {
            a.shift = m0;
            pk.fn(a);
          }
          continue;
        }
        for (const Phase& ph : phases) {
          const int64_t rw = &ph - phases.data();
          Strip a{src.data(), wr.data(), R, ph.soff.data(), ph.wtap.data(), static_cast<int64_t>(ph.soff.size()),
                  kk, 0, bp ? bp + g * cog : nullptr, nullptr, ocb, s.sW * ostep, 0};
          for (int64_t m0 = ph.m_lo; m0 <= ph.m_hi; m0 += ph.L) {
            a.shift = m0;
            a.out = yrow + (s.sW * m0 + rw - s.pW) * ostep;
            a.count = std::min(ph.L, ph.m_hi - m0 + 1);
            ph.fn(a);
          }
        }
      }
    });
  }
}

// ---- grad_input into channels_last gx --------------------------------------------------------------------
// Vectorised along the input channels (ChanAxpy): gx is written as it is, whole pixels at a time, instead of
// the strip kernel's NHWC-strided lanes. Tasks: rows (n, ih) of gx; each of their terms (output channel,
// kh, kw) reads the weights' channel vectors (prepacked: tap-major, channels zero-padded to whole vectors)
// and the deinterleaved gy row at the tap's offset. Every gx element is summed by one task in a fixed order.
namespace {
void nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, L = lanes();
  const int64_t vectors = (cig + L - 1) / L, px = vectors * L;
  const int64_t CVB = current_isa() == 2 ? 4 : 2;  // 4 pixels x 4 vectors = 16 accumulators of 32
  constexpr int64_t P = 4;
  const int64_t maxq = (s.kW - 1) * s.dW / s.sW, Wd = s.W_in + maxq;
  const auto gyd = deinterleave_columns(s, gy, Wd);
  // wp[g][co][tap][channel] (px channels, zeros past cig).
  auto wp = at::zeros({s.groups, cog, kk, px}, w.options());
  wp.narrow(3, 0, cig).copy_(w.reshape({s.groups, cig, cog, kk}).permute({0, 2, 3, 1}));
  const float* gp = gyd.const_data_ptr<float>();
  const float* wpp = wp.const_data_ptr<float>();
  float* gxp = gx.mutable_data_ptr<float>();
  const int64_t terms = cog * kk;
  parallel_tasks(s.N * s.H_in * s.groups, grain(s.W_in * terms * px), [&](int64_t t0, int64_t t1) {
    std::vector<const float*> wt(terms), gt(terms);
    std::vector<float> out(P * px);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task % s.groups, ih = (task / s.groups) % s.H_in, n = task / (s.groups * s.H_in);
      int64_t T = 0;  // the row's terms: (co, kh) rows of gy inside it, every kw
      for (int64_t co = 0; co < cog; ++co)
        for (int64_t kh = 0; kh < s.kH; ++kh) {
          const int64_t oh = ih * s.sH - s.pH + kh * s.dH;
          if (oh < 0 || oh >= s.H_out) continue;
          const float* row = gp + ((n * s.C_out + g * cog + co) * s.H_out + oh) * s.sW * Wd;
          for (int64_t kw = 0; kw < s.kW; ++kw, ++T) {
            const int64_t c = kw * s.dW;
            gt[T] = row + (c % s.sW) * Wd + c / s.sW;
            wt[T] = wpp + ((g * cog + co) * kk + kh * s.kW + kw) * px;
          }
        }
      float* gxrow = gxp + (n * s.H_in + ih) * s.W_in * s.C_in + g * cig;
      // The sums go straight to gx where the group's channels are whole vectors, else through `out`.
      const bool into_gx = px == cig;
      for (int64_t iw = 0, p; iw < s.W_in; iw += p) {
        p = s.W_in - iw >= P ? P : 1;  // P pixels at a time, the last few one by one
        for (int64_t v0 = 0; v0 < vectors; v0 += CVB) {
          const ChanAxpy a{wt.data(), gt.data(), T, v0 * L, iw,
                           into_gx ? gxrow + iw * s.C_in + v0 * L : out.data() + v0 * L, into_gx ? s.C_in : px};
          pick_axpy(std::min(CVB, vectors - v0), p)(a);
        }
        if (!into_gx)
          for (int64_t q = 0; q < p; ++q)
            std::memcpy(gxrow + (iw + q) * s.C_in, out.data() + q * px, cig * sizeof(float));
      }
    }
  });
}
}  // namespace

// ---- grad_input ------------------------------------------------------------------------------------------
void direct_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  begin_call();
  // channels_last gx with at least half a vector of input channels per group: vectorised along them.
  if (!gx.is_contiguous() && 2 * s.cin_per_group() >= lanes())
    return nhwc_grad_input(s, gy, w, gx);
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  // Channel blocks of CB input channels: 16 with AVX-512, each strip one vector wide (16 accumulators of the
  // 32 registers, each gy load feeding 16 FMAs; interleaved on the SR layers this beat 8 channels x 2 vectors
  // by 5-10%), else 4. A block's partial rest runs as sub-blocks of 8 and of at most 4.
  const int64_t CB = std::min<int64_t>(current_isa() == 2 ? 16 : 4, cig), nblk = (cig + CB - 1) / CB;
  auto vectors = [&](int64_t cb) { return cb >= 8 ? 1 : pick_v(cb, s.W_in); };
  const int64_t Wd = strip_wd(s);  // covers Lmax = lanes() * vectors(1)
  std::vector<int64_t> soff(s.kW), wtap(s.kW);
  for (int64_t kw = 0; kw < s.kW; ++kw) {
    soff[kw] = (kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW;
    wtap[kw] = kw * cig;
  }
  const auto gyd = deinterleave_columns(s, gy, Wd);
  const float* gp = gyd.const_data_ptr<float>();
  // w as (groups, cog, kH, kW, cig): a block's channels contiguous for each tap (the strip's wcb == 1).
  const auto wt = w.reshape({s.groups, cig, cog, s.kH, s.kW}).permute({0, 2, 3, 4, 1}).contiguous();
  const float* wp = wt.const_data_ptr<float>();
  float* gxp = gx.mutable_data_ptr<float>();
  const bool nhwc = !gx.is_contiguous();  // channels_last gx (see launch_layout): written in place
  const int64_t tasks = s.N * s.groups * nblk * s.H_in;
  const int64_t work = CB * cog * kk * s.W_in + s.W_in;
  parallel_tasks(tasks, grain(work), [&](int64_t t0, int64_t t1) {
    std::vector<const float*> src(cog * s.kH), wr(cog * s.kH);
    for (int64_t task = t0; task < t1; ++task) {
      // channels_last gx: the groups and channel blocks of one row are consecutive tasks (see direct_forward).
      const int64_t ih = nhwc ? task / (nblk * s.groups) % s.H_in : task % s.H_in;
      const int64_t blk = nhwc ? task % nblk : (task / s.H_in) % nblk;
      const int64_t g = nhwc ? task / nblk % s.groups : (task / (s.H_in * nblk)) % s.groups;
      const int64_t n = task / (s.H_in * nblk * s.groups);
      const Range kh = taps_for_input(ih, s.H_out, s.kH, s.sH, s.pH, s.dH);
      for (int64_t c0 = blk * CB; c0 < std::min(cig, (blk + 1) * CB);) {
        const int64_t rest = std::min(cig, (blk + 1) * CB) - c0;
        const int64_t cb = rest >= 16 ? 16 : rest >= 8 ? 8 : std::min<int64_t>(4, rest);  // kernels: 1-4, 8, 16
        const int64_t ci0 = g * cig + c0;
        const int vb = vectors(cb);
        const int64_t Lb = lanes() * vb;
        int64_t R = 0;
        for (int64_t col = 0; col < cog; ++col) {
          const int64_t co = g * cog + col;
          for (int64_t t = kh.begin; t < kh.end; ++t, ++R) {
            const int64_t oh = ih * s.sH - s.pH + t * s.dH;
            src[R] = gp + ((n * s.C_out + co) * s.H_out + oh) * s.sW * Wd;
            wr[R] = wp + (((g * cog + col) * s.kH + t) * s.kW) * cig + c0;
          }
        }
        const StripFn fn = pick_strip(cb, vb);
        // NCHW gx: channels H_in*W_in apart, lanes contiguous; channels_last: channels contiguous, lanes C_in apart.
        Strip a{src.data(), wr.data(), R, soff.data(), wtap.data(), s.kW, 1, 0, nullptr, nullptr,
                nhwc ? 1 : s.H_in * s.W_in, nhwc ? s.C_in : 1, 0};
        float* gxrow = nhwc ? gxp + ((n * s.H_in + ih) * s.W_in) * s.C_in + ci0
                            : gxp + ((n * s.C_in + ci0) * s.H_in + ih) * s.W_in;
        for (int64_t iw0 = 0; iw0 < s.W_in; iw0 += Lb) {
          a.shift = iw0;
          a.out = gxrow + iw0 * a.olane;
          a.count = std::min(Lb, s.W_in - iw0);
          fn(a);
        }
        c0 += cb;
      }
    }
  });
}

// ---- grad_weight of channels_last x ------------------------------------------------------------------------
// Vectorised along the input channels (ChanDot) instead of along iw: x is read as it is, one pixel's
// channels at a time, with no transposed copy. x is cut into blocks of about 256 KB of rows of one image,
// each copied once if needed (channels zero-padded to whole vectors) and then swept from L2 by every (output
// channel, kh, channel block, tap block). Tasks: (group, run of blocks), each summing its blocks into its
// own partial grad_weight; the partials are added in task order at the end. The blocks and the tasks depend
// on the shape only: the result does not depend on the thread count.
namespace {
void nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, L = lanes();
  const int64_t vectors = (cig + L - 1) / L, px = vectors * L;
  const int64_t CVB = current_isa() == 2 ? 4 : 2;  // channel vectors per block: 4 x 6 accumulators of 32
  const int64_t nb = (s.kW + 5) / 6, TB = (s.kW + nb - 1) / nb;  // tap blocks of (nearly) equal size, <= 6
  const int64_t maxq = (s.kW - 1) * s.dW / s.sW, Wd = s.W_in + maxq;
  std::vector<int64_t> soff(s.kW);
  for (int64_t kw = 0; kw < s.kW; ++kw) soff[kw] = (kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW;
  const auto gyd = deinterleave_columns(s, gy, Wd);
  // Blocks of RB rows of one image (~256 KB of x) are swept from L2; each task takes a run of blocks and
  // sums into one partial, at most 64 tasks in all (or one per group), which bounds the partials' memory.
  const int64_t RB = std::clamp<int64_t>(65536 / std::max<int64_t>(1, s.W_in * px), 1, s.H_in);
  const int64_t per_image = (s.H_in + RB - 1) / RB, blocks = s.N * per_image;
  const int64_t chunks = std::clamp<int64_t>(64 / s.groups, 1, std::max<int64_t>(1, blocks)), tasks = s.groups * chunks;
  const int64_t part_size = cog * kk * px;
  std::vector<float> partial(tasks * part_size);
  const float* gp = gyd.const_data_ptr<float>();
  const float* xp = x.const_data_ptr<float>();
  // Pixels whose channels are whole vectors already (one group, C_in a multiple of the lanes) are read in place.
  const bool in_place = s.groups == 1 && px == s.C_in;
  parallel_tasks(tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> xb(in_place ? 0 : RB * s.W_in * px, 0.f);
    std::vector<const float*> grow(RB);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / chunks, c = task % chunks;
      float* part = partial.data() + task * part_size;
      std::fill(part, part + part_size, 0.f);
      for (int64_t blk = c * blocks / chunks; blk < (c + 1) * blocks / chunks; ++blk) {
        const int64_t n = blk / per_image, i0 = (blk % per_image) * RB, R = std::min(RB, s.H_in - i0);
        const float* rows = xp + (n * s.H_in + i0) * s.W_in * s.C_in;
        if (!in_place) {
          for (int64_t p = 0; p < R * s.W_in; ++p)  // pixel p of the block; channels past cig stay zero
            std::memcpy(xb.data() + p * px, rows + p * s.C_in + g * cig, cig * sizeof(float));
          rows = xb.data();
        }
        for (int64_t col = 0; col < cog; ++col)
          for (int64_t kh = 0; kh < s.kH; ++kh) {
            for (int64_t r = 0; r < R; ++r) {
              const int64_t oh = (i0 + r) * s.sH - s.pH + kh * s.dH;
              grow[r] = oh < 0 || oh >= s.H_out ? nullptr : gp + ((n * s.C_out + g * cog + col) * s.H_out + oh) * s.sW * Wd;
            }
            for (int64_t v0 = 0; v0 < vectors; v0 += CVB)
              for (int64_t b = 0; b < nb; ++b) {
                const int64_t cv = std::min(CVB, vectors - v0), kw0 = b * TB, tb = std::min(TB, s.kW - kw0);
                const ChanDot a{rows + v0 * L, grow.data(), R, s.W_in, px, soff.data() + kw0,
                                part + ((col * s.kH + kh) * s.kW + kw0) * px + v0 * L};
                pick_chan(cv, tb)(a);
              }
          }
      }
    }
  });
  float* gwp = gw.mutable_data_ptr<float>();
  parallel_tasks(s.groups * cog * kk, grain(chunks * cig), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t g = e / (cog * kk), col = (e / kk) % cog, tap = e % kk;
      const float* first = partial.data() + g * chunks * part_size + (col * kk + tap) * px;
      for (int64_t ci = 0; ci < cig; ++ci) {
        float sum = 0.f;
        for (int64_t c = 0; c < chunks; ++c) sum += first[c * part_size + ci];
        gwp[((g * cig + ci) * cog + col) * kk + tap] = sum;
      }
    }
  });
}
}  // namespace

// ---- grad_weight -------------------------------------------------------------------------------------------
void direct_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  begin_call();
  // channels_last x with at least half a vector of input channels per group: vectorised along them.
  if (!x.is_contiguous() && 2 * s.cin_per_group() >= lanes()) return nhwc_grad_weight(s, gy, x, gw);
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t width = round_up(s.W_in, lanes()), Wd = strip_wd(s);  // Wd >= width + the taps' reach
  // Blocks of CI input channels share the gy loads: 4 x up to 6 taps = 24 accumulators with AVX-512's 32
  // registers, 2 x 4 with 16. A partial block runs one channel at a time.
  const int64_t CI = current_isa() == 2 ? 4 : 2, nblk = (cig + CI - 1) / CI;
  std::vector<int64_t> soff(s.kW);
  for (int64_t kw = 0; kw < s.kW; ++kw) soff[kw] = (kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW;
  const auto gyd = deinterleave_columns(s, gy, Wd);
  // The kernel reads whole vectors: rows are padded with zeros to `width`, unless they already are.
  // A channels_last x (see launch_layout) with few channels per group is read as it is: with one output
  // channel per group, each task gathers its channels' rows, a block at a time, into a small buffer; with
  // more (every channel block is then read by cog tasks), one transposed padded copy is made first.
  const bool nhwc = !x.is_contiguous() && cog == 1;
  const at::Tensor xpad = nhwc ? x
                          : !x.is_contiguous() ? padded_image_rows(s, x, 0, s.N, 0, s.H_in, 0, width)
                          : width == s.W_in ? x
                                            : padded_rows(x, s.N * s.C_in * s.H_in, s.W_in, 0, width);
  const float* gp = gyd.const_data_ptr<float>();
  const float* xp = xpad.const_data_ptr<float>();
  float* gwp = gw.mutable_data_ptr<float>();
  // Tasks (group, channel block, output channel): each task reads its x rows once (a few rows at a
  // time, kept in L1 while every (kh, tap block) uses them) instead of once per kh. Each weight element
  // is reduced by one task, in a fixed order (whatever the thread count).
  const int64_t tasks = s.groups * nblk * cog;
  // Tap blocks of (nearly) equal size, at most 6 with AVX-512 (4 x 6 + 6 registers; 9 taps: 5 + 4, which
  // measured 1.35-1.5x faster than 3 x 3 on the SR layers, interleaved), else 4.
  const int64_t tb_max = current_isa() == 2 ? 6 : 4;
  const int64_t nb = (s.kW + tb_max - 1) / tb_max, TB = (s.kW + nb - 1) / nb, L = lanes();
  const int64_t row_block = std::max<int64_t>(1, 4096 / (CI * width));
  parallel_tasks(tasks, grain(CI * s.N * s.H_in * width * s.kW * s.kH / s.sH + 1), [&](int64_t t0, int64_t t1) {
    std::vector<const float*> xr(row_block), gr(row_block);
    std::vector<float> acc(s.kH * nb * CI * TB * L);
    std::vector<float> xl(nhwc ? CI * row_block * width : 0);  // [channel][row][width], zeros past W_in
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t col = task % cog, blk = (task / cog) % nblk, g = task / (cog * nblk), co = g * cog + col;
      const int64_t c_begin = g * cig + blk * CI, c_end = g * cig + std::min(cig, (blk + 1) * CI);
      for (int64_t ci = c_begin; ci < c_end;) {
        const int64_t cb = c_end - ci >= CI ? CI : 1;  // kernels: CI or 1 channel
        // Accumulators of (kh, tap block b): acc[(kh * nb + b) * cb * TB vectors ...].
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t n = 0; n < s.N; ++n)
          for (int64_t i0 = 0; i0 < s.H_in; i0 += row_block) {
            if (nhwc) {
              const int64_t i1 = std::min(s.H_in, i0 + row_block);
              for (int64_t i = i0; i < i1; ++i) {
                const float* px = xp + ((n * s.H_in + i) * s.W_in) * s.C_in + ci;
                for (int64_t c = 0; c < cb; ++c) {
                  float* d = xl.data() + (c * row_block + i - i0) * width;
                  for (int64_t w = 0; w < s.W_in; ++w) d[w] = px[w * s.C_in + c];
                  std::fill(d + s.W_in, d + width, 0.f);
                }
              }
            }
            for (int64_t kh = 0; kh < s.kH; ++kh) {
              const Range ih = inputs_for_tap(kh, s.H_in, s.H_out, s.sH, s.pH, s.dH);
              const int64_t lo = std::max(i0, ih.begin), hi = std::min(i0 + row_block, ih.end);
              int64_t R = 0;
              for (int64_t i = lo; i < hi; ++i, ++R) {
                xr[R] = nhwc ? xl.data() + (i - i0) * width : xp + ((n * s.C_in + ci) * s.H_in + i) * width;
                gr[R] = gp + ((n * s.C_out + co) * s.H_out + i * s.sH - s.pH + kh * s.dH) * s.sW * Wd;
              }
              if (R == 0) continue;
              for (int64_t b = 0; b < nb; ++b) {
                const int64_t tb = std::min(TB, s.kW - b * TB);
                const DotRows a{xr.data(), gr.data(), R, width, (nhwc ? row_block : s.H_in) * width,
                                soff.data() + b * TB, acc.data() + (kh * nb + b) * cb * TB * L};
                pick_dot(cb, tb)(a);
              }
            }
          }
        for (int64_t kh = 0; kh < s.kH; ++kh)
          for (int64_t c = 0; c < cb; ++c)
            for (int64_t kw = 0; kw < s.kW; ++kw) {
              const int64_t b = kw / TB, tb = std::min(TB, s.kW - b * TB);
              float* lane = acc.data() + ((kh * nb + b) * cb * TB + c * tb + kw % TB) * L;
              for (int64_t w = L / 2; w >= 1; w /= 2)  // pairwise, fixed order
                for (int64_t l = 0; l < w; ++l) lane[l] += lane[l + w];
              gwp[(((ci + c) * cog + col) * s.kH + kh) * s.kW + kw] = lane[0];
            }
        ci += cb;
      }
    }
  });
}

}  // namespace cpu
}  // namespace deconv_ext
