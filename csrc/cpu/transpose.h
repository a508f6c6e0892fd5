// Register transposes (AVX2) shared by the direct kernels and the gemm tiles: 8 x 8 blocks of 32-bit words
// (a float32, or a pair of neighbouring bfloat16 channels).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <type_traits>

namespace deconv_ext {
namespace cpu {

// Rows r[0..8) of eight words each transposed in place: r[j] becomes word j of every row.
__attribute__((target("avx2,fma"))) inline void transpose8x8_in_registers(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
    r[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
  }
}
// The same, stored: word j of every row to d + j * ds (eight words).
__attribute__((target("avx2,fma"))) inline void store_transposed8x8(__m256 (&r)[8], float* d, int64_t ds) {
  transpose8x8_in_registers(r);
  for (int j = 0; j < 8; ++j) _mm256_storeu_ps(d + j * ds, r[j]);
}

// Eight rows (src + i * ss) of eight values (float32 or bfloat16) as float32, transposed: value j of every
// row to d + j * ds.
template <typename T>
__attribute__((target("avx2,fma"))) inline void transpose8x8(const T* src, int64_t ss, float* d, int64_t ds) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      r[i] = _mm256_loadu_ps(src + i * ss);
    } else {  // bfloat16: the high half of a float32
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * ss));
      r[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
  }
  store_transposed8x8(r, d, ds);
}

// Sixteen bfloat16 rows (src + i * ss) of eight values, transposed without widening: value j of every row
// to d + j * ds (sixteen values; ds even, d 4-byte aligned). Rows 2p and 2p + 1 are interleaved into
// words first.
__attribute__((target("avx2,fma"))) inline void transpose16x8(const c10::BFloat16* src, int64_t ss,
                                                              c10::BFloat16* d, int64_t ds) {
  __m256 r[8];
  for (int p = 0; p < 8; ++p) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * p * ss));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (2 * p + 1) * ss));
    r[p] = _mm256_castsi256_ps(_mm256_set_m128i(_mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(a, b)));
  }
  store_transposed8x8(r, reinterpret_cast<float*>(d), ds / 2);
}

}  // namespace cpu
}  // namespace deconv_ext
#endif
