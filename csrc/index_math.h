// Index arithmetic of 2-D transposed convolution, shared by the CPU and CUDA kernels.
//
// Along one spatial axis, input index i and kernel tap k feed output index
//     o = i * s - p + k * d                      (s stride, p padding, d dilation)
// Everything below solves this relation for one unknown, so that kernels loop only over
// (i, k) pairs that exist: no work on the zeros a naive "upsample then convolve" inserts,
// no bounds test inside the inner loops. Plain integer code, no ATen: the CPU build
// compiles it with g++, the CUDA build with nvcc, and the CPU tests exercise it.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DECONV_HD __host__ __device__ __forceinline__
#else
#define DECONV_HD inline
#endif

namespace deconv_ext {

// Floor and ceil division for a possibly negative numerator and a positive divisor.
DECONV_HD int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
DECONV_HD int64_t ceil_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a > 0) ? q + 1 : q;
}
DECONV_HD int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}
DECONV_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
DECONV_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Output length of a transposed convolution along one axis (the single source of this formula;
// T is int64_t in kernels and c10::SymInt in the shape checks that meta kernels trace).
template <typename T>
DECONV_HD T transposed_out_size(T in, T k, int64_t s, int64_t p, int64_t op, int64_t d) {
  return (in - 1) * s - 2 * p + (k - 1) * d + op + 1;
}

// The taps of one output phase r (the outputs o = r + s*q, q = 0, 1, ...), independent of q: the
// residue class of taps_for_output, k = k0 + j*step for j < count, reading input i = q + off - j*q_step
// (0 <= i < in must still be checked). count == 0 when no tap reaches the phase (stride > kernel, or
// gcd(s, d) not dividing r + p). The tensor-core forward computes one GEMM per phase from this.
struct PhaseTaps {
  int64_t k0, step, count, off, q_step;
};

DECONV_HD PhaseTaps phase_taps(int64_t r, int64_t k, int64_t s, int64_t p, int64_t d) {
  PhaseTaps t;
  const int64_t g = gcd64(s, d);
  t.step = s / g;
  t.q_step = d / g;
  t.k0 = 0;
  t.count = 0;
  t.off = 0;
  for (int64_t c = 0; c < t.step && c < k; ++c) {
    if ((r + p - c * d) % s == 0) {
      t.k0 = c;
      t.count = (k - 1 - c) / t.step + 1;
      t.off = (r + p - c * d) / s;  // exact
      break;
    }
  }
  return t;
}

// The taps that reach output index o (gather form of the forward pass).
//
// o + p - k*d must be a non-negative multiple of s below in*s. The taps solving the congruence
// k*d = o + p (mod s) form one residue class modulo step = s / gcd(s, d) (the "phase" of o);
// along it the input index falls by q = d / gcd(s, d) per tap. So the valid pairs are
//     k = k0 + j*step,  i = i0 - j*q,  j = j_begin .. j_end-1
// and a kernel walks them with no test. count() == 0 when no tap reaches o.
struct TapRun {
  int64_t k0, step, i0, q, j_begin, j_end;
  DECONV_HD int64_t count() const { return j_end > j_begin ? j_end - j_begin : 0; }
  DECONV_HD int64_t tap(int64_t j) const { return k0 + j * step; }
  DECONV_HD int64_t input(int64_t j) const { return i0 - j * q; }
};

DECONV_HD TapRun taps_for_output(int64_t o, int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  // The taps of o's residue class (phase_taps at r = o: only (o + p) mod s matters), cut to the inputs.
  const PhaseTaps t = phase_taps(o, k, s, p, d);
  TapRun r;
  r.step = t.step;
  r.q = t.q_step;
  r.k0 = 0;
  r.i0 = 0;
  r.j_begin = 0;
  r.j_end = 0;
  if (t.count == 0) return r;
  r.k0 = t.k0;
  r.i0 = t.off;
  // 0 <= i0 - j*q < in  and  j < count
  r.j_begin = max64(0, floor_div(r.i0 - in, r.q) + 1);
  r.j_end = min64(floor_div(r.i0, r.q), t.count - 1) + 1;
  return r;
}

// Taps k in [k_begin, k_end) for which input index i writes inside [0, out) (scatter form; the
// direct convolution computing grad_input reads grad_output at exactly these positions).
struct Range {
  int64_t begin, end;
  DECONV_HD int64_t count() const { return end > begin ? end - begin : 0; }
};

DECONV_HD Range taps_for_input(int64_t i, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
  // 0 <= i*s - p + t*d <= out - 1
  Range r;
  r.begin = max64(0, ceil_div(p - i * s, d));
  r.end = min64(k, floor_div(out - 1 + p - i * s, d) + 1);
  return r;
}

// Input indices i in [begin, end) that tap k sends inside [0, out) (grad_weight reduction bounds).
DECONV_HD Range inputs_for_tap(int64_t t, int64_t in, int64_t out, int64_t s, int64_t p, int64_t d) {
  // 0 <= i*s - p + t*d <= out - 1
  Range r;
  r.begin = max64(0, ceil_div(p - t * d, s));
  r.end = min64(in, floor_div(out - 1 + p - t * d, s) + 1);
  return r;
}

// Plain, ATen-free description of one call: what kernels (host or device) need.
struct ConvT2dShape {
  int64_t N, C_in, H_in, W_in;
  int64_t C_out, H_out, W_out;
  int64_t kH, kW, sH, sW, pH, pW, dH, dW, groups;
  DECONV_HD int64_t cin_per_group() const { return C_in / groups; }
  DECONV_HD int64_t cout_per_group() const { return C_out / groups; }
};

}  // namespace deconv_ext
