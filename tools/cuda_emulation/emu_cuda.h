// Host emulation of the few CUDA features the deconv_ext kernels use, so that their exact source
// can run on a CPU (each CUDA thread becomes a std::thread; blocks run one after another).
// Used only by tools/cuda_emulation/emulate.py; not part of the extension.
#pragma once

#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define DECONV_EXT_EMULATION 1

struct emu_dim {
  unsigned int x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local emu_dim threadIdx, blockIdx;
inline emu_dim blockDim, gridDim;

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline double shfl_slots[1024];

// Runs the grid's blocks one after another, each as `block` threads; grid-stride kernels (cap > 0) get
// at most `cap` blocks along x, which is enough to exercise their stride loops and keeps the thread
// count small.
template <typename F, typename... Args>
void launch(dim3 grid, dim3 block, unsigned int /*smem*/, int /*stream*/, unsigned int cap, F f, Args... args) {
  if (cap && grid.x > cap) grid.x = cap;
  gridDim = emu_dim{grid.x, grid.y, grid.z};
  blockDim = emu_dim{block.x, 1, 1};
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        block_barrier = std::make_unique<std::barrier<>>(block.x);
        warp_barriers.clear();
        for (unsigned int w = 0; w < (block.x + 31) / 32; ++w)
          warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> threads;
        for (unsigned int t = 0; t < block.x; ++t)
          threads.emplace_back([=] {
            threadIdx = emu_dim{t, 0, 0};
            blockIdx = emu_dim{bx, by, bz};
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

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

#include "emu_mma.h"
