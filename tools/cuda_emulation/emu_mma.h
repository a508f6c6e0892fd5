// CPU implementations of csrc/cuda/mma.cuh (mma.sync, ldmatrix, cp.async, cvt.rna.tf32), written from the
// PTX ISA's fragment layouts, for the emulator (emu_cuda.h: one std::thread per CUDA thread). The warp's
// 32 threads meet at the warp barrier: each publishes its registers (or row addresses), all wait, each
// computes its own result from everyone's, all wait again. cp.async copies are queued per thread and
// land only when cp.async.wait_group retires their group, so a missing wait shows up as stale data.
#pragma once

#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace deconv_ext {
namespace cuda {
namespace mma {
namespace emu_detail {
inline uint32_t a_slots[1024][4], b_slots[1024][2];
inline const void* row_slots[1024];

inline float f16_bits(uint16_t b) { return static_cast<float>(c10::Half(b, c10::Half::from_bits())); }
inline float bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float tf32_bits(uint32_t b) {  // the tensor core reads 19 bits: sign, exponent, 10 mantissa bits
  b &= 0xFFFFE000u;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline std::barrier<>& warp_barrier() { return *::emu::warp_barriers[threadIdx.x / 32]; }

struct CopyGroups {
  std::vector<std::pair<void*, const void*>> open;
  std::vector<std::vector<std::pair<void*, const void*>>> committed;
};
inline thread_local CopyGroups copies;
}  // namespace emu_detail

// One element of a 16-bit fragment: register `reg` of lane `lane`, low half for even k.
template <bool kBf16>
inline float half_of(uint32_t word, int k) {
  const uint16_t b = static_cast<uint16_t>(k % 2 ? word >> 16 : word & 0xFFFFu);
  return kBf16 ? emu_detail::bf16_bits(b) : emu_detail::f16_bits(b);
}

// D (16x8) += A (16xK) * B (Kx8) for the warp: each lane publishes its fragment registers, then computes its
// own four C elements (c0, c1 = C[g][2t..2t+1]; c2, c3 = C[g+8][2t..2t+1]) reading the others' registers
// through a_at(lane_a_regs, row, k) and b_at(lane_b_regs, k, col), which hold the per-shape layouts.
template <int K, typename AAt, typename BAt>
inline void warp_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], AAt a_at, BAt b_at) {
  using namespace emu_detail;
  const unsigned tid = threadIdx.x, base = tid - tid % 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) a_slots[tid][i] = a[i];
  for (int i = 0; i < 2; ++i) b_slots[tid][i] = b[i];
  warp_barrier().arrive_and_wait();
  for (int c = 0; c < 4; ++c) {
    const int row = g + (c >> 1) * 8, col = 2 * t + (c & 1);
    float acc = d[c];
    for (int k = 0; k < K; ++k) acc += a_at(base, row, k) * b_at(base, k, col);
    d[c] = acc;
  }
  warp_barrier().arrive_and_wait();
}

template <bool kBf16>
inline void m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  using emu_detail::a_slots, emu_detail::b_slots;
  warp_mma<16>(
      d, a, b,
      // A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, register (row >= 8) + 2 * (k >= 8)
      [](unsigned base, int row, int k) {
        return half_of<kBf16>(a_slots[base + (row % 8) * 4 + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)], k);
      },
      // B[k][col]: lane col * 4 + (k % 8) / 2, register (k >= 8)
      [](unsigned base, int k, int col) { return half_of<kBf16>(b_slots[base + col * 4 + (k % 8) / 2][k >= 8], k); });
}

inline void m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  using emu_detail::a_slots, emu_detail::b_slots, emu_detail::tf32_bits;
  warp_mma<8>(
      d, a, b,
      // A[row][k]: lane (row % 8) * 4 + k % 4, register (row >= 8) + 2 * (k >= 4)
      [](unsigned base, int row, int k) { return tf32_bits(a_slots[base + (row % 8) * 4 + k % 4][(row >= 8) + 2 * (k >= 4)]); },
      // B[k][col]: lane col * 4 + k % 4, register (k >= 4)
      [](unsigned base, int k, int col) { return tf32_bits(b_slots[base + col * 4 + k % 4][k >= 4]); });
}

inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  using namespace emu_detail;
  const unsigned tid = threadIdx.x, base = tid - tid % 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) throw std::runtime_error("ldmatrix: row address not 16-byte aligned");
  row_slots[tid] = row;
  warp_barrier().arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    // matrix i: rows from lanes 8i .. 8i+7; this lane gets (M[2t][g], M[2t+1][g])
    const uint16_t lo = static_cast<const uint16_t*>(row_slots[base + 8 * i + 2 * t])[g];
    const uint16_t hi = static_cast<const uint16_t*>(row_slots[base + 8 * i + 2 * t + 1])[g];
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  warp_barrier().arrive_and_wait();
}

inline void cp_async_16(void* smem, const void* gmem) {
  if (reinterpret_cast<uintptr_t>(smem) % 16 != 0 || reinterpret_cast<uintptr_t>(gmem) % 16 != 0)
    throw std::runtime_error("cp.async: 16-byte copy with an unaligned address");
  emu_detail::copies.open.emplace_back(smem, gmem);
}
inline void cp_async_commit() {
  auto& c = emu_detail::copies;
  c.committed.push_back(std::move(c.open));
  c.open.clear();
}
template <int kPending>
inline void cp_async_wait() {
  auto& c = emu_detail::copies;
  while (c.committed.size() > static_cast<size_t>(kPending)) {
    for (auto& [dst, src] : c.committed.front()) std::memcpy(dst, src, 16);
    c.committed.erase(c.committed.begin());
  }
}

inline uint32_t to_tf32(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7F800000u) == 0x7F800000u) return b;  // inf, nan: unchanged
  return (b + 0x1000u) & 0xFFFFE000u;               // round half away from zero on the magnitude
}

}  // namespace mma
}  // namespace cuda
}  // namespace deconv_ext
