// grad_input on tensor cores: a strided convolution of grad_output with the weight, as one implicit
// GEMM per group:
//     C[m = (n, ih, iw)][ci] = sum over k = (co, kh, kw) of gy[n, co, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW]
//                                                         * w[ci, co, kh, kw]
// M = N * H_in * W_in, N = C_in/groups, K = C_out/groups * kH * kW. A is gathered m-fastest (neighbouring
// iw read grad_output sW columns apart); the weights are packed per group as [K][N] (k = (co, kh, kw) is
// already w's inner order) and copied by cp.async. Every (m, ci) is written exactly once: no atomics.
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

// kNHWC: gy and gx channels_last. Then k runs (kh, kw, co), channels fastest, A is gathered k-fastest and
// the packed weight follows that order.
template <typename T, typename index_t, bool kNHWC>
struct GradInputProblem {
  using scalar_t = T;
  static constexpr bool kPackedB = true, kAlongM = !kNHWC, kBAlongN = true;
  ConvT2dShape s;
  const T* gy;
  const T* wp;  // packed weights: [groups][Kp][Np]
  T* gx;
  int64_t Kp, Np;
  int64_t M, N, k_begin, k_end;
  index_t g, kHW;
  const T* gyg;
  const T* wz;

  __device__ bool begin(int64_t z) {
    g = static_cast<index_t>(z);
    kHW = static_cast<index_t>(s.kH * s.kW);
    M = s.N * s.H_in * s.W_in;
    N = s.cin_per_group();
    k_begin = 0;
    k_end = s.cout_per_group() * s.kH * s.kW;
    gyg = gy + (kNHWC ? static_cast<index_t>(g * s.cout_per_group())
                      : static_cast<index_t>(g * s.cout_per_group()) * s.H_out * s.W_out);
    wz = wp + z * Kp * Np;
    return true;
  }
  struct Row {
    const T* gyn;
    index_t oh0, ow0;
  };
  __device__ Row row_a(int64_t m) const {
    const index_t mi = static_cast<index_t>(m), iw = mi % s.W_in, t = mi / s.W_in;
    const index_t ih = t % s.H_in, img = t / s.H_in;
    return Row{gyg + img * static_cast<index_t>(s.C_out * s.H_out * s.W_out),
               static_cast<index_t>(ih * s.sH - s.pH), static_cast<index_t>(iw * s.sW - s.pW)};
  }
  struct Col {
    index_t co, dh, dw;
  };
  __device__ Col col_a(int64_t k) const {
    const index_t ki = static_cast<index_t>(k), cog = static_cast<index_t>(s.cout_per_group());
    const index_t co = kNHWC ? ki % cog : ki / kHW, tap = kNHWC ? ki / cog : ki % kHW;
    return Col{co, static_cast<index_t>((tap / s.kW) * s.dH), static_cast<index_t>((tap % s.kW) * s.dW)};
  }
  __device__ T load_a(const Row& r, const Col& c) const {
    const index_t oh = r.oh0 + c.dh, ow = r.ow0 + c.dw;
    if (oh < 0 || oh >= s.H_out || ow < 0 || ow >= s.W_out) return T(0);
    if constexpr (kNHWC) return r.gyn[(oh * static_cast<index_t>(s.W_out) + ow) * static_cast<index_t>(s.C_out) + c.co];
    return r.gyn[(c.co * static_cast<index_t>(s.H_out) + oh) * static_cast<index_t>(s.W_out) + ow];
  }
  __device__ const T* b_packed(int64_t k, int64_t n) const { return wz + k * Np + n; }
  __device__ void store(int64_t m, int64_t n, float v) const {
    const index_t mi = static_cast<index_t>(m), hw = static_cast<index_t>(s.H_in * s.W_in);
    const index_t img = mi / hw, pix = mi % hw, ci = g * static_cast<index_t>(N) + static_cast<index_t>(n);
    gx[kNHWC ? mi * static_cast<index_t>(s.C_in) + ci : (img * static_cast<index_t>(s.C_in) + ci) * hw + pix] =
        static_cast<T>(v);
  }
};

template <typename P>
__global__ void __launch_bounds__(igemm::kThreads, 1) grad_input_gemm_kernel(P p) {
  if (!p.begin(blockIdx.z) || static_cast<int64_t>(blockIdx.x) * igemm::kBM >= p.M) return;
  igemm::mainloop(p);
}

// wp[g][k = (co, kh, kw), or (kh, kw, co) for NHWC][ci] = w[g*cig + ci][co][kh][kw], zero in the padding;
// float rounded to TF32 once.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_input_pack_weight_kernel(const ConvT2dShape s, const T* __restrict__ w, T* __restrict__ wp, int64_t Kp,
                                  int64_t Np, int64_t total, bool nhwc) {
  const int64_t K = s.cout_per_group() * s.kH * s.kW, cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t kHW = s.kH * s.kW;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ci = i % Np, k = (i / Np) % Kp, g = i / (Np * Kp);
    const int64_t src = nhwc ? (k % cog) * kHW + k / cog : k;  // w's inner index (co, kh, kw)
    float v = ci < cig && k < K ? static_cast<float>(w[(g * cig + ci) * K + src]) : 0.f;
    if constexpr (std::is_same_v<T, float>) v = __uint_as_float(mma::to_tf32(v));
    wp[i] = static_cast<T>(v);
  }
}

template <typename T, typename index_t, bool kNHWC>
void launch_typed(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t Kp = std::max<int64_t>(igemm::round_up(s.cout_per_group() * s.kH * s.kW, 32), 32);
  const int64_t Np = igemm::round_up(s.cin_per_group(), igemm::kBN);
  at::Tensor wp = at::empty({s.groups * Kp * Np}, w.options());
  const int64_t total = wp.numel();
  grad_input_pack_weight_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
      s, w.const_data_ptr<T>(), wp.mutable_data_ptr<T>(), Kp, Np, total, kNHWC);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  using P = GradInputProblem<T, index_t, kNHWC>;
  P p{};
  p.s = s;
  p.gy = gy.const_data_ptr<T>();
  p.wp = wp.const_data_ptr<T>();
  p.gx = gx.mutable_data_ptr<T>();
  p.Kp = Kp;
  p.Np = Np;
  const igemm::Grid gr = igemm::grid_for(s.N * s.H_in * s.W_in, s.cin_per_group(), s.groups);
  const dim3 grid(gr.x, gr.y, gr.z);
  grad_input_gemm_kernel<P><<<grid, igemm::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_grad_input_gemm(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const bool small = fits_int32({gy.numel(), w.numel(), gx.numel() + igemm::kBM});
  igemm::dispatch(gy.scalar_type(), "grad_input", small, images_nhwc(gy, gx), [&](auto t, auto i, auto cl) {
    launch_typed<decltype(t), decltype(i), decltype(cl)::value>(s, gy, w, gx);
  });
}

}  // namespace cuda
}  // namespace deconv_ext
