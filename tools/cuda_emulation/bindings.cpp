// The CUDA backend's launchers, compiled for the CPU by emulate.py, behind the same entry layer the
// extension uses (csrc/conv_transpose2d.h): only the launchers differ from the real CUDA build.
#include <torch/extension.h>

#include "conv_transpose2d.h"
#include "launch.h"

using namespace deconv_ext;

namespace {
const Launchers kSimt{&cuda::launch_forward, &cuda::launch_grad_input, &cuda::launch_grad_weight,
                      &cuda::launch_grad_bias};
// The GEMM path takes channels_last images as they are (csrc/cuda/conv_transpose2d.cu: layout).
c10::MemoryFormat gemm_layout(const ConvT2dShape&, at::ScalarType, c10::MemoryFormat preferred) { return preferred; }
const Launchers kGemm{&cuda::launch_forward_gemm, &cuda::launch_grad_input_gemm, &cuda::launch_grad_weight_gemm,
                      &cuda::launch_grad_bias, &gemm_layout};
const Launchers kSubpixel{&cuda::launch_forward_subpixel, &cuda::launch_grad_input, &cuda::launch_grad_weight,
                          &cuda::launch_grad_bias};
// path: "simt", "gemm" or "subpixel" (the CUDA paths; csrc/cuda/conv_transpose2d.cu chooses on a GPU)
const Launchers& launchers(const std::string& path) {
  TORCH_CHECK(path == "simt" || path == "gemm" || path == "subpixel", "path: expected simt, gemm or subpixel, got '",
              path, "'");
  return path == "gemm" ? kGemm : path == "subpixel" ? kSubpixel : kSimt;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", [](const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> output_padding,
                      int64_t groups, std::vector<int64_t> dilation, const std::string& path) {
    return forward_entry(launchers(path), input, weight, bias, stride, padding, output_padding, groups, dilation);
  });
  m.def("grad_input", [](const at::Tensor& grad_output, const at::Tensor& weight, std::vector<int64_t> stride,
                         std::vector<int64_t> padding, std::vector<int64_t> output_padding, int64_t groups,
                         std::vector<int64_t> dilation, const std::string& path) {
    return grad_input_entry(launchers(path), grad_output, weight, stride, padding, output_padding, groups, dilation);
  });
  m.def("grad_weight", [](const at::Tensor& grad_output, const at::Tensor& input, std::vector<int64_t> kernel_size,
                          std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> output_padding, int64_t groups, std::vector<int64_t> dilation, const std::string& path) {
    return grad_weight_entry(launchers(path), grad_output, input, kernel_size, stride, padding, output_padding, groups,
                             dilation);
  });
  m.def("grad_bias", [](const at::Tensor& grad_output) { return grad_bias_entry(kSimt, grad_output); });
}
