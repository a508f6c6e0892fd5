// grad_weight and grad_bias CUDA kernels: deterministic reductions (no floating-point atomics).
//
// Both reduce in two passes with a fixed shape-determined split, so repeated runs are bitwise equal:
//   pass 1  each reducer (a warp for grad_weight, a block for grad_bias) sums a fixed contiguous
//           part of its element's reduction range; every lane walks its items in a fixed order and
//           the lanes are combined by a fixed shuffle tree. Partials go to a workspace [E, parts].
//   pass 2  one thread per element adds its `parts` partials in index order and rounds once.
// The split (parts > 1) only exists to fill the GPU when there are few elements with long
// reductions (e.g. FSRCNN's 56 -> 1 layer: 4536 weights, 65536 products each per image).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "common.cuh"
#include "launch.h"

namespace deconv_ext {
namespace cuda {
namespace {

constexpr int kWarps = kThreads / 32;

// Part `part` of `parts` of a range [0, total): [begin, end).
__device__ __forceinline__ void part_range(int64_t total, int64_t parts, int64_t part, int64_t& begin,
                                           int64_t& end) {
  const int64_t chunk = (total + parts - 1) / parts;
  begin = min64(total, part * chunk);
  end = min64(total, begin + chunk);
}

// ---- grad_weight: one warp per (weight element, part) ------------------------------------------------
// gw[ci, col, th, tw] = sum over n and the inputs (i, j) that tap (th, tw) sends inside the output
// (inputs_for_tap, shared with the CPU kernel) of x[n, ci, i, j] * gy[n, co, i*sH - pH + th*dH, j*sW - pW + tw*dW].
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(const ConvT2dShape s, const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                       at::opmath_type<scalar_t>* __restrict__ partial, int64_t elems, int64_t parts) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t C_in = s.C_in, H_in = s.H_in, W_in = s.W_in, C_out = s.C_out, H_out = s.H_out, W_out = s.W_out;
  const index_t sH = s.sH, sW = s.sW, dH = s.dH, dW = s.dW, pH = s.pH, pW = s.pW;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; task < elems * parts;
       task += warps) {
    const int64_t e = task / parts, part = task % parts;
    const int64_t tw = e % s.kW, th = (e / s.kW) % s.kH, col = (e / (s.kW * s.kH)) % cog;
    const int64_t ci = e / (s.kW * s.kH * cog), co = (ci / cig) * cog + col;
    const Range ih = inputs_for_tap(th, s.H_in, s.H_out, s.sH, s.pH, s.dH);
    const Range iw = inputs_for_tap(tw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
    const index_t nh = ih.count(), nw = iw.count(), xc = ci, yc = co;
    int64_t r0, r1;
    part_range(static_cast<int64_t>(s.N) * nh * nw, parts, part, r0, r1);
    acc_t acc(0);
    if (r0 + lane < r1) {
      // Position (n, i, j) of flat index r = (n * nh + i) * nw + j, advanced by 32 with carries
      // (one division up front instead of three per product).
      const index_t r = static_cast<index_t>(r0 + lane);
      index_t j = r % nw, i = (r / nw) % nh, n = r / nw / nh;
      const index_t dj = 32 % nw, di = (32 / nw) % nh, dn = 32 / nw / nh;
      const index_t oh0 = th * dH - pH, ow0 = tw * dW - pW;
      const index_t count = static_cast<index_t>((r1 - r0 - lane + 31) / 32);
      for (index_t step = 0; step < count; ++step) {
        const index_t ii = ih.begin + i, jj = iw.begin + j;
        const acc_t xv = static_cast<acc_t>(x[((n * C_in + xc) * H_in + ii) * W_in + jj]);
        const acc_t gv = static_cast<acc_t>(gy[((n * C_out + yc) * H_out + ii * sH + oh0) * W_out + jj * sW + ow0]);
        acc += xv * gv;
        j += dj;
        i += di;
        n += dn;
        if (j >= nw) {
          j -= nw;
          ++i;
        }
        if (i >= nh) {
          i -= nh;
          ++n;
        }
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) partial[task] = acc;
  }
}

// ---- grad_bias: one block per (channel, part) ---------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_bias_kernel(const scalar_t* __restrict__ gy, double* __restrict__ partial, int64_t N, int64_t C,
                     int64_t HW, int64_t parts) {
  __shared__ double smem[kWarps];
  const int64_t c = blockIdx.x / parts, part = blockIdx.x % parts;
  int64_t r0, r1;
  part_range(N * HW, parts, part, r0, r1);
  double acc = 0;  // long sums: double keeps float32 results exact to rounding (as the CPU kernel)
  if (r0 + threadIdx.x < r1) {
    const int64_t r = r0 + threadIdx.x;
    int64_t i = r % HW, n = r / HW;
    const int64_t di = kThreads % HW, dn = kThreads / HW;
    for (int64_t k = r; k < r1; k += kThreads) {
      acc += static_cast<double>(gy[(n * C + c) * HW + i]);
      i += di;
      n += dn;
      if (i >= HW) {
        i -= HW;
        ++n;
      }
    }
  }
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// ---- pass 2: out[e] = sum of partial[e, 0 .. parts-1], in index order ----------------------------------
template <typename acc_t, typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(const acc_t* __restrict__ partial, int64_t elems, int64_t parts, scalar_t* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < elems;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    acc_t acc = partial[e * parts];
    for (int64_t p = 1; p < parts; ++p) acc += partial[e * parts + p];
    out[e] = static_cast<scalar_t>(acc);
  }
}

// Parts per element: enough reducers to occupy the GPU (~4096 warps, or ~512 blocks), but never
// parts shorter than `min_len` items. A function of the shape only, hence deterministic.
int64_t choose_parts(int64_t elems, int64_t reducers_wanted, int64_t length, int64_t min_len) {
  const int64_t by_occupancy = (reducers_wanted + elems - 1) / elems;
  const int64_t by_length = std::max<int64_t>(1, length / min_len);
  return std::max<int64_t>(1, std::min<int64_t>({by_occupancy, by_length, 256}));
}

}  // namespace

void launch_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t elems = gw.numel();
  const int64_t parts = choose_parts(elems, 4096, s.N * s.H_in * s.W_in, 32 * 32);
  const bool small = fits_int32({gy.numel(), x.numel()});
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_grad_weight_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto partial = at::empty({elems * parts}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const unsigned int blocks = blocks_for(elems * parts, kWarps);
    if (small) {
      grad_weight_kernel<scalar_t, int32_t><<<blocks, kThreads, 0, stream>>>(
          s, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), elems,
          parts);
    } else {
      grad_weight_kernel<scalar_t, int64_t><<<blocks, kThreads, 0, stream>>>(
          s, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), elems,
          parts);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<acc_t, scalar_t><<<blocks_for(elems, kThreads), kThreads, 0, stream>>>(
        partial.const_data_ptr<acc_t>(), elems, parts, gw.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_grad_bias(const at::Tensor& gy, const at::Tensor& gb) {
  const int64_t N = gy.size(0), C = gy.size(1), HW = gy.size(2) * gy.size(3);
  const int64_t parts = choose_parts(C, 512, N * HW, kThreads * 16);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto partial = at::empty({C * parts}, gy.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_bias_cuda", [&] {
    grad_bias_kernel<scalar_t><<<static_cast<unsigned int>(C * parts), kThreads, 0, stream>>>(
        gy.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<double>(), N, C, HW, parts);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<double, scalar_t><<<blocks_for(C, kThreads), kThreads, 0, stream>>>(
        partial.const_data_ptr<double>(), C, parts, gb.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace deconv_ext
