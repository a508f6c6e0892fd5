// Host-side contract of the deconv_ext ops: argument checks, output sizes and the memory-format
// rule, declared once and used by every backend and by the meta (fake) kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>
#include <optional>
#include <vector>

#include "index_math.h"

namespace deconv_ext {

// Checks the forward arguments (ranks, channels, groups, bias, dtypes, devices, parameter values,
// positive output size) and returns the output's sizes, SymInt so meta kernels trace dynamic shapes.
std::vector<c10::SymInt> check_forward(const at::Tensor& input, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef output_padding,
                                       int64_t groups, at::IntArrayRef dilation);

// grad_input = adjoint of the forward in `input`; returns the input's sizes derived from grad_output.
std::vector<c10::SymInt> check_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef output_padding, int64_t groups,
                                          at::IntArrayRef dilation);

// grad_weight = adjoint of the forward in `weight`; returns (C_in, C_out / groups, kH, kW).
std::vector<c10::SymInt> check_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                           at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef output_padding,
                                           int64_t groups, at::IntArrayRef dilation);

// grad_bias = sum of grad_output over batch and space; returns (C_out,).
std::vector<c10::SymInt> check_grad_bias(const at::Tensor& grad_output);

// Layout of results, as PyTorch chooses it for convolutions: channels_last when either operand
// suggests it, contiguous otherwise.
c10::MemoryFormat result_memory_format(const at::Tensor& a, const at::Tensor& b);

// Concrete shape for kernels, from a (N, C_in, H_in, W_in) input and (C_out, H_out, W_out) output.
ConvT2dShape make_shape(const at::Tensor& input, const at::Tensor& output, int64_t kH, int64_t kW,
                        at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                        at::IntArrayRef dilation);

}  // namespace deconv_ext
