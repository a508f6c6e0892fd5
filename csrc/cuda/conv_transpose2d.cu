// The CUDA backend of the four deconv_ext ops: its launchers (forward.cu, grad_input.cu, grad_weight.cu,
// declared in launch.h) registered for the CUDA dispatch key. Checks, the device guard, layouts and empty
// tensors are handled once for every backend by the entry layer (csrc/conv_transpose2d.h).
//
// Paths: one at present, "simt" (the gather/direct kernels of forward.cu, grad_input.cu, grad_weight.cu).
// DECONV_EXT_CUDA_PATH=auto|simt forces a path as DECONV_EXT_CPU_PATH does on the CPU, and the query
// deconv_ext::_cuda_path names the path a call takes; new paths (tensor cores) plug in at choose_path().
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../register_backend.h"
#include "launch.h"

namespace deconv_ext {
namespace {

const char* choose_path(const ConvT2dShape& /*s*/, at::ScalarType /*t*/) {
  const char* forced = std::getenv("DECONV_EXT_CUDA_PATH");
  TORCH_CHECK(forced == nullptr || *forced == 0 || std::strcmp(forced, "auto") == 0 || std::strcmp(forced, "simt") == 0,
              "DECONV_EXT_CUDA_PATH: expected one of auto, simt, got '", std::string(forced ? forced : ""), "'");
  return "simt";
}

void forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
  choose_path(s, x.scalar_type());
  cuda::launch_forward(s, x, w, b, y);
}
void grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  choose_path(s, gy.scalar_type());
  cuda::launch_grad_input(s, gy, w, gx);
}
void grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  choose_path(s, x.scalar_type());
  cuda::launch_grad_weight(s, gy, x, gw);
}

constexpr Launchers kCudaLaunchers{&forward, &grad_input, &grad_weight, &cuda::launch_grad_bias};

// The path all four ops take on CUDA for this configuration (shapes only: meta tensors work too).
std::string cuda_path(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                      at::IntArrayRef dilation) {
  return choose_path(forward_shape(input, weight, stride, padding, output_padding, groups, dilation),
                     input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(deconv_ext, CUDA, m) { register_backend<&kCudaLaunchers>(m); }

TORCH_LIBRARY_FRAGMENT(deconv_ext, m) {
  m.def("_cuda_path(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] output_padding, int groups, "
        "int[2] dilation) -> str",
        &cuda_path);
}

}  // namespace deconv_ext
