// Host-side launchers of the CUDA kernels, one per op: launch_forward in forward.cu, launch_grad_input in
// grad_input.cu, launch_grad_weight and launch_grad_bias in grad_weight.cu (split so that ninja compiles
// the dtype x index-width instantiations in parallel). They are the CUDA backend's Launchers
// (conv_transpose2d.cu), so the entry layer (csrc/conv_transpose2d.h) has already checked the arguments,
// made every tensor contiguous NCHW, allocated the result, set the device guard and handled empty results.
#pragma once

#include <ATen/core/Tensor.h>

#include "../index_math.h"

namespace deconv_ext {
namespace cuda {

// y = T(x, w) + b; b may be undefined.
void launch_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& y);
// gx = T*(gy, w)
void launch_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
// gw = W(x, gy)
void launch_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
// gb = sum of gy over N, H, W
void launch_grad_bias(const at::Tensor& gy, const at::Tensor& gb);

}  // namespace cuda
}  // namespace deconv_ext
