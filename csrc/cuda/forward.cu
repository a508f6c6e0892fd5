// Forward CUDA kernel: y = T(x, w) + b as a gather.
//
// One thread per (n, block of CB output channels, oh, ow), ow fastest so a warp reads neighbouring
// input columns. Each thread walks only the taps congruent to (oh, ow) modulo the stride
// (taps_for_output, the same arithmetic the CPU kernel uses): no atomics, no work on the zeros a
// "dilate then convolve" formulation would insert. Each input value read is reused for CB output
// channels held in registers; the weights it meets are few per warp (one per phase) and stay in
// L1, so shared memory would not pay here.
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
    forward_kernel(const ConvT2dShape s, const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                   const scalar_t* __restrict__ b, scalar_t* __restrict__ y) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t C_in = s.C_in, H_in = s.H_in, W_in = s.W_in, C_out = s.C_out, H_out = s.H_out, W_out = s.W_out;
  const index_t kHW = s.kH * s.kW, kW = s.kW;
  const index_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const index_t nb = (cog + CB - 1) / CB;  // channel blocks per group
  const index_t blocks = s.groups * nb;
  const index_t total = static_cast<index_t>(s.N) * blocks * H_out * W_out;
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const index_t ow = idx % W_out;
    index_t t = idx / W_out;
    const index_t oh = t % H_out;
    t /= H_out;
    const index_t cb = t % blocks, n = t / blocks;
    const index_t g = cb / nb, col0 = (cb % nb) * CB;
    const TapRun th = taps_for_output(oh, s.H_in, s.kH, s.sH, s.pH, s.dH);
    const TapRun tw = taps_for_output(ow, s.W_in, s.kW, s.sW, s.pW, s.dW);
    // Channels past the group's end (cog % CB != 0) compute a clamped duplicate and are not stored.
    index_t wcol[CB];
    acc_t acc[CB];
#pragma unroll
    for (int c = 0; c < CB; ++c) {
      const index_t col = col0 + c < cog ? col0 + c : cog - 1;
      wcol[c] = col * kHW;
      acc[c] = b ? static_cast<acc_t>(b[g * cog + col]) : acc_t(0);
    }
    for (index_t cil = 0; cil < cig; ++cil) {
      const index_t ci = g * cig + cil;
      const scalar_t* xc = x + (n * C_in + ci) * H_in * W_in;
      const scalar_t* wc = w + ci * cog * kHW;
      for (int64_t jh = th.j_begin; jh < th.j_end; ++jh) {
        const scalar_t* xr = xc + static_cast<index_t>(th.input(jh)) * W_in;
        const index_t wr = static_cast<index_t>(th.tap(jh)) * kW;
        for (int64_t jw = tw.j_begin; jw < tw.j_end; ++jw) {
          const acc_t xv = static_cast<acc_t>(xr[static_cast<index_t>(tw.input(jw))]);
          const index_t wk = wr + static_cast<index_t>(tw.tap(jw));
#pragma unroll
          for (int c = 0; c < CB; ++c) acc[c] += xv * static_cast<acc_t>(wc[wcol[c] + wk]);
        }
      }
    }
    scalar_t* yp = y + ((n * C_out + g * cog + col0) * H_out + oh) * W_out + ow;
#pragma unroll
    for (int c = 0; c < CB; ++c)
      if (col0 + c < cog) yp[static_cast<index_t>(c) * H_out * W_out] = static_cast<scalar_t>(acc[c]);
  }
}

template <typename scalar_t, typename index_t, int CB>
void launch_typed(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& y) {
  const int64_t cog = s.cout_per_group();
  const int64_t total = s.N * s.groups * ((cog + CB - 1) / CB) * s.H_out * s.W_out;
  forward_kernel<scalar_t, index_t, CB>
      <<<blocks_for(total, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
          b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void launch_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& y) {
  const bool small = fits_int32({x.numel(), w.numel(), y.numel()});
  const bool blocked = s.cout_per_group() >= 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_cuda", [&] {
    if (small && blocked) launch_typed<scalar_t, int32_t, 4>(s, x, w, b, y);
    else if (small) launch_typed<scalar_t, int32_t, 1>(s, x, w, b, y);
    else if (blocked) launch_typed<scalar_t, int64_t, 4>(s, x, w, b, y);
    else launch_typed<scalar_t, int64_t, 1>(s, x, w, b, y);
  });
}

}  // namespace cuda
}  // namespace deconv_ext
