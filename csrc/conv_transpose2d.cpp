// Argument checks and shape math for every op and backend (see conv_transpose2d.h).
#include "conv_transpose2d.h"

#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/SymBool.h>
#include <c10/core/SymNodeImpl.h>
#include <c10/util/Exception.h>

#include <string>

namespace deconv_ext {
namespace {

// Error messages are assembled from strings only. Streaming numbers into c10::str's ostringstream from
// this library crashed inside libstdc++'s number formatting (SIGSEGV, never the exception) on the GPU
// machine's toolchain (torch 2.11 wheel, system libstdc++), so every number goes through std::to_string.
std::string fmt(int64_t v) { return std::to_string(v); }
std::string fmt(const c10::SymInt& v) {
  if (auto i = v.maybe_as_int()) return std::to_string(*i);
  return v.toSymNode()->str();
}
template <typename T>
std::string fmt(c10::ArrayRef<T> v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + fmt(v[i]);
  return out + "]";
}
std::string fmt(at::ScalarType t) { return c10::toString(t); }
std::string fmt(const c10::Device& d) { return d.str(); }

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_tensor(const at::Tensor& t, const char* name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.defined(), "conv_transpose2d: expected ", name, " to be a tensor, got None");
  TORCH_CHECK(t.dim() == dim, "conv_transpose2d: expected ", name, " to be a ", fmt(dim), "-D tensor ", layout,
              ", got a ", fmt(t.dim()), "-D tensor of shape ", fmt(t.sym_sizes()));
  TORCH_CHECK(supported_dtype(t.scalar_type()), "conv_transpose2d: expected ", name,
              " to be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
              fmt(t.scalar_type()));
}

void check_same(const at::Tensor& ref, const char* ref_name, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "conv_transpose2d: expected ", name,
              " to have the same dtype as ", ref_name, " (", fmt(ref.scalar_type()), "), got ", fmt(t.scalar_type()));
  TORCH_CHECK(t.device() == ref.device(), "conv_transpose2d: expected ", name, " to be on the same device as ",
              ref_name, " (", fmt(ref.device()), "), got ", fmt(t.device()));
}

void check_pair(at::IntArrayRef v, const char* name, int64_t min_value, const char* expected) {
  TORCH_CHECK(v.size() == 2, "conv_transpose2d: expected ", name, " to have 2 elements (H, W), got ", fmt(static_cast<int64_t>(v.size())));
  TORCH_CHECK(v[0] >= min_value && v[1] >= min_value, "conv_transpose2d: expected ", name, " to be ", expected,
              ", got ", fmt(v));
}

// Everything that does not depend on tensors: stride, padding, dilation, output_padding, groups.
void check_params(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                  int64_t groups, at::IntArrayRef dilation) {
  check_pair(stride, "stride", 1, "positive");
  check_pair(padding, "padding", 0, "non-negative");
  check_pair(dilation, "dilation", 1, "positive");
  check_pair(output_padding, "output_padding", 0, "non-negative");
  for (int i = 0; i < 2; ++i) {
    // Larger output_padding would add rows no input reaches; PyTorch rejects it too.
    TORCH_CHECK(output_padding[i] < std::max(stride[i], dilation[i]), "conv_transpose2d: expected output_padding ",
                "to be smaller than max(stride, dilation) = ", fmt(std::max(stride[i], dilation[i])), " along ",
                i == 0 ? "H" : "W", ", got output_padding=", fmt(output_padding), " stride=", fmt(stride),
                " dilation=", fmt(dilation));
  }
  TORCH_CHECK(groups > 0, "conv_transpose2d: expected groups to be positive, got ", fmt(groups));
}

// weight is (C_in, C_out / groups, kH, kW); checks it against the channel count of the tensor
// that plays "input" (channels_in) and returns C_out.
c10::SymInt check_weight_channels(const at::Tensor& weight, const c10::SymInt& channels_in, const char* in_name,
                                  int64_t groups) {
  TORCH_CHECK(weight.sym_size(0) % groups == 0, "conv_transpose2d: expected weight.size(0) (in_channels = ",
              fmt(weight.sym_size(0)), ") to be divisible by groups = ", fmt(groups));
  TORCH_CHECK(channels_in == weight.sym_size(0), "conv_transpose2d: expected ", in_name, " to have ",
              fmt(weight.sym_size(0)), " channels (weight.size(0)), got ", fmt(channels_in));
  TORCH_CHECK(weight.sym_size(0) > 0 && weight.sym_size(1) > 0 && weight.sym_size(2) > 0 && weight.sym_size(3) > 0,
              "conv_transpose2d: expected weight to have non-zero sizes, got shape ", fmt(weight.sym_sizes()));
  return weight.sym_size(1) * groups;
}

}  // namespace

std::vector<c10::SymInt> check_forward(const at::Tensor& input, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef output_padding,
                                       int64_t groups, at::IntArrayRef dilation) {
  check_tensor(input, "input", 4, "(N, C_in, H, W)");
  check_tensor(weight, "weight", 4, "(C_in, C_out / groups, kH, kW)");
  check_same(input, "input", weight, "weight");
  check_params(stride, padding, output_padding, groups, dilation);
  TORCH_CHECK(input.sym_size(2) > 0 && input.sym_size(3) > 0, "conv_transpose2d: expected input to have non-zero ",
              "spatial size (only the batch may be empty), got shape ", fmt(input.sym_sizes()));
  const c10::SymInt c_out = check_weight_channels(weight, input.sym_size(1), "input", groups);
  if (bias.has_value() && bias->defined()) {
    check_tensor(*bias, "bias", 1, "(C_out,)");
    check_same(input, "input", *bias, "bias");
    TORCH_CHECK(bias->sym_size(0) == c_out, "conv_transpose2d: expected bias to have ", fmt(c_out),
                " elements (out_channels = weight.size(1) * groups), got ", fmt(bias->sym_size(0)));
  }
  std::vector<c10::SymInt> out{input.sym_size(0), c_out};
  for (int i = 0; i < 2; ++i) {
    const c10::SymInt size = transposed_out_size(input.sym_size(2 + i), weight.sym_size(2 + i), stride[i],
                                                 padding[i], output_padding[i], dilation[i]);
    TORCH_CHECK(size > 0, "conv_transpose2d: expected a positive output size, got ", i == 0 ? "H" : "W", "=", fmt(size),
                " (input ", fmt(input.sym_sizes()), ", kernel ", fmt(weight.sym_sizes().slice(2)), ", stride ",
                fmt(stride), ", padding ", fmt(padding), ", output_padding ", fmt(output_padding), ", dilation ",
                fmt(dilation), ")");
    out.push_back(size);
  }
  return out;
}

std::vector<c10::SymInt> check_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                          at::IntArrayRef stride, at::IntArrayRef padding,
                                          at::IntArrayRef output_padding, int64_t groups,
                                          at::IntArrayRef dilation) {
  check_tensor(grad_output, "grad_output", 4, "(N, C_out, H_out, W_out)");
  check_tensor(weight, "weight", 4, "(C_in, C_out / groups, kH, kW)");
  check_same(grad_output, "grad_output", weight, "weight");
  check_params(stride, padding, output_padding, groups, dilation);
  TORCH_CHECK(weight.sym_size(0) % groups == 0, "conv_transpose2d: expected weight.size(0) to be divisible by groups");
  TORCH_CHECK(grad_output.sym_size(1) == weight.sym_size(1) * groups, "conv_transpose2d: expected grad_output to have ",
              fmt(weight.sym_size(1) * groups), " channels (weight.size(1) * groups), got ", fmt(grad_output.sym_size(1)));
  std::vector<c10::SymInt> in{grad_output.sym_size(0), weight.sym_size(0)};
  for (int i = 0; i < 2; ++i) {
    // Invert transposed_out_size, which is (in - 1) * stride + its value at in = 1.
    const c10::SymInt span = grad_output.sym_size(2 + i) - transposed_out_size(c10::SymInt(1), weight.sym_size(2 + i),
                                                                               stride[i], padding[i],
                                                                               output_padding[i], dilation[i]);
    TORCH_CHECK(span >= 0 && span % stride[i] == 0, "conv_transpose2d: grad_output size ",
                fmt(grad_output.sym_sizes()), " is not an output size of this transposed convolution");
    in.push_back(span / stride[i] + 1);
  }
  return in;
}

std::vector<c10::SymInt> check_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                           at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                           at::IntArrayRef padding, at::IntArrayRef output_padding,
                                           int64_t groups, at::IntArrayRef dilation) {
  check_tensor(grad_output, "grad_output", 4, "(N, C_out, H_out, W_out)");
  check_tensor(input, "input", 4, "(N, C_in, H, W)");
  check_same(input, "input", grad_output, "grad_output");
  check_params(stride, padding, output_padding, groups, dilation);
  check_pair(kernel_size, "kernel_size", 1, "positive");
  TORCH_CHECK(input.sym_size(1) % groups == 0 && grad_output.sym_size(1) % groups == 0,
              "conv_transpose2d: expected input and grad_output channels to be divisible by groups = ", fmt(groups));
  TORCH_CHECK(input.sym_size(0) == grad_output.sym_size(0), "conv_transpose2d: expected grad_output to have batch ",
              fmt(input.sym_size(0)), " (as input), got ", fmt(grad_output.sym_size(0)));
  for (int i = 0; i < 2; ++i) {
    const c10::SymInt expected = transposed_out_size(input.sym_size(2 + i), c10::SymInt(kernel_size[i]), stride[i],
                                                     padding[i], output_padding[i], dilation[i]);
    TORCH_CHECK(grad_output.sym_size(2 + i) == expected, "conv_transpose2d: expected grad_output to have spatial size ",
                fmt(expected), " along ", i == 0 ? "H" : "W", ", got ", fmt(grad_output.sym_size(2 + i)));
  }
  return {input.sym_size(1), grad_output.sym_size(1) / groups, c10::SymInt(kernel_size[0]),
          c10::SymInt(kernel_size[1])};
}

std::vector<c10::SymInt> check_grad_bias(const at::Tensor& grad_output) {
  check_tensor(grad_output, "grad_output", 4, "(N, C_out, H_out, W_out)");
  return {grad_output.sym_size(1)};
}

c10::MemoryFormat result_memory_format(const at::Tensor& a, const at::Tensor& b) {
  // An empty batch: PyTorch returns NCHW. (Under torch.compile's symbolic sizes a size is assumed non-zero
  // unless it is known to be zero, as PyTorch's own size-oblivious checks do.)
  if (TORCH_GUARD_SIZE_OBLIVIOUS(a.sym_numel().sym_eq(0))) return c10::MemoryFormat::Contiguous;
  const bool cl = a.suggest_memory_format() == c10::MemoryFormat::ChannelsLast ||
                  b.suggest_memory_format() == c10::MemoryFormat::ChannelsLast;
  return cl ? c10::MemoryFormat::ChannelsLast : c10::MemoryFormat::Contiguous;
}

namespace {

// Kernel shape from the sizes of the tensor playing "input" (N, C_in, H_in, W_in) and of the one
// playing "output" (N, C_out, H_out, W_out).
ConvT2dShape make_shape(at::IntArrayRef in, at::IntArrayRef out, int64_t kH, int64_t kW, at::IntArrayRef stride,
                        at::IntArrayRef padding, int64_t groups, at::IntArrayRef dilation) {
  ConvT2dShape s;
  s.N = in[0];
  s.C_in = in[1];
  s.H_in = in[2];
  s.W_in = in[3];
  s.C_out = out[1];
  s.H_out = out[2];
  s.W_out = out[3];
  s.kH = kH;
  s.kW = kW;
  s.sH = stride[0];
  s.sW = stride[1];
  s.pH = padding[0];
  s.pW = padding[1];
  s.dH = dilation[0];
  s.dW = dilation[1];
  s.groups = groups;
  return s;
}

std::vector<int64_t> concrete(const std::vector<c10::SymInt>& sizes) {
  std::vector<int64_t> out;
  for (const auto& v : sizes) out.push_back(v.guard_int(__FILE__, __LINE__));
  return out;
}

// The memory format a backend's launchers get for this call (see Launchers::layout).
c10::MemoryFormat launch_format(const Launchers& l, const ConvT2dShape& s, at::ScalarType t,
                                c10::MemoryFormat preferred) {
  return l.layout != nullptr ? l.layout(s, t, preferred) : c10::MemoryFormat::Contiguous;
}

}  // namespace

ConvT2dShape forward_shape(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                           at::IntArrayRef dilation) {
  const auto out = concrete(check_forward(input, weight, std::nullopt, stride, padding, output_padding, groups,
                                          dilation));
  return make_shape(input.sizes(), out, weight.size(2), weight.size(3), stride, padding, groups, dilation);
}

at::Tensor forward_entry(const Launchers& l, const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
  const auto size = concrete(check_forward(input, weight, bias, stride, padding, output_padding, groups, dilation));
  const c10::OptionalDeviceGuard guard(input.device());
  const auto s = make_shape(input.sizes(), size, weight.size(2), weight.size(3), stride, padding, groups, dilation);
  const auto preferred = result_memory_format(input, weight);
  const auto fmt = launch_format(l, s, input.scalar_type(), preferred);
  const auto x = input.contiguous(fmt), w = weight.contiguous();
  const auto b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  auto y = at::empty(size, x.options().memory_format(fmt));
  if (y.numel() > 0) l.forward(s, x, w, b, y);
  return y.contiguous(preferred);
}

at::Tensor grad_input_entry(const Launchers& l, const at::Tensor& grad_output, const at::Tensor& weight,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding,
                            int64_t groups, at::IntArrayRef dilation) {
  const auto size = concrete(check_grad_input(grad_output, weight, stride, padding, output_padding, groups, dilation));
  const c10::OptionalDeviceGuard guard(grad_output.device());
  const auto s = make_shape(size, grad_output.sizes(), weight.size(2), weight.size(3), stride, padding, groups, dilation);
  const auto preferred = result_memory_format(grad_output, weight);
  const auto fmt = launch_format(l, s, grad_output.scalar_type(), preferred);
  const auto gy = grad_output.contiguous(fmt), w = weight.contiguous();
  auto gx = at::empty(size, gy.options().memory_format(fmt));
  if (gx.numel() > 0) l.grad_input(s, gy, w, gx);
  return gx.contiguous(preferred);
}

at::Tensor grad_weight_entry(const Launchers& l, const at::Tensor& grad_output, const at::Tensor& input,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
  const auto size = concrete(
      check_grad_weight(grad_output, input, kernel_size, stride, padding, output_padding, groups, dilation));
  const c10::OptionalDeviceGuard guard(input.device());
  auto gw = at::empty(size, input.options().memory_format(c10::MemoryFormat::Contiguous));
  if (gw.numel() == 0) return gw;
  if (input.numel() == 0 || grad_output.numel() == 0) return gw.zero_();  // empty batch: an empty sum
  const auto s =
      make_shape(input.sizes(), grad_output.sizes(), kernel_size[0], kernel_size[1], stride, padding, groups, dilation);
  const auto fmt = launch_format(l, s, input.scalar_type(), result_memory_format(grad_output, input));
  l.grad_weight(s, grad_output.contiguous(fmt), input.contiguous(fmt), gw);
  return gw;
}

at::Tensor grad_bias_entry(const Launchers& l, const at::Tensor& grad_output) {
  const auto size = check_grad_bias(grad_output);
  const c10::OptionalDeviceGuard guard(grad_output.device());
  const bool cl = l.grad_bias_takes_channels_last && grad_output.dim() == 4 &&
                  grad_output.is_contiguous(c10::MemoryFormat::ChannelsLast);
  const auto gy = cl ? grad_output : grad_output.contiguous();
  auto gb = at::empty(concrete(size), gy.options());
  if (gb.numel() == 0) return gb;
  if (gy.numel() == 0) return gb.zero_();  // empty batch: an empty sum
  l.grad_bias(gy, gb);
  return gb;
}

void check_backward(const std::optional<at::Tensor>& input, const std::optional<at::Tensor>& weight,
                    at::IntArrayRef kernel_size, std::array<bool, 3> output_mask) {
  const bool has_input = input.has_value() && input->defined(), has_weight = weight.has_value() && weight->defined();
  TORCH_CHECK(!output_mask[0] || has_weight,
              "conv_transpose2d_backward: output_mask asks for grad_input, which needs weight, but weight is None");
  TORCH_CHECK(!output_mask[1] || has_input,
              "conv_transpose2d_backward: output_mask asks for grad_weight, which needs input, but input is None");
  TORCH_CHECK(kernel_size.size() == 2, "conv_transpose2d_backward: expected kernel_size to have 2 values, got ",
              kernel_size.size());
  TORCH_CHECK(!has_weight || weight->dim() != 4 ||
                  (weight->sym_size(2) == kernel_size[0] && weight->sym_size(3) == kernel_size[1]),
              "conv_transpose2d_backward: expected kernel_size to be the weight's (", weight->sym_size(2), ", ",
              weight->sym_size(3), "), got ", kernel_size);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_entry(
    const Launchers& l, const at::Tensor& grad_output, const std::optional<at::Tensor>& input,
    const std::optional<at::Tensor>& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation,
    std::array<bool, 3> output_mask) {
  check_backward(input, weight, kernel_size, output_mask);
  const auto scope = l.backward_scope ? l.backward_scope() : nullptr;
  at::Tensor gx, gw, gb;
  if (output_mask[0])
    gx = grad_input_entry(l, grad_output, *weight, stride, padding, output_padding, groups, dilation);
  if (output_mask[1])
    gw = grad_weight_entry(l, grad_output, *input, kernel_size, stride, padding, output_padding, groups, dilation);
  if (output_mask[2]) gb = grad_bias_entry(l, grad_output);
  return {gx, gw, gb};
}

}  // namespace deconv_ext
