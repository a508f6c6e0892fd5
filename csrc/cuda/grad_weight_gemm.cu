// grad_weight on tensor cores: for each tap (kh, kw) and group, a GEMM reducing over every input pixel,
//     C[ci][co] = sum over k = (n, ih, iw) of x[n, ci, ih, iw] * gy[n, co, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW]
// M = C_in/groups, N = C_out/groups, K = N * H_in * W_in (outputs outside the image read as zero). Both
// operands are gathered k-fastest (neighbouring pixels). K is long and M x N small, so K is split into
// `splits` parts, each block writing float32 partial sums to its own slice of a workspace of
// splits x weight.numel() floats; a second kernel adds the slices in a fixed order. No floating-point
// atomics: results are bitwise reproducible, and the split count depends only on the shape.
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

// kNHWC: x and gy channels_last; then channels are the contiguous dimension of both operands, and they
// are gathered m- and n-fastest.
template <typename T, typename index_t, bool kNHWC>
struct GradWeightProblem {
  using scalar_t = T;
  static constexpr bool kPackedB = false, kAlongM = kNHWC, kBAlongN = kNHWC;
  ConvT2dShape s;
  const T* x;
  const T* gy;
  float* part;  // [splits][C_in][C_out/groups][kH][kW]
  int64_t splits, k_per_split;
  int64_t M, N, k_begin, k_end;
  index_t g, tap, dh0, dw0, hw_in, hw_out;
  const T* xg;
  const T* gyg;
  float* pz;

  __device__ bool begin(int64_t z) {
    g = static_cast<index_t>(z % s.groups);
    const int64_t kHW = s.kH * s.kW;
    tap = static_cast<index_t>((z / s.groups) % kHW);
    const int64_t split = z / (s.groups * kHW);
    dh0 = static_cast<index_t>((tap / s.kW) * s.dH - s.pH);
    dw0 = static_cast<index_t>((tap % s.kW) * s.dW - s.pW);
    hw_in = static_cast<index_t>(s.H_in * s.W_in);
    hw_out = static_cast<index_t>(s.H_out * s.W_out);
    M = s.cin_per_group();
    N = s.cout_per_group();
    const int64_t K = s.N * s.H_in * s.W_in;
    k_begin = std::min(K, split * k_per_split);
    k_end = std::min(K, k_begin + k_per_split);
    xg = x + (kNHWC ? static_cast<index_t>(g * M) : static_cast<index_t>(g * M) * hw_in);
    gyg = gy + (kNHWC ? static_cast<index_t>(g * N) : static_cast<index_t>(g * N) * hw_out);
    pz = part + split * s.C_in * N * kHW;
    return true;
  }
  struct ColX {
    index_t off;
  };
  struct ColGy {
    index_t off;
    bool valid;
  };
  __device__ const T* row_a(int64_t m) const { return xg + static_cast<index_t>(m) * (kNHWC ? 1 : hw_in); }
  __device__ ColX col_a(int64_t k) const {
    const index_t ki = static_cast<index_t>(k);
    if constexpr (kNHWC) return ColX{ki * static_cast<index_t>(s.C_in)};
    return ColX{(ki / hw_in) * static_cast<index_t>(s.C_in) * hw_in + ki % hw_in};
  }
  __device__ T load_a(const T* row, const ColX& c) const { return row[c.off]; }
  __device__ const T* row_b(int64_t n) const { return gyg + static_cast<index_t>(n) * (kNHWC ? 1 : hw_out); }
  __device__ ColGy col_b(int64_t k) const {
    const index_t ki = static_cast<index_t>(k), iw = ki % static_cast<index_t>(s.W_in), t = ki / static_cast<index_t>(s.W_in);
    const index_t ih = t % static_cast<index_t>(s.H_in), img = t / static_cast<index_t>(s.H_in);
    const index_t oh = ih * static_cast<index_t>(s.sH) + dh0, ow = iw * static_cast<index_t>(s.sW) + dw0;
    const bool valid = oh >= 0 && oh < s.H_out && ow >= 0 && ow < s.W_out;
    if constexpr (kNHWC)
      return ColGy{((img * static_cast<index_t>(s.H_out) + oh) * static_cast<index_t>(s.W_out) + ow) *
                       static_cast<index_t>(s.C_out),
                   valid};
    return ColGy{img * static_cast<index_t>(s.C_out) * hw_out + oh * static_cast<index_t>(s.W_out) + ow, valid};
  }
  __device__ T load_b(const T* row, const ColGy& c) const { return c.valid ? row[c.off] : T(0); }
  __device__ void store(int64_t m, int64_t n, float v) const {
    pz[((g * M + m) * N + n) * (s.kH * s.kW) + tap] = v;
  }
};

template <typename P>
__global__ void __launch_bounds__(igemm::kThreads, 1) grad_weight_gemm_kernel(P p) {
  if (!p.begin(blockIdx.z) || static_cast<int64_t>(blockIdx.x) * igemm::kBM >= p.M) return;
  igemm::mainloop(p);
}

// gw[e] = sum of part[s][e] over s = 0 .. splits-1, in that order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_weight_sum_splits_kernel(const float* __restrict__ part, T* __restrict__ gw, int64_t numel, int64_t splits) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    float v = 0.f;
    for (int64_t sp = 0; sp < splits; ++sp) v += part[sp * numel + i];
    gw[i] = static_cast<T>(v);
  }
}

template <typename T, typename index_t, bool kNHWC>
void launch_typed(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t splits = grad_weight_gemm_splits(s);
  const int64_t K = s.N * s.H_in * s.W_in;
  at::Tensor part = at::empty({splits * gw.numel()}, gw.options().dtype(at::kFloat));

  using P = GradWeightProblem<T, index_t, kNHWC>;
  P p{};
  p.s = s;
  p.x = x.const_data_ptr<T>();
  p.gy = gy.const_data_ptr<T>();
  p.part = part.mutable_data_ptr<float>();
  p.splits = splits;
  p.k_per_split = igemm::round_up((K + splits - 1) / splits, 32);
  const igemm::Grid gr = igemm::grid_for(s.cin_per_group(), s.cout_per_group(), splits * s.kH * s.kW * s.groups);
  const dim3 grid(gr.x, gr.y, gr.z);
  grad_weight_gemm_kernel<P><<<grid, igemm::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  grad_weight_sum_splits_kernel<T><<<blocks_for(gw.numel(), kThreads), kThreads, 0, stream>>>(
      part.const_data_ptr<float>(), gw.mutable_data_ptr<T>(), gw.numel(), splits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

int64_t grad_weight_gemm_splits(const ConvT2dShape& s) {
  // Enough blocks to fill a large GPU (~512) when the tiles alone are few, each split at least 4 K
  // tiles long, and the grid's z within CUDA's limit. A function of the shape only (determinism).
  const int64_t tiles = ((s.cin_per_group() + 63) / 64) * ((s.cout_per_group() + 63) / 64) * s.kH * s.kW * s.groups;
  const int64_t ktiles = (s.N * s.H_in * s.W_in + 31) / 32;
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>((512 + tiles - 1) / tiles, ktiles / 4));
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, 65535 / (s.kH * s.kW * s.groups)));
  return splits;
}

void launch_grad_weight_gemm(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const bool small = fits_int32({gy.numel(), x.numel(), grad_weight_gemm_splits(s) * gw.numel()});
  igemm::dispatch(x.scalar_type(), "grad_weight", small, images_nhwc(gy, x), [&](auto t, auto i, auto cl) {
    launch_typed<decltype(t), decltype(i), decltype(cl)::value>(s, gy, x, gw);
  });
}

}  // namespace cuda
}  // namespace deconv_ext
