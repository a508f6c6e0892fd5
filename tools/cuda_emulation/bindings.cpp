// The CUDA backend's launchers, compiled for the CPU by emulate.py, behind the same entry layer the
// extension uses (csrc/conv_transpose2d.h): only the launchers differ from the real CUDA build.
#include <torch/extension.h>

#include "conv_transpose2d.h"
#include "launch.h"

using namespace deconv_ext;

namespace {
const Launchers kEmulated{&cuda::launch_forward, &cuda::launch_grad_input, &cuda::launch_grad_weight,
                          &cuda::launch_grad_bias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", [](const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> output_padding,
                      int64_t groups, std::vector<int64_t> dilation) {
    return forward_entry(kEmulated, input, weight, bias, stride, padding, output_padding, groups, dilation);
  });
  m.def("grad_input", [](const at::Tensor& grad_output, const at::Tensor& weight, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, std::vector<int64_t> output_padding, int64_t groups,
                         std::vector<int64_t> dilation) {
    return grad_input_entry(kEmulated, grad_output, weight, stride, padding, output_padding, groups, dilation);
  });
  m.def("grad_weight", [](const at::Tensor& grad_output, const at::Tensor& input, std::vector<int64_t> kernel_size,
                          std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> output_padding, int64_t groups, std::vector<int64_t> dilation) {
    return grad_weight_entry(kEmulated, grad_output, input, kernel_size, stride, padding, output_padding, groups,
                             dilation);
  });
  m.def("grad_bias", [](const at::Tensor& grad_output) { return grad_bias_entry(kEmulated, grad_output); });
}
