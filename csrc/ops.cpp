// The deconv_ext operator library: schemas (defined once), meta kernels and autocast.
//
// Four ops, each with its own kernels per backend:
//   conv_transpose2d              y  = T(x, w) + b
//   conv_transpose2d_grad_input   gx = T*(gy, w)   (adjoint in x: an ordinary strided convolution)
//   conv_transpose2d_grad_weight  gw = W(x, gy)    (adjoint in w: a reduction over batch and space)
//   conv_transpose2d_grad_bias    gb = sum of gy over N, H, W
// and conv_transpose2d_backward, the three gradients an output mask asks for in one call (as
// aten::convolution_backward), so that a backend can share work between them (Launchers::backward_scope).
// The three are bilinear/linear, so each one's derivative is again one of them; deconv_ext/_ops.py
// wires that up, which gives double (and higher) backward with no extra kernels.
#include <Python.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "conv_transpose2d.h"

#define DECONV_PARAMS "int[2] stride, int[2] padding, int[2] output_padding, int groups, int[2] dilation"

namespace deconv_ext {
namespace {

at::Tensor empty_result(c10::SymIntArrayRef sizes, const at::Tensor& like, c10::MemoryFormat format) {
  return at::empty_symint(sizes, like.options().memory_format(format));
}

at::Tensor forward_meta(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                        int64_t groups, at::IntArrayRef dilation) {
  const auto size = check_forward(input, weight, bias, stride, padding, output_padding, groups, dilation);
  return empty_result(size, input, result_memory_format(input, weight));
}

at::Tensor grad_input_meta(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                           at::IntArrayRef dilation) {
  const auto size = check_grad_input(grad_output, weight, stride, padding, output_padding, groups, dilation);
  return empty_result(size, grad_output, result_memory_format(grad_output, weight));
}

at::Tensor grad_weight_meta(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  const auto size =
      check_grad_weight(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation);
  return empty_result(size, input, c10::MemoryFormat::Contiguous);
}

at::Tensor grad_bias_meta(const at::Tensor& grad_output) {
  return empty_result(check_grad_bias(grad_output), grad_output, c10::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& grad_output, const std::optional<at::Tensor>& input, const std::optional<at::Tensor>& weight,
    at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
    int64_t groups, at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  check_backward(input, weight, kernel_size, output_mask);
  at::Tensor gx, gw, gb;
  if (output_mask[0]) gx = grad_input_meta(grad_output, *weight, stride, padding, output_padding, groups, dilation);
  if (output_mask[1])
    gw = grad_weight_meta(grad_output, *input, kernel_size, stride, padding, output_padding, groups, dilation);
  if (output_mask[2]) gb = grad_bias_meta(grad_output);
  return {gx, gw, gb};
}

// Autocast: like F.conv_transpose2d, run in the autocast dtype of the device (fp16/bf16).
template <c10::DeviceType device>
at::Tensor forward_autocast(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("deconv_ext::conv_transpose2d", "")
                       .typed<decltype(forward_meta)>();
  const auto dtype = at::autocast::get_autocast_dtype(device);
  std::optional<at::Tensor> cast_bias;
  if (bias.has_value() && bias->defined()) cast_bias = at::autocast::cached_cast(dtype, *bias, device);
  return op.call(at::autocast::cached_cast(dtype, input, device), at::autocast::cached_cast(dtype, weight, device),
                 cast_bias, stride, padding, output_padding, groups, dilation);
}

}  // namespace

TORCH_LIBRARY(deconv_ext, m) {
  m.def("conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, " DECONV_PARAMS ") -> Tensor");
  m.def("conv_transpose2d_grad_input(Tensor grad_output, Tensor weight, " DECONV_PARAMS ") -> Tensor");
  m.def("conv_transpose2d_grad_weight(Tensor grad_output, Tensor input, int[2] kernel_size, " DECONV_PARAMS
        ") -> Tensor");
  m.def("conv_transpose2d_grad_bias(Tensor grad_output) -> Tensor");
  m.def("conv_transpose2d_backward(Tensor grad_output, Tensor? input, Tensor? weight, int[2] kernel_size, "
        DECONV_PARAMS ", bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(deconv_ext, Meta, m) {
  m.impl("conv_transpose2d", &forward_meta);
  m.impl("conv_transpose2d_grad_input", &grad_input_meta);
  m.impl("conv_transpose2d_grad_weight", &grad_weight_meta);
  m.impl("conv_transpose2d_grad_bias", &grad_bias_meta);
  m.impl("conv_transpose2d_backward", &backward_meta);
}

TORCH_LIBRARY_IMPL(deconv_ext, AutocastCPU, m) {
  m.impl("conv_transpose2d", &forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(deconv_ext, AutocastCUDA, m) {
  m.impl("conv_transpose2d", &forward_autocast<c10::DeviceType::CUDA>);
}

}  // namespace deconv_ext

// `import deconv_ext._C` loads this library for its static registrations above; the module itself is
// empty (no pybind11), which keeps the extension on Python's stable ABI.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
