// Helpers shared by the CUDA kernel files: host-side launch arithmetic (index width, grid size) and
// device-side fixed-order reductions. No ATen beyond Tensor.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

namespace deconv_ext {
namespace cuda {

constexpr int kThreads = 256;

// The 32-bit index path is taken when every offset a kernel forms stays below 2^30: a grid-stride
// index i < total <= 2^30 plus the stride (<= total + kThreads) then cannot overflow int32 either.
// DECONV_EXT_CUDA_INDEX64=1 takes the 64-bit path always, so tests reach it without 2^30-element tensors.
inline bool fits_int32(std::initializer_list<int64_t> numels) {
  const char* force64 = std::getenv("DECONV_EXT_CUDA_INDEX64");
  if (force64 != nullptr && std::strcmp(force64, "1") == 0) return false;
  for (int64_t n : numels)
    if (n >= (int64_t{1} << 30)) return false;
  return true;
}

// Blocks for a grid-stride loop over `total` items of `per_block` each. The cap only bounds the
// grid (the loop covers the rest); 2^20 blocks of 256 threads saturate any current GPU.
inline unsigned int blocks_for(int64_t total, int64_t per_block) {
  const int64_t blocks = (total + per_block - 1) / per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{1} << 20)));
}

// Fixed-order warp sum (lane 0 gets the result): the same shuffle tree every run, so deterministic.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Fixed-order block sum of kThreads values (thread 0 gets the result). `smem` holds kThreads / 32.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? smem[threadIdx.x] : T(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

}  // namespace cuda
}  // namespace deconv_ext
