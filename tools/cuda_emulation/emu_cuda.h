// Host emulation of the few CUDA features the deconv_ext kernels use, so that their exact source
// can run on a CPU (each CUDA thread becomes a std::thread; blocks run one after another).
// Used only by tools/cuda_emulation/emulate.py; not part of the extension.
#pragma once

#include <barrier>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

struct emu_dim {
  unsigned int x = 0, y = 0, z = 0;
};
inline thread_local emu_dim threadIdx, blockIdx;
inline emu_dim blockDim, gridDim;

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline double shfl_slots[1024];

// Runs `grid` blocks of `block` threads; grid-stride kernels get at most `cap` blocks, which
// is enough to exercise their stride loops and keeps the thread count small.
template <typename F, typename... Args>
void launch(unsigned int grid, unsigned int block, unsigned int /*smem*/, int /*stream*/, unsigned int cap, F f,
            Args... args) {
  if (cap && grid > cap) grid = cap;
  gridDim.x = grid;
  blockDim.x = block;
  for (unsigned int b = 0; b < grid; ++b) {
    block_barrier = std::make_unique<std::barrier<>>(block);
    warp_barriers.clear();
    for (unsigned int w = 0; w < (block + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    std::vector<std::thread> threads;
    for (unsigned int t = 0; t < block; ++t)
      threads.emplace_back([=] {
        threadIdx.x = t;
        blockIdx.x = b;
        f(args...);
      });
    for (auto& th : threads) th.join();
  }
}
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned int /*mask*/, T v, int offset) {
  const unsigned int tid = threadIdx.x, lane = tid % 32;
  auto& bar = *emu::warp_barriers[tid / 32];
  emu::shfl_slots[tid] = static_cast<double>(v);
  bar.arrive_and_wait();
  const T r = lane + offset < 32 ? static_cast<T>(emu::shfl_slots[tid + offset]) : v;
  bar.arrive_and_wait();
  return r;
}
