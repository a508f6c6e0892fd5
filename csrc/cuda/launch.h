// Host-side launchers of the CUDA kernels, one per op and path: launch_forward in forward.cu, launch_grad_input in
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

// The tensor-core path (implicit GEMM on mma.sync, igemm.cuh): forward_gemm.cu, grad_input_gemm.cu,
// grad_weight_gemm.cu. float16/bfloat16 multiply exactly with float32 accumulation; float32 runs as TF32
// (inputs rounded to 10 mantissa bits), so the dispatcher sends float32 here only when TF32 is allowed.
// Needs sm_80+. Workspace: the packed weight (forward, grad_input) or float32 partial sums of
// grad_weight_gemm_splits(s) x the weight (grad_weight).
void launch_forward_gemm(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& y);
void launch_grad_input_gemm(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
void launch_grad_weight_gemm(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
int64_t grad_weight_gemm_splits(const ConvT2dShape& s);

// The few-output-channel forward (forward_subpixel.cu: the sub-pixel rewrite, a stride-1 convolution in
// low-resolution space with S*S*C_out outputs per pixel); subpixel_forward_serves says where it applies.
bool subpixel_forward_serves(const ConvT2dShape& s, at::ScalarType t);
void launch_forward_subpixel(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                             const at::Tensor& y);

}  // namespace cuda
}  // namespace deconv_ext
