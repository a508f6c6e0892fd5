// Registers a backend's launchers (see Launchers in conv_transpose2d.h) as the kernels of the five ops
// for one dispatch key:  TORCH_LIBRARY_IMPL(deconv_ext, CPU, m) { register_backend<&kCpuLaunchers>(m); }
#pragma once

#include <torch/library.h>

#include "conv_transpose2d.h"

namespace deconv_ext {

template <const Launchers* L>
void register_backend(torch::Library& m) {
  m.impl("conv_transpose2d",
         [](const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
            at::IntArrayRef dilation) {
           return forward_entry(*L, input, weight, bias, stride, padding, output_padding, groups, dilation);
         });
  m.impl("conv_transpose2d_grad_input",
         [](const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
            at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
           return grad_input_entry(*L, grad_output, weight, stride, padding, output_padding, groups, dilation);
         });
  m.impl("conv_transpose2d_grad_weight",
         [](const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
            at::IntArrayRef dilation) {
           return grad_weight_entry(*L, grad_output, input, kernel_size, stride, padding, output_padding, groups,
                                    dilation);
         });
  m.impl("conv_transpose2d_grad_bias",
         [](const at::Tensor& grad_output) { return grad_bias_entry(*L, grad_output); });
  m.impl("conv_transpose2d_backward",
         [](const at::Tensor& grad_output, const std::optional<at::Tensor>& input,
            const std::optional<at::Tensor>& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
            std::array<bool, 3> output_mask) {
           return backward_entry(*L, grad_output, input, weight, kernel_size, stride, padding, output_padding, groups,
                                 dilation, output_mask);
         });
}

}  // namespace deconv_ext
