// The CUDA backend of the four deconv_ext ops: its launchers (forward.cu, grad_input.cu, grad_weight.cu,
// declared in launch.h) registered for the CUDA dispatch key. Checks, the device guard, layouts and empty
// tensors are handled once for every backend by the entry layer (csrc/conv_transpose2d.h).
#include <torch/library.h>

#include "../register_backend.h"
#include "launch.h"

namespace deconv_ext {
namespace {

constexpr Launchers kCudaLaunchers{&cuda::launch_forward, &cuda::launch_grad_input, &cuda::launch_grad_weight,
                                   &cuda::launch_grad_bias};

}  // namespace

TORCH_LIBRARY_IMPL(deconv_ext, CUDA, m) { register_backend<&kCudaLaunchers>(m); }

}  // namespace deconv_ext
