// The tensor-core implicit GEMM shared by forward_gemm.cu, grad_input_gemm.cu and grad_weight_gemm.cu:
// C[M x N] = A[M x K] * B[K x N] with fp32 accumulation, where A and B are never materialised: a
// "problem" struct P gathers their elements from the op's tensors (zero outside the image) and
// receives the results. One thread block of 4 warps computes a 64 x 64 tile of C; blockIdx.z selects
// the sub-problem (a stride phase and group, a group, or a tap, group and K split), which P::begin sets up.
//
// Per K tile (32 for float16/bfloat16, 16 for float32 as TF32): A is gathered through registers into
// shared memory ([k][m], m contiguous), B likewise or, when P::kPackedB, copied by cp.async from a
// weight buffer packed as [K][N] (padded to whole tiles, so no copy needs a bound). Two shared-memory
// stages: the loads of tile t+1 are in flight while the MMAs of tile t run. Fragments come from shared
// memory through ldmatrix.trans (16-bit types) or plain loads (TF32); the MMAs are mma.sync (mma.cuh).
//
// Kernels using it declare __launch_bounds__(kThreads, 1): with the default occupancy target ptxas caps the
// registers at 128 and spills; ~150 registers (3 blocks of 4 warps per SM) keep everything in registers.
// tests/test_cuda_build.py reads ptxas' report and fails on any spill.
//
// The problem interface (all __device__):
//   scalar_t; kPackedB; kAlongM (A gathered m-fastest: NCHW images, where neighbouring pixels are
//   neighbouring addresses; else k-fastest); kBAlongN (same for B when gathered);
//   begin(z) -> bool (false: nothing to do); M, N, k_begin, k_end (k_begin a multiple of the K tile);
//   row_a(m) -> RowA, col_a(k) -> ColA, load_a(RowA, ColA) -> scalar_t (0 outside); likewise for B,
//   or b_packed(k, n) -> const scalar_t* (row k of the packed B, column n); store(m, n, float).
#pragma once

#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "mma.cuh"

namespace deconv_ext {
namespace cuda {
namespace igemm {

constexpr int kBM = 64, kBN = 64, kThreads = 128, kPad = 8;  // 4 warps, 2 x 2, each 32 x 32 of C

inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// The shared-memory element of a scalar type: its bit pattern (TF32-rounded for float).
template <typename T>
struct Elem {
  using type = uint16_t;
  static constexpr int kBK = 32, kKStep = 16;
  static __device__ __forceinline__ uint16_t bits(T v) { return v.x; }
};
template <>
struct Elem<float> {
  using type = uint32_t;
  static constexpr int kBK = 16, kKStep = 8;
  static __device__ __forceinline__ uint32_t bits(float v) { return mma::to_tf32(v); }
};

// One operand's share of a K tile for this thread: kElems elements gathered into registers as shared-memory
// bits (zero past the operand's `rows` rows or past k_end), for rows [r0, r0 + 64) and k [kbase, kbase + BK).
// kAlongRows: the thread takes row tid % 64 and k = tid / 64 + 2i (neighbouring rows are neighbouring
// addresses: NCHW images); otherwise k = tid % BK and rows tid / BK + (128 / BK) i (neighbouring k are).
// row_of(r) and col_of(k) decode a row and a k once; load(row, col) reads the element.
template <typename T, int BK, bool kAlongRows, typename E, int kElems, typename RowOf, typename ColOf, typename Load>
__device__ __forceinline__ void gather_tile(E (&regs)[kElems], int64_t r0, int64_t rows, int64_t kbase,
                                            int64_t k_begin, int64_t k_end, RowOf row_of, ColOf col_of, Load load) {
  const int tid = threadIdx.x;
  if constexpr (kAlongRows) {
    const int64_t r = r0 + tid % kBM;
    const bool rv = r < rows;
    const auto row = row_of(rv ? r : 0);
#pragma unroll
    for (int i = 0; i < kElems; ++i) {
      const int64_t k = kbase + tid / kBM + 2 * i;
      regs[i] = Elem<T>::bits(rv && k < k_end ? load(row, col_of(k)) : T(0));
    }
  } else {
    const int64_t k = kbase + tid % BK;
    const bool kv = k < k_end;
    const auto col = col_of(kv ? k : k_begin);
#pragma unroll
    for (int i = 0; i < kElems; ++i) {
      const int64_t r = r0 + tid / BK + (kThreads / BK) * i;
      regs[i] = Elem<T>::bits(kv && r < rows ? load(row_of(r), col) : T(0));
    }
  }
}

// The registers of gather_tile into a [k][row] shared-memory stage, by the same mapping.
template <bool kAlongRows, typename E, int kElems, int BK, int LD>
__device__ __forceinline__ void stash_tile(const E (&regs)[kElems], E (&tile)[BK][LD]) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < kElems; ++i) {
    if constexpr (kAlongRows) tile[tid / kBM + 2 * i][tid % kBM] = regs[i];
    else tile[tid % BK][tid / BK + (kThreads / BK) * i] = regs[i];
  }
}

template <typename P>
__device__ __forceinline__ void mainloop(P& p) {
  using T = typename P::scalar_t;
  using E = typename Elem<T>::type;
  constexpr int BK = Elem<T>::kBK, KS = Elem<T>::kKStep;
  constexpr int LDA = kBM + kPad, LDB = kBN + kPad;
  constexpr int kAElems = kBM * BK / kThreads, kBElems = kBN * BK / kThreads;
  __shared__ __align__(16) E As[2][BK][LDA];
  __shared__ __align__(16) E Bs[2][BK][LDB];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = (warp % 2) * 32, wn = (warp / 2) * 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM, n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t ktiles = (p.k_end - p.k_begin + BK - 1) / BK;

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.f;

  // A and (unless packed) B pass through registers: gather_tile, then stash_tile into the other stage.
  E ra[kAElems], rb[kBElems];
  auto gather_a = [&](int64_t kt) {
    gather_tile<T, BK, P::kAlongM>(
        ra, m0, p.M, p.k_begin + kt * BK, p.k_begin, p.k_end, [&](int64_t m) { return p.row_a(m); },
        [&](int64_t k) { return p.col_a(k); }, [&](const auto& r, const auto& c) { return p.load_a(r, c); });
  };
  auto stash_a = [&](int buf) { stash_tile<P::kAlongM>(ra, As[buf]); };
  auto gather_b = [&](int64_t kt) {
    if constexpr (!P::kPackedB)
      gather_tile<T, BK, P::kBAlongN>(
          rb, n0, p.N, p.k_begin + kt * BK, p.k_begin, p.k_end, [&](int64_t n) { return p.row_b(n); },
          [&](int64_t k) { return p.col_b(k); }, [&](const auto& r, const auto& c) { return p.load_b(r, c); });
  };
  auto stash_b = [&](int buf) {
    if constexpr (!P::kPackedB) stash_tile<P::kBAlongN>(rb, Bs[buf]);
  };
  // Packed B: BK rows of 64 elements = 256 chunks of 16 bytes, two per thread.
  auto copy_b_async = [&](int64_t kt, int buf) {
    if constexpr (P::kPackedB) {
      constexpr int kPerChunk = 16 / sizeof(E), kChunksPerRow = kBN / kPerChunk;
#pragma unroll
      for (int c = tid; c < BK * kChunksPerRow; c += kThreads) {
        const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * kPerChunk;
        mma::cp_async_16(&Bs[buf][r][col], p.b_packed(p.k_begin + kt * BK + r, n0 + col));
      }
      mma::cp_async_commit();
    }
  };

  auto compute = [&](int buf) {
#pragma unroll
    for (int ks = 0; ks < BK; ks += KS) {
      uint32_t af[2][4], bf[4][2];
      if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int m = wm + i * 16 + g;
          af[i][0] = As[buf][ks + t][m];
          af[i][1] = As[buf][ks + t][m + 8];
          af[i][2] = As[buf][ks + t + 4][m];
          af[i][3] = As[buf][ks + t + 4][m + 8];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          bf[j][0] = Bs[buf][ks + t][wn + j * 8 + g];
          bf[j][1] = Bs[buf][ks + t + 4][wn + j * 8 + g];
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma::m16n8k8_tf32(acc[i][j], af[i], bf[j]);
      } else {
        // ldmatrix x4: lanes 8q..8q+7 address the rows of matrix q.
        const int q = lane / 8, r = lane % 8;
#pragma unroll
        for (int i = 0; i < 2; ++i)  // matrices (m +0/+8) x (k +0/+8) -> a0a1, a2a3, a4a5, a6a7
          mma::ldmatrix_x4_trans(af[i], &As[buf][ks + (q >> 1) * 8 + r][wm + i * 16 + (q & 1) * 8]);
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {  // matrices (k +0/+8) x (n +0/+8) -> b of two n8 tiles
          uint32_t v[4];
          mma::ldmatrix_x4_trans(v, &Bs[buf][ks + (q & 1) * 8 + r][wn + jp * 16 + (q >> 1) * 8]);
          bf[2 * jp][0] = v[0];
          bf[2 * jp][1] = v[1];
          bf[2 * jp + 1][0] = v[2];
          bf[2 * jp + 1][1] = v[3];
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma::m16n8k16<std::is_same_v<T, c10::BFloat16>>(acc[i][j], af[i], bf[j]);
      }
    }
  };

  if (ktiles > 0) {
    gather_a(0);
    gather_b(0);
    copy_b_async(0, 0);
    stash_a(0);
    stash_b(0);
    mma::cp_async_wait<0>();
    __syncthreads();
  }
  for (int64_t kt = 0; kt < ktiles; ++kt) {
    const int cur = static_cast<int>(kt & 1);
    const bool more = kt + 1 < ktiles;
    // The other stage was last read before the barrier that ended the previous iteration.
    if (more) {
      copy_b_async(kt + 1, cur ^ 1);
      gather_a(kt + 1);
      gather_b(kt + 1);
    }
    compute(cur);
    if (more) {
      stash_a(cur ^ 1);
      stash_b(cur ^ 1);
    }
    mma::cp_async_wait<0>();
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t m = m0 + wm + i * 16 + g + (c >> 1) * 8, n = n0 + wn + j * 8 + 2 * t + (c & 1);
        if (m < p.M && n < p.N) p.store(m, n, acc[i][j][c]);
      }
}

// The launch shape of one call: x tiles over the largest sub-problem's M, y over N, z sub-problems.
struct Grid {
  unsigned int x, y, z;
};
inline Grid grid_for(int64_t max_m, int64_t n, int64_t problems) {
  return Grid{static_cast<unsigned int>((max_m + kBM - 1) / kBM), static_cast<unsigned int>((n + kBN - 1) / kBN),
              static_cast<unsigned int>(problems)};
}
// Calls f(T{}, index_t{}, std::bool_constant<kNHWC>{}) for the instantiation a call needs: its scalar type
// (float16, bfloat16, float32; float64 raises, naming `op`), 32- or 64-bit indices, NCHW or NHWC images.
template <typename F>
void dispatch(at::ScalarType t, const char* op, bool small, bool nhwc, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t, "conv_transpose2d_gemm", [&] {
    if constexpr (std::is_same_v<scalar_t, double>) {
      TORCH_CHECK(false, "the tensor-core ", op, " takes float16, bfloat16 and float32 (TF32), got double");
    } else {
      if (small && nhwc) f(scalar_t{}, int32_t{}, std::true_type{});
      else if (small) f(scalar_t{}, int32_t{}, std::false_type{});
      else if (nhwc) f(scalar_t{}, int64_t{}, std::true_type{});
      else f(scalar_t{}, int64_t{}, std::false_type{});
    }
  });
}

// The largest grid this path launches (CUDA's limits on y and z); choose_path checks it first.
inline bool grid_fits(int64_t max_m, int64_t n, int64_t problems) {
  return (max_m + kBM - 1) / kBM < (int64_t{1} << 31) && (n + kBN - 1) / kBN <= 65535 && problems <= 65535;
}

}  // namespace igemm
}  // namespace cuda
}  // namespace deconv_ext
