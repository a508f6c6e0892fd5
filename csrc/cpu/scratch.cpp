// Per-thread scratch buffers for the CPU kernels' large temporaries (the direct path's padded copies of x,
// the column-deinterleaved gy, the gemm tiles' packed weights, packed or transposed images and col2im planes).
//
// Why: a fresh multi-megabyte at::empty per call is served by glibc from mmap, or from a heap top that free()
// trims back to the OS, so every call paid page faults for the whole buffer. Measured (2 threads): 2,300-3,700
// faults per call, the FSRCNN x2 forward 7.9 ms with them and 4.6 ms without, DCGAN 64->3 backward 5.4 ms
// and 2.1 ms, depending only on what the process had allocated before. Reusing one buffer per purpose
// and thread makes the time independent of that history.
//
// A buffer is reused only while nobody else holds it (a tensor built on it still alive: then a fresh one is
// made), and only up to kMaxCachedBytes; larger requests are plain allocations.
#include <ATen/ops/empty.h>

#include <array>

#include "fast_paths.h"

namespace deconv_ext {
namespace cpu {
namespace {

constexpr int64_t kMaxCachedBytes = int64_t(32) << 20;
thread_local std::array<at::Tensor, static_cast<int>(Scratch::count)> buffers;  // per purpose

}  // namespace

at::Tensor scratch(Scratch purpose, int64_t numel, const at::TensorOptions& options) {
  const auto dtype = options.dtype().toScalarType();
  const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
  const auto flat = options.memory_format(c10::MemoryFormat::Contiguous);
  if (bytes > kMaxCachedBytes || options.device().type() != c10::DeviceType::CPU) return at::empty({numel}, flat);
  at::Tensor& b = buffers[static_cast<int>(purpose)];
  if (!b.defined() || b.scalar_type() != dtype || b.numel() < numel || b.storage().use_count() > 1)
    b = at::empty({numel}, flat);
  return b.narrow(0, 0, numel);
}

}  // namespace cpu
}  // namespace deconv_ext
