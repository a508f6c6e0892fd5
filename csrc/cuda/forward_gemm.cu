// Forward on tensor cores: one implicit GEMM per output stride phase, all phases of a call in one launch.
//
// The outputs o = r + s*q of phase r (per axis) receive only the taps congruent to r (phase_taps,
// index_math.h): about ceil(k/s) per axis instead of k. So for phase (rh, rw) and group g,
//     C[m = (n, qh, qw)][co] = sum over k = (ci, jh, jw) of x[n, ci, qh + offh - jh*qsh, qw + offw - jw*qsw]
//                                                    * w[ci, co, kh0 + jh*steph, kw0 + jw*stepw]
// a GEMM with M = N * (pixels of the phase), N = C_out/groups, K = C_in/groups * taps of the phase, and
// no multiplication by the zeros a "dilate, then convolve" formulation would insert. Neighbouring q are
// neighbouring input columns, so A is gathered m-fastest. The weights are packed per (phase, group) into
// [K][N] tiles (zero-padded to whole tiles; the only workspace, about the size of the weight) and
// copied by cp.async. The epilogue adds the bias and scatters each row back to its phase's pixels.
// Phases no tap reaches (stride > kernel) have K = 0 and receive the bias alone.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "../conv_transpose2d.h"
#include "igemm.cuh"
#include "launch.h"

namespace deconv_ext {
namespace cuda {
namespace {

// kNHWC: x and y channels_last (NHWC). Then k runs (jh, jw, ci), channels fastest, and A is gathered
// k-fastest (neighbouring channels are neighbouring addresses); the store writes channels contiguously.
template <typename T, typename index_t, bool kNHWC>
struct ForwardProblem {
  using scalar_t = T;
  static constexpr bool kPackedB = true, kAlongM = !kNHWC, kBAlongN = true;
  ConvT2dShape s;
  const T* x;
  const T* wp;  // packed weights: [phases * groups][Kp][Np]
  const T* b;
  T* y;
  int64_t Kp, Np;
  // set by begin()
  int64_t M, N, k_begin, k_end;
  index_t rh, rw, Qh, Qw, Th, Tw, offh, offw, qsh, qsw, g;
  const T* xg;
  const T* wz;

  __device__ bool begin(int64_t z) {
    g = z % s.groups;
    const int64_t phase = z / s.groups;
    rh = phase / s.sW;
    rw = phase % s.sW;
    if (rh >= s.H_out || rw >= s.W_out) return false;
    const PhaseTaps th = phase_taps(rh, s.kH, s.sH, s.pH, s.dH), tw = phase_taps(rw, s.kW, s.sW, s.pW, s.dW);
    Qh = (s.H_out - 1 - rh) / s.sH + 1;
    Qw = (s.W_out - 1 - rw) / s.sW + 1;
    Th = th.count;
    Tw = tw.count;
    offh = th.off;
    offw = tw.off;
    qsh = th.q_step;
    qsw = tw.q_step;
    M = s.N * Qh * Qw;
    N = s.cout_per_group();
    k_begin = 0;
    k_end = s.cin_per_group() * Th * Tw;
    xg = x + (kNHWC ? static_cast<index_t>(g * s.cin_per_group())
                    : static_cast<index_t>(g * s.cin_per_group()) * s.H_in * s.W_in);
    wz = wp + z * Kp * Np;
    return true;
  }
  struct Row {
    const T* xn;
    index_t qh, qw;
  };
  __device__ Row row_a(int64_t m) const {
    const index_t mi = static_cast<index_t>(m), qw = mi % Qw, t = mi / Qw;
    return Row{xg + (t / Qh) * static_cast<index_t>(s.C_in * s.H_in * s.W_in), t % Qh, qw};
  }
  struct Col {
    index_t ci, jh, jw;
  };
  __device__ Col col_a(int64_t k) const {
    const index_t ki = static_cast<index_t>(k);
    if constexpr (kNHWC) {
      const index_t cig = static_cast<index_t>(s.cin_per_group()), t = ki / cig;
      return Col{ki % cig, t / Tw, t % Tw};
    } else {
      const index_t taps = Th * Tw, r = ki % taps;
      return Col{ki / taps, r / Tw, r % Tw};
    }
  }
  __device__ T load_a(const Row& r, const Col& c) const {
    const index_t ih = r.qh + offh - c.jh * qsh, iw = r.qw + offw - c.jw * qsw;
    if (ih < 0 || ih >= s.H_in || iw < 0 || iw >= s.W_in) return T(0);
    if constexpr (kNHWC) return r.xn[(ih * static_cast<index_t>(s.W_in) + iw) * static_cast<index_t>(s.C_in) + c.ci];
    return r.xn[(c.ci * static_cast<index_t>(s.H_in) + ih) * static_cast<index_t>(s.W_in) + iw];
  }
  __device__ const T* b_packed(int64_t k, int64_t n) const { return wz + k * Np + n; }
  __device__ void store(int64_t m, int64_t n, float v) const {
    const index_t mi = static_cast<index_t>(m), qw = mi % Qw, t = mi / Qw, qh = t % Qh, img = t / Qh;
    const index_t co = g * static_cast<index_t>(N) + static_cast<index_t>(n);
    if (b) v += static_cast<float>(b[co]);
    const index_t oh = rh + qh * static_cast<index_t>(s.sH), ow = rw + qw * static_cast<index_t>(s.sW);
    const index_t H = static_cast<index_t>(s.H_out), W = static_cast<index_t>(s.W_out), C = static_cast<index_t>(s.C_out);
    y[kNHWC ? ((img * H + oh) * W + ow) * C + co : ((img * C + co) * H + oh) * W + ow] = static_cast<T>(v);
  }
};

template <typename P>
__global__ void __launch_bounds__(igemm::kThreads, 1) forward_gemm_kernel(P p) {
  if (!p.begin(blockIdx.z) || static_cast<int64_t>(blockIdx.x) * igemm::kBM >= p.M) return;
  igemm::mainloop(p);
}

// wp[phase, g][k = (ci, jh, jw), or (jh, jw, ci) for NHWC][co] = w[g*cig + ci, co, tap of (phase, jh, jw)],
// zero in the padding; float is rounded to TF32 here once instead of in every tile.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_pack_weight_kernel(const ConvT2dShape s, const T* __restrict__ w, T* __restrict__ wp, int64_t Kp,
                               int64_t Np, int64_t total, bool nhwc) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t co = i % Np, k = (i / Np) % Kp, z = i / (Np * Kp);
    const int64_t g = z % s.groups, phase = z / s.groups;
    const PhaseTaps th = phase_taps(phase / s.sW, s.kH, s.sH, s.pH, s.dH);
    const PhaseTaps tw = phase_taps(phase % s.sW, s.kW, s.sW, s.pW, s.dW);
    const int64_t taps = th.count * tw.count, cog = s.cout_per_group();
    float v = 0.f;
    if (co < cog && k < s.cin_per_group() * taps) {
      const int64_t cig = s.cin_per_group(), ci = nhwc ? k % cig : k / taps;
      const int64_t t = nhwc ? k / cig : k % taps, jh = t / tw.count, jw = t % tw.count;
      const int64_t kh = th.k0 + jh * th.step, kw = tw.k0 + jw * tw.step;
      v = static_cast<float>(w[((g * s.cin_per_group() + ci) * cog + co) * s.kH * s.kW + kh * s.kW + kw]);
    }
    if constexpr (std::is_same_v<T, float>) v = __uint_as_float(mma::to_tf32(v));
    wp[i] = static_cast<T>(v);
  }
}

// Rows of each (phase, group) block of the packed weights: the most taps of any phase, in whole K tiles.
int64_t packed_k(const ConvT2dShape& s) {
  int64_t taps = 0;  // the most taps any phase has
  for (int64_t rh = 0; rh < s.sH; ++rh)
    for (int64_t rw = 0; rw < s.sW; ++rw)
      taps = std::max(taps, phase_taps(rh, s.kH, s.sH, s.pH, s.dH).count * phase_taps(rw, s.kW, s.sW, s.pW, s.dW).count);
  return std::max<int64_t>(igemm::round_up(s.cin_per_group() * taps, 32), 32);
}

template <typename T, typename index_t, bool kNHWC>
void launch_typed(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& y) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t phases = s.sH * s.sW, problems = phases * s.groups;
  const int64_t Kp = packed_k(s), Np = igemm::round_up(s.cout_per_group(), igemm::kBN);
  at::Tensor wp = at::empty({problems * Kp * Np}, w.options());
  const int64_t total = wp.numel();
  forward_pack_weight_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
      s, w.const_data_ptr<T>(), wp.mutable_data_ptr<T>(), Kp, Np, total, kNHWC);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  using P = ForwardProblem<T, index_t, kNHWC>;
  P p{};
  p.s = s;
  p.x = x.const_data_ptr<T>();
  p.wp = wp.const_data_ptr<T>();
  p.b = b.defined() ? b.const_data_ptr<T>() : nullptr;
  p.y = y.mutable_data_ptr<T>();
  p.Kp = Kp;
  p.Np = Np;
  const int64_t max_q = ((s.H_out + s.sH - 1) / s.sH) * ((s.W_out + s.sW - 1) / s.sW);
  const igemm::Grid gr = igemm::grid_for(s.N * max_q, s.cout_per_group(), problems);
  const dim3 grid(gr.x, gr.y, gr.z);
  forward_gemm_kernel<P><<<grid, igemm::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_forward_gemm(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& y) {
  const int64_t max_q = ((s.H_out + s.sH - 1) / s.sH) * ((s.W_out + s.sW - 1) / s.sW);
  const bool small = fits_int32({x.numel(), w.numel(), y.numel(), s.N * max_q + igemm::kBM});
  igemm::dispatch(x.scalar_type(), "forward", small, images_nhwc(x, y), [&](auto t, auto i, auto cl) {
    launch_typed<decltype(t), decltype(i), decltype(cl)::value>(s, x, w, b, y);
  });
}

}  // namespace cuda
}  // namespace deconv_ext
