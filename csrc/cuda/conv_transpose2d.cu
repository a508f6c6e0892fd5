// CUDA entry points of the four deconv_ext ops and their registration for the CUDA dispatch key.
//
// Mirrors csrc/cpu/conv_transpose2d.cpp: the shared checks (which also reject arguments on different
// devices), contiguous NCHW buffers for the kernels, the result converted to the layout PyTorch
// would choose. Each entry point guards the input's device and launches on its current stream.
// Kernels: forward.cu, grad_input.cu, grad_weight.cu (grad_weight and grad_bias).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../conv_transpose2d.h"
#include "launch.h"

namespace deconv_ext {
namespace {

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                        int64_t groups, at::IntArrayRef dilation) {
  const auto size = check_forward(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  auto y = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (y.numel() > 0) {
    const auto s = make_shape(x, y, w.size(2), w.size(3), stride, padding, groups, dilation);
    cuda::launch_forward(s, x, w, b, y);
  }
  return y.contiguous(result_memory_format(input, weight));
}

at::Tensor grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                           at::IntArrayRef dilation) {
  const auto size = check_grad_input(grad_output, weight, stride, padding, output_padding, groups, dilation);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const auto gy = grad_output.contiguous(), w = weight.contiguous();
  auto gx = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  if (gx.numel() > 0) {
    const auto s = make_shape(gx, gy, w.size(2), w.size(3), stride, padding, groups, dilation);
    cuda::launch_grad_input(s, gy, w, gx);
  }
  return gx.contiguous(result_memory_format(grad_output, weight));
}

at::Tensor grad_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  const auto size =
      check_grad_weight(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto gy = grad_output.contiguous(), x = input.contiguous();
  auto gw = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (gw.numel() == 0) return gw;
  if (x.numel() == 0 || gy.numel() == 0) return gw.zero_();  // empty batch: an empty sum
  const auto s = make_shape(x, gy, kernel_size[0], kernel_size[1], stride, padding, groups, dilation);
  cuda::launch_grad_weight(s, gy, x, gw);
  return gw;
}

at::Tensor grad_bias_cuda(const at::Tensor& grad_output) {
  const auto size = check_grad_bias(grad_output);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const auto gy = grad_output.contiguous();
  auto gb = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  if (gb.numel() == 0) return gb;
  if (gy.numel() == 0) return gb.zero_();  // empty batch: an empty sum
  cuda::launch_grad_bias(gy, gb);
  return gb;
}

}  // namespace

TORCH_LIBRARY_IMPL(deconv_ext, CUDA, m) {
  m.impl("conv_transpose2d", &forward_cuda);
  m.impl("conv_transpose2d_grad_input", &grad_input_cuda);
  m.impl("conv_transpose2d_grad_weight", &grad_weight_cuda);
  m.impl("conv_transpose2d_grad_bias", &grad_bias_cuda);
}

}  // namespace deconv_ext
