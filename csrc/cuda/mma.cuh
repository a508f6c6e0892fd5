// Every inline PTX instruction of the tensor-core path, and nothing else: warp-level MMA, ldmatrix,
// cp.async and the TF32 rounding. Each wrapper documents the fragment layout it assumes (PTX ISA,
// "Matrix fragments for mma.m16n8k16 / m16n8k8"); tools/cuda_emulation/emu_mma.h implements the same
// functions on the CPU from those layouts, so the kernels that use them run unchanged in the emulator.
//
// Notation per lane: g = lane / 4 (group), t = lane % 4 (thread in group).
//   m16n8k16 (f16/bf16): A (16x16, row-major) regs a0..a3 hold pairs (A[g][2t..2t+1], A[g+8][2t..],
//     A[g][2t+8..], A[g+8][2t+8..]); B (16x8) b0, b1 hold (B[2t..2t+1][g], B[2t+8..2t+9][g]);
//   m16n8k8 (tf32): a0..a3 = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]; b0, b1 = B[t][g], B[t+4][g];
//   C/D (16x8 f32): c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
// Needs sm_80 or newer; built for an older arch the bodies trap (the dispatcher never picks this path there).
#pragma once

#include <cstdint>

#if !defined(DECONV_EXT_EMULATION)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define DECONV_MMA_UNSUPPORTED 1
#endif

namespace deconv_ext {
namespace cuda {
namespace mma {

// D = A * B + C, 16x8x16, A/B float16 (kBf16 = false) or bfloat16, C/D float32.
template <bool kBf16>
__device__ __forceinline__ void m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef DECONV_MMA_UNSUPPORTED
  __trap();
#else
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// D = A * B + C, 16x8x8, A/B tf32 (float bit patterns already rounded by to_tf32), C/D float32.
__device__ __forceinline__ void m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef DECONV_MMA_UNSUPPORTED
  __trap();
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Four 8x8 b16 matrices from shared memory, transposed: lanes 8i..8i+7 give the addresses of matrix i's
// 8 rows (16 bytes each, 16-byte aligned); lane l receives in r[i] the pair (M_i[2t][g], M_i[2t+1][g]).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#ifdef DECONV_MMA_UNSUPPORTED
  __trap();
#else
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// 16 bytes global -> shared without passing through registers (both 16-byte aligned).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
#ifdef DECONV_MMA_UNSUPPORTED
  __trap();
#else
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifndef DECONV_MMA_UNSUPPORTED
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#ifndef DECONV_MMA_UNSUPPORTED
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// float -> tf32 (round to nearest, ties away from zero), returned as the float's bit pattern.
__device__ __forceinline__ uint32_t to_tf32(float v) {
#ifdef DECONV_MMA_UNSUPPORTED
  return __float_as_uint(v);
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
#endif
}

}  // namespace mma
}  // namespace cuda
}  // namespace deconv_ext
#endif  // !DECONV_EXT_EMULATION
