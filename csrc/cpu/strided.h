// Strided reads shared by the gemm path's column deinterleave (gemm.cpp) and the gemm tiles' gathers and
// grad_output planes (gemm_tiles.cpp): d[b] = g[step b].
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deconv_ext {
namespace cpu {

#if defined(__x86_64__)
// d[b] = g[2 b] for b < n: AVX2 vectors (pairs of loads, one shuffle and one permute per 8 values), the
// last (partial) vector with masked loads and stores, so that nothing past g[2 n - 2] is read.
__attribute__((target("avx2,fma"))) inline __m256 even_lanes(__m256 lo, __m256 hi) {
  // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] -> [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6]
  const __m256 e = _mm256_shuffle_ps(lo, hi, 0x88);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
}
// [lo1 lo3 lo5 lo7 hi1 hi3 hi5 hi7]
__attribute__((target("avx2,fma"))) inline __m256 odd_lanes(__m256 lo, __m256 hi) {
  const __m256 o = _mm256_shuffle_ps(lo, hi, 0xDD);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
}
// e[i] = g[2 i] for 2 i < n, o[i] = g[2 i + 1] for 2 i + 1 < n: AVX2 vectors over 16 values at a time.
__attribute__((target("avx2,fma"))) inline void split_even_odd_avx2(const float* g, int64_t n, float* e, float* o) {
  int64_t i = 0;
  for (; 2 * i + 16 <= n; i += 8) {
    const __m256 lo = _mm256_loadu_ps(g + 2 * i), hi = _mm256_loadu_ps(g + 2 * i + 8);
    _mm256_storeu_ps(e + i, even_lanes(lo, hi));
    _mm256_storeu_ps(o + i, odd_lanes(lo, hi));
  }
  for (; 2 * i < n; ++i) {
    e[i] = g[2 * i];
    if (2 * i + 1 < n) o[i] = g[2 * i + 1];
  }
}
__attribute__((target("avx2,fma"))) inline void even_values_avx2(const float* g, int64_t n, float* d) {
  int64_t b = 0;
  for (; b + 9 <= n; b += 8)  // (b + 8 < n: the load of g[2 b + 15] stays before g[2 (n - 1)])
    _mm256_storeu_ps(d + b, even_lanes(_mm256_loadu_ps(g + 2 * b), _mm256_loadu_ps(g + 2 * b + 8)));
  if (b < n) {  // 1-8 values left, read from g[2 b, 2 n - 1)
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int m = int(2 * (n - b) - 1);
    const __m256 lo = _mm256_maskload_ps(g + 2 * b, _mm256_cmpgt_epi32(_mm256_set1_epi32(m), iota));
    const __m256 hi = _mm256_maskload_ps(g + 2 * b + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(m - 8), iota));
    _mm256_maskstore_ps(d + b, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n - b)), iota), even_lanes(lo, hi));
  }
}
#endif

// d[b] = g[Step b] for b < n, the step a constant: the compiler vectorises the strided loads (shuffles).
template <int64_t Step, typename T>
void strided_values(const T* __restrict__ g, int64_t n, T* __restrict__ d) {
  for (int64_t b = 0; b < n; ++b) d[b] = g[Step * b];
}

// d[b] = g[step b] for b < n (float, double, bfloat16): float32 stride 2 in AVX2 vectors where the CPU has
// them (avx2) and n is 16+ (on rows of 8 the masked tail alone ran slower than the compiler's loop: DCGAN
// 512->256's deinterleave), strides 1-4 as constants (the deinterleave had taken 6% of DCGAN 128->64's
// grad_input one element at a time), others one element at a time.
template <typename T>
void strided_values(const T* g, int64_t step, int64_t n, T* d, bool avx2) {
  if (step == 1) return (void)std::copy(g, g + n, d);
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>)
    if (avx2 && step == 2 && n >= 16) return even_values_avx2(g, n, d);
#endif
  if (step == 2) return strided_values<2>(g, n, d);
  if (step == 3) return strided_values<3>(g, n, d);
  if (step == 4) return strided_values<4>(g, n, d);
  for (int64_t b = 0; b < n; ++b) d[b] = g[step * b];
}

}  // namespace cpu
}  // namespace deconv_ext
