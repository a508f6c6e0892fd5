// CPU kernels of the four deconv_ext ops. float32/float64 take the fast paths of fast_paths.h (direct
// vectorised kernels for few output channels, BLAS GEMM otherwise); the straightforward direct loops
// below, threaded with at::parallel_for, serve the remaining cases (half, bfloat16, small-channel double).
//
// Every kernel reads and writes contiguous NCHW buffers; layouts are converted at the boundary,
// so channels_last and strided inputs cost one copy. Accumulation is in at::opmath_type (float for
// half/bfloat16). Each output element is reduced by exactly one thread in a fixed order, so results
// are deterministic and independent of the thread count. Extra buffers stay near the output size.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../conv_transpose2d.h"
#include "fast_paths.h"

namespace deconv_ext {
namespace {

// Work per parallel chunk: aim for ~32k multiply-adds so small problems stay on one thread.
int64_t grain(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// ---- forward: gather over the taps that reach each output pixel ----------------------------------
template <typename scalar_t>
void forward_kernel(const ConvT2dShape& s, const scalar_t* x, const scalar_t* w, const scalar_t* b, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  std::vector<TapRun> cols(s.W_out);
  for (int64_t ow = 0; ow < s.W_out; ++ow) cols[ow] = taps_for_output(ow, s.W_in, s.kW, s.sW, s.pW, s.dW);
  const int64_t rows = s.N * s.C_out * s.H_out;
  at::parallel_for(0, rows, grain(s.W_out * cig * s.kH * s.kW / (s.sH * s.sW) + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % s.H_out, co = (r / s.H_out) % s.C_out, n = r / (s.H_out * s.C_out);
      const int64_t g = co / cog, col = co % cog;
      const TapRun th = taps_for_output(oh, s.H_in, s.kH, s.sH, s.pH, s.dH);
      scalar_t* yrow = y + r * s.W_out;
      for (int64_t ow = 0; ow < s.W_out; ++ow) {
        const TapRun& tw = cols[ow];
        acc_t acc = b ? static_cast<acc_t>(b[co]) : acc_t(0);
        for (int64_t cil = 0; cil < cig; ++cil) {
          const int64_t ci = g * cig + cil;
          const scalar_t* xc = x + (n * s.C_in + ci) * s.H_in * s.W_in;
          const scalar_t* wc = w + (ci * cog + col) * s.kH * s.kW;
          for (int64_t jh = th.j_begin; jh < th.j_end; ++jh) {
            const scalar_t* xr = xc + th.input(jh) * s.W_in;
            const scalar_t* wr = wc + th.tap(jh) * s.kW;
            for (int64_t jw = tw.j_begin; jw < tw.j_end; ++jw)
              acc += static_cast<acc_t>(xr[tw.input(jw)]) * static_cast<acc_t>(wr[tw.tap(jw)]);
          }
        }
        yrow[ow] = static_cast<scalar_t>(acc);
      }
    }
  });
}

// ---- grad_input: direct strided convolution of grad_output with the weight ------------------------
template <typename scalar_t>
void grad_input_kernel(const ConvT2dShape& s, const scalar_t* gy, const scalar_t* w, scalar_t* gx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t rows = s.N * s.C_in * s.H_in;
  at::parallel_for(0, rows, grain(s.W_in * cog * s.kH * s.kW + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ih = r % s.H_in, ci = (r / s.H_in) % s.C_in, n = r / (s.H_in * s.C_in);
      const int64_t g = ci / cig;
      const Range kh = taps_for_input(ih, s.H_out, s.kH, s.sH, s.pH, s.dH);
      for (int64_t iw = 0; iw < s.W_in; ++iw) {
        const Range kw = taps_for_input(iw, s.W_out, s.kW, s.sW, s.pW, s.dW);
        acc_t acc(0);
        for (int64_t col = 0; col < cog; ++col) {
          const scalar_t* gyc = gy + (n * s.C_out + g * cog + col) * s.H_out * s.W_out;
          const scalar_t* wc = w + (ci * cog + col) * s.kH * s.kW;
          for (int64_t th = kh.begin; th < kh.end; ++th) {
            const scalar_t* gyr = gyc + (ih * s.sH - s.pH + th * s.dH) * s.W_out + iw * s.sW - s.pW;
            for (int64_t tw = kw.begin; tw < kw.end; ++tw)
              acc += static_cast<acc_t>(gyr[tw * s.dW]) * static_cast<acc_t>(wc[th * s.kW + tw]);
          }
        }
        gx[r * s.W_in + iw] = static_cast<scalar_t>(acc);
      }
    }
  });
}

// ---- grad_weight: per weight element, a reduction over batch and the input positions it touched ----
template <typename scalar_t>
void grad_weight_kernel(const ConvT2dShape& s, const scalar_t* gy, const scalar_t* x, scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t elems = s.C_in * cog * s.kH * s.kW;
  at::parallel_for(0, elems, grain(s.N * s.H_in * s.W_in + 1), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t tw = e % s.kW, th = (e / s.kW) % s.kH, col = (e / (s.kW * s.kH)) % cog;
      const int64_t ci = e / (s.kW * s.kH * cog), co = (ci / cig) * cog + col;
      const Range ih = inputs_for_tap(th, s.H_in, s.H_out, s.sH, s.pH, s.dH);
      const Range iw = inputs_for_tap(tw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
      acc_t acc(0);
      for (int64_t n = 0; n < s.N; ++n) {
        const scalar_t* xc = x + (n * s.C_in + ci) * s.H_in * s.W_in;
        const scalar_t* gyc = gy + (n * s.C_out + co) * s.H_out * s.W_out;
        for (int64_t i = ih.begin; i < ih.end; ++i) {
          const scalar_t* xr = xc + i * s.W_in;
          const scalar_t* gyr = gyc + (i * s.sH - s.pH + th * s.dH) * s.W_out + tw * s.dW - s.pW;
          for (int64_t j = iw.begin; j < iw.end; ++j)
            acc += static_cast<acc_t>(xr[j]) * static_cast<acc_t>(gyr[j * s.sW]);
        }
      }
      gw[e] = static_cast<scalar_t>(acc);
    }
  });
}

// ---- host entry points ------------------------------------------------------------------------------
at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                       int64_t groups, at::IntArrayRef dilation) {
  const auto size = check_forward(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const auto x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  auto y = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (y.numel() > 0) {
    const auto s = make_shape(x, y, w.size(2), w.size(3), stride, padding, groups, dilation);
    if (cpu::use_direct(s, x.scalar_type())) {
      cpu::direct_forward(s, x, w, b, y);
    } else if (cpu::use_gemm(s, x.scalar_type())) {
      cpu::gemm_forward(s, x, w, b, y);
    } else AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_cpu", [&] {
      forward_kernel<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                               has_bias ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
    });
  }
  return y.contiguous(result_memory_format(input, weight));
}

at::Tensor grad_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                          at::IntArrayRef dilation) {
  const auto size = check_grad_input(grad_output, weight, stride, padding, output_padding, groups, dilation);
  const auto gy = grad_output.contiguous(), w = weight.contiguous();
  auto gx = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  if (gx.numel() > 0) {
    const auto s = make_shape(gx, gy, w.size(2), w.size(3), stride, padding, groups, dilation);
    if (cpu::use_direct(s, gy.scalar_type())) {
      cpu::direct_grad_input(s, gy, w, gx);
    } else if (cpu::use_gemm(s, gy.scalar_type())) {
      cpu::gemm_grad_input(s, gy, w, gx);
    } else AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_input_cpu", [&] {
      grad_input_kernel<scalar_t>(s, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  gx.mutable_data_ptr<scalar_t>());
    });
  }
  return gx.contiguous(result_memory_format(grad_output, weight));
}

at::Tensor grad_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                           int64_t groups, at::IntArrayRef dilation) {
  const auto size =
      check_grad_weight(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation);
  const auto gy = grad_output.contiguous(), x = input.contiguous();
  auto gw = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (gw.numel() > 0) {
    const auto s = make_shape(x, gy, kernel_size[0], kernel_size[1], stride, padding, groups, dilation);
    if (cpu::use_direct(s, x.scalar_type())) {
      cpu::direct_grad_weight(s, gy, x, gw);
    } else if (cpu::use_gemm(s, x.scalar_type())) {
      cpu::gemm_grad_weight(s, gy, x, gw);
    } else AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_grad_weight_cpu", [&] {
      grad_weight_kernel<scalar_t>(s, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                   gw.mutable_data_ptr<scalar_t>());
    });
  }
  return gw;
}

at::Tensor grad_bias_cpu(const at::Tensor& grad_output) {
  const auto size = check_grad_bias(grad_output);
  const auto gy = grad_output.contiguous();
  auto gb = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  const int64_t N = gy.size(0), C = gy.size(1), HW = gy.size(2) * gy.size(3);
  // Each channel's N*HW values in fixed blocks of kBlock (one image row of blocks at a time), summed in
  // double with four interleaved partial sums; the block sums are added in order. The blocks are the
  // parallel tasks, so a single-channel gradient (FSRCNN) uses every thread, and the result does not
  // depend on the thread count.
  constexpr int64_t kBlock = 8192;
  const int64_t per_image = (HW + kBlock - 1) / kBlock, per_channel = N * per_image;
  std::vector<double> partial(C * per_channel);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_bias_cpu", [&] {
    const scalar_t* src = gy.const_data_ptr<scalar_t>();
    at::parallel_for(0, C * per_channel, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c = t / per_channel, n = (t % per_channel) / per_image, b = t % per_image;
        const scalar_t* p = src + (n * C + c) * HW + b * kBlock;
        const int64_t len = std::min(kBlock, HW - b * kBlock);
        double acc[4] = {0, 0, 0, 0};  // long sums: double keeps float32 results exact to rounding
        int64_t i = 0;
        for (; i + 4 <= len; i += 4)
          for (int k = 0; k < 4; ++k) acc[k] += static_cast<double>(p[i + k]);
        for (; i < len; ++i) acc[0] += static_cast<double>(p[i]);
        partial[t] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      }
    });
    scalar_t* dst = gb.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0;
      for (int64_t k = 0; k < per_channel; ++k) sum += partial[c * per_channel + k];
      dst[c] = static_cast<scalar_t>(sum);
    }
  });
  return gb;
}

}  // namespace

TORCH_LIBRARY_IMPL(deconv_ext, CPU, m) {
  m.impl("conv_transpose2d", &forward_cpu);
  m.impl("conv_transpose2d_grad_input", &grad_input_cpu);
  m.impl("conv_transpose2d_grad_weight", &grad_weight_cpu);
  m.impl("conv_transpose2d_grad_bias", &grad_bias_cpu);
}

}  // namespace deconv_ext
