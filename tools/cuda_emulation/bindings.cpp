// The CUDA entry points of csrc/cuda/conv_transpose2d.cu, minus the device guard, calling the
// emulated launchers on CPU tensors (see emulate.py).
#include <torch/extension.h>

#include "conv_transpose2d.h"
#include "launch.h"

using namespace deconv_ext;

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> output_padding,
                   int64_t groups, std::vector<int64_t> dilation) {
  const auto size = check_forward(input, weight, bias, stride, padding, output_padding, groups, dilation);
  const auto x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  auto y = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (y.numel() > 0) cuda::launch_forward(make_shape(x, y, w.size(2), w.size(3), stride, padding, groups, dilation), x, w, b, y);
  return y;
}

at::Tensor grad_input(const at::Tensor& grad_output, const at::Tensor& weight, std::vector<int64_t> stride,
                      std::vector<int64_t> padding, std::vector<int64_t> output_padding, int64_t groups,
                      std::vector<int64_t> dilation) {
  const auto size = check_grad_input(grad_output, weight, stride, padding, output_padding, groups, dilation);
  const auto gy = grad_output.contiguous(), w = weight.contiguous();
  auto gx = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  if (gx.numel() > 0) cuda::launch_grad_input(make_shape(gx, gy, w.size(2), w.size(3), stride, padding, groups, dilation), gy, w, gx);
  return gx;
}

at::Tensor grad_weight(const at::Tensor& grad_output, const at::Tensor& input, std::vector<int64_t> kernel_size,
                       std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> output_padding,
                       int64_t groups, std::vector<int64_t> dilation) {
  const auto size = check_grad_weight(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation);
  const auto gy = grad_output.contiguous(), x = input.contiguous();
  auto gw = at::empty(c10::asIntArrayRefUnchecked(size), x.options());
  if (gw.numel() == 0) return gw;
  if (x.numel() == 0 || gy.numel() == 0) return gw.zero_();
  cuda::launch_grad_weight(make_shape(x, gy, kernel_size[0], kernel_size[1], stride, padding, groups, dilation), gy, x, gw);
  return gw;
}

at::Tensor grad_bias(const at::Tensor& grad_output) {
  const auto size = check_grad_bias(grad_output);
  const auto gy = grad_output.contiguous();
  auto gb = at::empty(c10::asIntArrayRefUnchecked(size), gy.options());
  if (gb.numel() == 0) return gb;
  if (gy.numel() == 0) return gb.zero_();
  cuda::launch_grad_bias(gy, gb);
  return gb;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("grad_input", &grad_input);
  m.def("grad_weight", &grad_weight);
  m.def("grad_bias", &grad_bias);
}
