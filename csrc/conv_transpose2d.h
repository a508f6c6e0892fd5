// Host-side contract of the deconv_ext ops, declared once and used by every backend and by the meta
// (fake) kernels: argument checks, output sizes, the memory-format rule, and the entry layer that
// turns an op call into a call of a backend's launcher.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>
#include <array>
#include <memory>
#include <optional>
#include <tuple>
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

// ---- the entry layer ---------------------------------------------------------------------------------
// A backend (CPU, CUDA, the CPU emulation of the CUDA kernels) supplies only launchers. Each one gets
// tensors of one dtype on one device, the result allocated (not initialised: a launcher writes every
// element), the device guard set, and never an empty result or an empty reduction (the entry layer
// handles those). `b` may be undefined (no bias). Layout: the weight, bias, grad_weight and grad_bias are
// contiguous; the images (x, y, gy, gx) are contiguous NCHW, or channels_last-contiguous (NHWC) where
// `layout` (optional) returns ChannelsLast for the call — a backend with a native NHWC path takes
// channels_last operands without a layout round trip. `preferred` is the layout PyTorch gives the result
// (ChannelsLast when an operand is channels_last); whatever the launchers get, the entry layer returns
// that layout.
struct Launchers {
  void (*forward)(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& y);
  void (*grad_input)(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx);
  void (*grad_weight)(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw);
  void (*grad_bias)(const at::Tensor& gy, const at::Tensor& gb);
  c10::MemoryFormat (*layout)(const ConvT2dShape& s, at::ScalarType t, c10::MemoryFormat preferred) = nullptr;
  // grad_bias takes a channels_last-contiguous gy as it is (else it gets NCHW).
  bool grad_bias_takes_channels_last = false;
  // Optional: what the gradients of one backward_entry call share (CPU: the deinterleaved grad_output, built
  // by the first launcher that needs it and reused by the next). The token is held during the call.
  std::shared_ptr<void> (*backward_scope)() = nullptr;
};

// For a launcher: whether two of its images came channels_last (NHWC), i.e. what its `layout` chose. An
// image whose NCHW and NHWC layouts coincide (C == 1, or H == W == 1) passes either way, and either
// indexing reads it right.
inline bool images_nhwc(const at::Tensor& a, const at::Tensor& b) {
  return a.is_contiguous(c10::MemoryFormat::ChannelsLast) && b.is_contiguous(c10::MemoryFormat::ChannelsLast) &&
         !(a.is_contiguous() && b.is_contiguous());
}

// The four ops, written once for every backend: check -> device guard -> shape -> the launchers' layout ->
// allocate -> empty handling -> launch -> the layout PyTorch would choose (result_memory_format).
at::Tensor forward_entry(const Launchers& l, const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation);
at::Tensor grad_input_entry(const Launchers& l, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation);
at::Tensor grad_weight_entry(const Launchers& l, const at::Tensor& grad_output, const at::Tensor& input,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation);
at::Tensor grad_bias_entry(const Launchers& l, const at::Tensor& grad_output);
// The gradients output_mask asks for, (grad_input, grad_weight, grad_bias), the others undefined: the results
// of the three entries above, in one call, within the backend's backward_scope. grad_input needs `weight`,
// grad_weight `input`; `kernel_size` must be the weight's when both are given.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_entry(
    const Launchers& l, const at::Tensor& grad_output, const std::optional<at::Tensor>& input,
    const std::optional<at::Tensor>& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    std::array<bool, 3> output_mask);
// The argument checks of backward_entry that the three entries do not make (shared with the meta kernel).
void check_backward(const std::optional<at::Tensor>& input, const std::optional<at::Tensor>& weight,
                    at::IntArrayRef kernel_size, std::array<bool, 3> output_mask);

// The kernel shape of a forward call (what its launcher would get), from the checked arguments alone;
// used by the dispatch queries, which may see meta tensors.
ConvT2dShape forward_shape(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                           at::IntArrayRef dilation);

}  // namespace deconv_ext
