// Forward for few output channels (super-resolution last layers: C_out <= 4, groups 1, square stride 2-4,
// dilation 1, kernel <= 11, float32/float16/bfloat16 with float accumulation), the
// sub-pixel rewrite: in low-resolution space the layer is a stride-1 convolution with S*S*C_out outputs
// per pixel, one per output phase and channel, followed by a pixel shuffle.
//
// One thread per low-resolution position q = (qh, qw) computes the S*S*C_out outputs
// y[n, co, rh + S*qh, rw + S*qw]. A block of 8 x 32 positions stages, per chunk of 8 input channels, the
// input tile with its halo (the union of every phase's taps, phase_taps) and the chunk's weights in
// shared memory as float, so each input value read from global memory serves every phase and tap that
// reaches it, and the weights are read from shared memory. The accumulators (at most 4*4*4) stay in
// registers: phases and channels are unrolled (S is a template parameter). Fixed summation order (input
// channels, then taps), no atomics: bitwise reproducible. The store fuses the pixel shuffle.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "common.cuh"
#include "launch.h"

namespace deconv_ext {
namespace cuda {
namespace {

constexpr int kTileQH = 8, kTileQW = 32, kChunk = 8, kMaxCout = 4, kMaxWindow = 9, kMaxKernel = 11;
constexpr int kTileH = kTileQH + kMaxWindow - 1, kTileW = kTileQW + kMaxWindow - 1;

// Per axis: the taps of each phase (k = k0 + j*S, j < count, reading input q + off - j) and the window
// [lo, hi] of input offsets (relative to q) that some phase reads.
struct Axis {
  int k0[4], count[4], off[4];
  int lo, hi;
};

Axis make_axis(int64_t s, int64_t k, int64_t p) {
  Axis a{};
  a.lo = 1 << 30;
  a.hi = -(1 << 30);
  for (int r = 0; r < s; ++r) {
    const PhaseTaps t = phase_taps(r, k, s, p, 1);
    a.k0[r] = static_cast<int>(t.k0);
    a.count[r] = static_cast<int>(t.count);
    a.off[r] = static_cast<int>(t.off);
    if (t.count > 0) {
      a.lo = std::min<int>(a.lo, static_cast<int>(t.off - (t.count - 1)));
      a.hi = std::max<int>(a.hi, static_cast<int>(t.off));
    }
  }
  if (a.hi < a.lo) a.lo = a.hi = 0;  // no phase has a tap: the output is the bias
  return a;
}

template <typename scalar_t, int S>
__global__ void __launch_bounds__(kThreads)
    forward_subpixel_kernel(const ConvT2dShape s, const Axis ah, const Axis aw, const scalar_t* __restrict__ x,
                            const scalar_t* __restrict__ w, const scalar_t* __restrict__ b,
                            scalar_t* __restrict__ y) {
  __shared__ float xs[kChunk][kTileH][kTileW];
  __shared__ float ws[kChunk * kMaxCout * kMaxKernel * kMaxKernel];
  const int tx = threadIdx.x % kTileQW, ty = threadIdx.x / kTileQW;
  const int64_t n = blockIdx.z;
  const int64_t qh = static_cast<int64_t>(blockIdx.y) * kTileQH + ty, qw = static_cast<int64_t>(blockIdx.x) * kTileQW + tx;
  const int cog = static_cast<int>(s.C_out), kk = static_cast<int>(s.kH * s.kW), kW = static_cast<int>(s.kW);
  const int th = kTileQH + ah.hi - ah.lo, tw = kTileQW + aw.hi - aw.lo;  // the tile with its halo
  const int64_t ih0 = static_cast<int64_t>(blockIdx.y) * kTileQH + ah.lo, iw0 = static_cast<int64_t>(blockIdx.x) * kTileQW + aw.lo;

  float acc[S][S][kMaxCout];
#pragma unroll
  for (int rh = 0; rh < S; ++rh)
#pragma unroll
    for (int rw = 0; rw < S; ++rw)
#pragma unroll
      for (int co = 0; co < kMaxCout; ++co) acc[rh][rw][co] = co < cog && b ? static_cast<float>(b[co]) : 0.f;

  for (int64_t c0 = 0; c0 < s.C_in; c0 += kChunk) {
    const int chunk = static_cast<int>(std::min<int64_t>(kChunk, s.C_in - c0));
    for (int i = threadIdx.x; i < chunk * th * tw; i += kThreads) {
      const int c = i / (th * tw), r = (i / tw) % th, col = i % tw;
      const int64_t ih = ih0 + r, iw = iw0 + col;
      xs[c][r][col] = ih >= 0 && ih < s.H_in && iw >= 0 && iw < s.W_in
                          ? static_cast<float>(x[((n * s.C_in + c0 + c) * s.H_in + ih) * s.W_in + iw])
                          : 0.f;
    }
    for (int i = threadIdx.x; i < chunk * cog * kk; i += kThreads) ws[i] = static_cast<float>(w[c0 * cog * kk + i]);
    __syncthreads();
    for (int c = 0; c < chunk; ++c) {
#pragma unroll
      for (int rh = 0; rh < S; ++rh)
#pragma unroll
        for (int rw = 0; rw < S; ++rw)
          for (int jh = 0; jh < ah.count[rh]; ++jh) {
            const float* xrow = &xs[c][ty + ah.off[rh] - jh - ah.lo][tx + aw.off[rw] - aw.lo];
            const float* wrow = &ws[(c * cog) * kk + (ah.k0[rh] + jh * S) * kW + aw.k0[rw]];
            for (int jw = 0; jw < aw.count[rw]; ++jw) {
              const float xv = xrow[-jw];
#pragma unroll
              for (int co = 0; co < kMaxCout; ++co)
                if (co < cog) acc[rh][rw][co] += xv * wrow[co * kk + jw * S];
            }
          }
    }
    __syncthreads();
  }

#pragma unroll
  for (int rh = 0; rh < S; ++rh)
#pragma unroll
    for (int rw = 0; rw < S; ++rw) {
      const int64_t oh = rh + S * qh, ow = rw + S * qw;
      if (oh < s.H_out && ow < s.W_out) {
#pragma unroll
        for (int co = 0; co < kMaxCout; ++co)
          if (co < cog) y[((n * s.C_out + co) * s.H_out + oh) * s.W_out + ow] = static_cast<scalar_t>(acc[rh][rw][co]);
      }
    }
}

template <typename scalar_t, int S>
void launch_typed(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& y) {
  const Axis ah = make_axis(s.sH, s.kH, s.pH), aw = make_axis(s.sW, s.kW, s.pW);
  const dim3 grid(static_cast<unsigned int>((s.W_out + S * kTileQW - 1) / (S * kTileQW)),
                  static_cast<unsigned int>((s.H_out + S * kTileQH - 1) / (S * kTileQH)), static_cast<unsigned int>(s.N));
  forward_subpixel_kernel<scalar_t, S><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      s, ah, aw, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
      b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

bool subpixel_forward_serves(const ConvT2dShape& s, at::ScalarType t) {
  if (t == at::kDouble || s.groups != 1 || s.C_out > kMaxCout || s.sH != s.sW || s.sH < 2 || s.sH > 4 || s.dH != 1 || s.dW != 1 ||
      s.kH > kMaxKernel || s.kW > kMaxKernel || s.N > 65535 || (s.H_out + s.sH * kTileQH - 1) / (s.sH * kTileQH) > 65535)
    return false;
  const Axis ah = make_axis(s.sH, s.kH, s.pH), aw = make_axis(s.sW, s.kW, s.pW);
  return ah.hi - ah.lo + 1 <= kMaxWindow && aw.hi - aw.lo + 1 <= kMaxWindow;
}

void launch_forward_subpixel(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                             const at::Tensor& y) {
  TORCH_CHECK(subpixel_forward_serves(s, x.scalar_type()), "the sub-pixel forward does not serve this call");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_forward_subpixel", [&] {
    if constexpr (!std::is_same_v<scalar_t, double>) {
    if (s.sH == 2) launch_typed<scalar_t, 2>(s, x, w, b, y);
    else if (s.sH == 3) launch_typed<scalar_t, 3>(s, x, w, b, y);
    else launch_typed<scalar_t, 4>(s, x, w, b, y);
    }
  });
}

}  // namespace cuda
}  // namespace deconv_ext
