// The CUDA backend of the four deconv_ext ops: its launchers (forward.cu, grad_input.cu, grad_weight.cu,
// declared in launch.h) registered for the CUDA dispatch key. Checks, the device guard, layouts and empty
// tensors are handled once for every backend by the entry layer (csrc/conv_transpose2d.h).
//
// Paths, chosen per call by choose_path (the rule below), the same for all four ops of a configuration:
//   "gemm"  tensor cores (forward_gemm.cu, grad_input_gemm.cu, grad_weight_gemm.cu: implicit GEMM on
//           mma.sync); float16, bfloat16, and float32 as TF32 when torch.backends.cudnn.allow_tf32 is
//           True (the flag F.conv_transpose2d obeys; default True); sm_80 or newer. NCHW, and
//           channels_last (NHWC) images as they are, with no layout conversion.
//   "subpixel"  few output channels (C_out <= 4, groups 1, square stride 2-4: super-resolution last layers):
//           the forward by forward_subpixel.cu (a stride-1 convolution in low-resolution space with S*S*C_out
//           outputs, input tiles and weights in shared memory, the pixel shuffle fused into the store);
//           the gradients by the simt kernels.
//   "simt"  the gather/direct kernels of forward.cu, grad_input.cu, grad_weight.cu: every dtype (float32
//           exactly, float64), every GPU; the reference the other paths are tested against.
// Rule: gemm where it can serve the call and both C_in/groups and C_out/groups are at least 16 (the GEMM's
// N and reduction are then worth a 64 x 64 tile); else subpixel where it serves the call; else simt
// (depthwise layers, odd strides, float64, ...). DECONV_EXT_CUDA_PATH=auto|simt|gemm|subpixel forces a
// path (one that cannot serve the call raises, saying why), and deconv_ext::_cuda_path names the path a
// call takes.
#include <ATen/Context.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "../register_backend.h"
#include "igemm.cuh"
#include "launch.h"

namespace deconv_ext {
namespace {

// Compute capability major*10+minor of the current device; 0 when there is none.
int64_t current_capability() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error: no device is not a failure here
    return 0;
  }
  return major * 10 + minor;
}

// Why the GEMM path cannot serve this call, or nullptr when it can.
const char* gemm_unsupported(const ConvT2dShape& s, at::ScalarType t, int64_t capability) {
  if (capability < 80) return "needs a GPU of compute capability 8.0 or newer";
  if (t == at::kDouble) return "does not take float64";
  if (t == at::kFloat && !at::globalContext().allowTF32CuDNN())
    return "takes float32 only as TF32, and torch.backends.cudnn.allow_tf32 is False";
  const int64_t max_q = ((s.H_out + s.sH - 1) / s.sH) * ((s.W_out + s.sW - 1) / s.sW);
  if (!cuda::igemm::grid_fits(s.N * std::max(max_q, s.H_in * s.W_in), std::max(s.cin_per_group(), s.cout_per_group()),
                              std::max(s.sH * s.sW * s.groups, s.kH * s.kW * s.groups)))
    return "cannot launch a grid this large";
  return nullptr;
}

const char* choose_path(const ConvT2dShape& s, at::ScalarType t, int64_t capability) {
  const char* forced = std::getenv("DECONV_EXT_CUDA_PATH");
  const std::string f = forced ? forced : "";
  TORCH_CHECK(f.empty() || f == "auto" || f == "simt" || f == "gemm" || f == "subpixel",
              "DECONV_EXT_CUDA_PATH: expected one of auto, simt, gemm, subpixel, got '", f, "'");
  if (f == "simt") return "simt";
  const char* why = gemm_unsupported(s, t, capability);
  if (f == "gemm") {
    TORCH_CHECK(why == nullptr, "DECONV_EXT_CUDA_PATH=gemm: the tensor-core path ", why, " (dtype ", t,
                ", compute capability ", capability / 10, ".", capability % 10, ")");
    return "gemm";
  }
  const bool subpixel = cuda::subpixel_forward_serves(s, t);
  if (f == "subpixel") {
    TORCH_CHECK(subpixel, "DECONV_EXT_CUDA_PATH=subpixel: the sub-pixel forward serves C_out <= 4, groups 1, a "
                "square stride of 2 to 4, dilation 1, kernels up to 11 and float32/float16/bfloat16; got C_out ",
                s.C_out, ", groups ", s.groups, ", stride (", s.sH, ", ", s.sW, "), dilation (", s.dH, ", ", s.dW,
                "), kernel (", s.kH, ", ", s.kW, "), ", t);
    return "subpixel";
  }
  if (why == nullptr && s.cin_per_group() >= 16 && s.cout_per_group() >= 16) return "gemm";
  return subpixel ? "subpixel" : "simt";
}

bool use_gemm(const ConvT2dShape& s, at::ScalarType t) {
  return std::strcmp(choose_path(s, t, current_capability()), "gemm") == 0;
}

void forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
  const char* path = choose_path(s, x.scalar_type(), current_capability());
  if (std::strcmp(path, "gemm") == 0) cuda::launch_forward_gemm(s, x, w, b, y);
  else if (std::strcmp(path, "subpixel") == 0) cuda::launch_forward_subpixel(s, x, w, b, y);
  else cuda::launch_forward(s, x, w, b, y);
}
void grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  if (use_gemm(s, gy.scalar_type())) cuda::launch_grad_input_gemm(s, gy, w, gx);
  else cuda::launch_grad_input(s, gy, w, gx);
}
void grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  if (use_gemm(s, x.scalar_type())) cuda::launch_grad_weight_gemm(s, gy, x, gw);
  else cuda::launch_grad_weight(s, gy, x, gw);
}

// channels_last images go to the GEMM path as they are (its kernels index NHWC natively); simt gets NCHW.
c10::MemoryFormat layout(const ConvT2dShape& s, at::ScalarType t, c10::MemoryFormat preferred) {
  return preferred == c10::MemoryFormat::ChannelsLast && use_gemm(s, t) ? c10::MemoryFormat::ChannelsLast
                                                                         : c10::MemoryFormat::Contiguous;
}

constexpr Launchers kCudaLaunchers{&forward, &grad_input, &grad_weight, &cuda::launch_grad_bias, &layout};

// The path all four ops take on CUDA for this configuration (shapes only: meta tensors work too), on the
// current GPU, or on a GPU of compute capability `capability` (e.g. 90) when it is given.
std::string cuda_path(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                      at::IntArrayRef dilation, std::optional<int64_t> capability) {
  return choose_path(forward_shape(input, weight, stride, padding, output_padding, groups, dilation),
                     input.scalar_type(), capability ? *capability : current_capability());
}

}  // namespace

TORCH_LIBRARY_IMPL(deconv_ext, CUDA, m) { register_backend<&kCudaLaunchers>(m); }

TORCH_LIBRARY_FRAGMENT(deconv_ext, m) {
  m.def("_cuda_path(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] output_padding, int groups, "
        "int[2] dilation, int? capability=None) -> str",
        &cuda_path);
}

}  // namespace deconv_ext
