// grad_input CUDA kernel: gx = T*(gy, w), an ordinary strided convolution of grad_output.
//
// One thread per (n, block of CB input channels, ih, iw), iw fastest. Each thread sums over the
// group's output channels and the taps whose output position lies inside grad_output
// (taps_for_input, shared with the CPU kernel); each grad_output value read serves CB input
// channels held in registers. Every result element has one writer: no atomics, deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "common.cuh"
#include "launch.h"

namespace deconv_ext {
namespace cuda {
namespace {

template <typename scalar_t, typename index_t, int CB>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(const ConvT2dShape s, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ w,
                      scalar_t* __restrict__ gx) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t C_in = s.C_in, H_in = s.H_in, W_in = s.W_in, C_out = s.C_out, H_out = s.H_out, W_out = s.W_out;
  const index_t kHW = s.kH * s.kW, kW = s.kW;
  const index_t sH = s.sH, sW = s.sW, pH = s.pH, pW = s.pW, dH = s.dH, dW = s.dW;
  const index_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const index_t nb = (cig + CB - 1) / CB;  // channel blocks per group
  const index_t blocks = s.groups * nb;
  const index_t total = static_cast<index_t>(s.N) * blocks * H_in * W_in;
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const index_t iw = idx % W_in;
    index_t t = idx / W_in;
    const index_t ih = t % H_in;
    t /= H_in;
    const index_t cb = t % blocks, n = t / blocks;
    const index_t g = cb / nb, cil0 = (cb % nb) * CB;
    const Range kh = taps_for_input(ih, s.H_out, s.kH, s.sH, s.pH, s.dH);
    const Range kw = taps_for_input(iw, s.W_out, s.kW, s.sW, s.pW, s.dW);
    // Channels past the group's end (cig % CB != 0) compute a clamped duplicate and are not stored.
    index_t wrow[CB];
    acc_t acc[CB];
#pragma unroll
    for (int c = 0; c < CB; ++c) {
      const index_t cil = cil0 + c < cig ? cil0 + c : cig - 1;
      wrow[c] = (g * cig + cil) * cog * kHW;
      acc[c] = acc_t(0);
    }
    // Output position of tap (th, tw): (ih*sH - pH + th*dH, iw*sW - pW + tw*dW), inside by construction.
    const index_t oh0 = ih * sH - pH, ow0 = iw * sW - pW;
    for (index_t col = 0; col < cog; ++col) {
      const scalar_t* gyc = gy + (n * C_out + g * cog + col) * H_out * W_out;
      const index_t wcol = col * kHW;
      for (index_t th = kh.begin; th < kh.end; ++th) {
        const scalar_t* gyr = gyc + (oh0 + th * dH) * W_out;
        for (index_t tw = kw.begin; tw < kw.end; ++tw) {
          const acc_t gv = static_cast<acc_t>(gyr[ow0 + tw * dW]);
          const index_t wk = wcol + th * kW + tw;
#pragma unroll
          for (int c = 0; c < CB; ++c) acc[c] += gv * static_cast<acc_t>(w[wrow[c] + wk]);
        }
      }
    }
    scalar_t* gxp = gx + ((n * C_in + g * cig + cil0) * H_in + ih) * W_in + iw;
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (cil0 + c < cig) gxp[static_cast<index_t>(c) * H_in * W_in] = static_cast<scalar_t>(acc[c]);
  }
}

template <typename scalar_t, typename index_t, int CB>
void launch_typed(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group();
  const int64_t total = s.N * s.groups * ((cig + CB - 1) / CB) * s.H_in * s.W_in;
  grad_input_kernel<scalar_t, index_t, CB>
      <<<blocks_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          s, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const bool small = fits_int32({gy.numel(), w.numel(), gx.numel()});
  const bool blocked = s.cin_per_group() >= 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_input_cuda", [&] {
    if (small && blocked) launch_typed<scalar_t, int32_t, 4>(s, gy, w, gx);
    else if (small) launch_typed<scalar_t, int32_t, 1>(s, gy, w, gx);
    else if (blocked) launch_typed<scalar_t, int64_t, 4>(s, gy, w, gx);
    else launch_typed<scalar_t, int64_t, 1>(s, gy, w, gx);
  });
}

}  // namespace cuda
}  // namespace deconv_ext
