// bfloat16 GEMMs with float32 results for the gemm paths (gemm.cpp, gemm_nhwc.cpp): C (+)= A B with A, B
// bfloat16 and C float32, on the CPU's AVX512-BF16 dot-product instructions through oneDNN's BRGEMM
// micro-kernel, which PyTorch exports (at::native::cpublas::brgemm: bf16 x bf16 -> f32, JIT-generated per
// block shape and cached per thread). Every product of two bfloat16 values is exact in float32 and the sums
// are float32, so this is the numerical contract of the widened float32 path (float accumulation, one
// rounding at the end), at about twice the speed of the float32 GEMM and with no widened copies of the
// images. One difference: the instruction treats subnormal inputs and results as zero (as oneDNN's own
// bfloat16 convolutions do).
//
// Layout: the micro-kernel wants B in the "VNNI" layout, pairs of rows interleaved (Bv[k/2][n][k%2] =
// B[k][n]), so K is padded to even with a zero row (and A with a zero column). A is used in place when its
// rows are contiguous and K is even, else copied. C is split into blocks of kMB x kNB, the parallel tasks;
// each block is one micro-kernel call over the whole K, so every element of C is one sum in a fixed
// order: results do not depend on the thread count.
//
// Used when bf16_gemm_available(): the CPU has AVX512-BF16 and the direct kernels' ISA is not capped below
// AVX-512 (DECONV_EXT_CPU_ISA), mkldnn is enabled (torch.backends.mkldnn), and a first small product agrees
// with float32. CPUs with AMX are left on the widened float32 path: there oneDNN wants B in its own packed
// tile layout (cpublas::pack), which has not been tested here.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <atomic>
#include <cmath>

#include "fast_paths.h"

namespace deconv_ext {
namespace cpu {
namespace {

constexpr int64_t kMB = 64, kNB = 128;

bool hardware_has_bf16_dot() {
#if defined(__x86_64__)
  static const bool ok = __builtin_cpu_supports("avx512bf16") && !__builtin_cpu_supports("amx-bf16");
  return ok;
#else
  return false;
#endif
}

// The rows of `a` (M x K) as the micro-kernel reads them: row-major with an even number of columns.
at::Tensor rows_for_kernel(const at::Tensor& a, int64_t Kp) {
  const int64_t M = a.size(0), K = a.size(1);
  if (K == Kp && a.stride(1) == 1 && a.stride(0) >= K) return a;
  auto out = at::empty({M, Kp}, a.options().memory_format(c10::MemoryFormat::Contiguous));
  out.narrow(1, 0, K).copy_(a);
  if (Kp > K) out.narrow(1, K, Kp - K).zero_();
  return out;
}

// The micro-kernel over blocks of C. a: (M x Kp) rows with unit stride; b: packed.
void run_blocks(const at::Tensor& a, const PackedB& b, float* c, int64_t ldc, bool add) {
  const int64_t M = a.size(0), N = b.N, Kp = b.Kp, lda = a.stride(0);
  const int64_t mb = (M + kMB - 1) / kMB, nb = (N + kNB - 1) / kNB;
  const auto* ap = a.const_data_ptr<at::BFloat16>();
  const auto* bp = b.data.const_data_ptr<at::BFloat16>();
  parallel_tasks(mb * nb, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = (t / nb) * kMB, j = (t % nb) * kNB;
      const int64_t m = std::min(kMB, M - i), n = std::min(kNB, N - j);
      at::native::cpublas::brgemm(m, n, Kp, lda, N, ldc, add, ap + i * lda, bp + 2 * j, c + i * ldc + j,
                                  /*is_vnni=*/true);
    }
  });
}

bool self_test() {
  try {
    // Odd sizes on purpose: K padding, partial blocks, A copied.
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    auto af = at::arange(5 * 7, opts).reshape({5, 7}).sub_(17).mul_(0.25);
    auto bf = at::arange(7 * 3, opts).reshape({7, 3}).sub_(9).mul_(0.5);
    auto c = at::empty({5, 3}, opts);
    run_blocks(rows_for_kernel(af.to(at::kBFloat16), 8), pack_b(bf.to(at::kBFloat16)), c.mutable_data_ptr<float>(), 3,
               false);
    return c.equal(at::mm(af, bf));  // small integers times powers of two: exact either way
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

bool bf16_gemm_available() {
  if (!hardware_has_bf16_dot() || isa_level() < 2 || !at::globalContext().userEnabledMkldnn()) return false;
  static const bool works = self_test();
  return works;
}

PackedB pack_b(const at::Tensor& b) {
  const int64_t K = b.size(0), N = b.size(1), Kp = K + (K & 1);
  auto data = at::empty({Kp / 2, N, 2}, b.options().memory_format(c10::MemoryFormat::Contiguous));
  const auto* src = b.const_data_ptr<at::BFloat16>();
  auto* dst = data.mutable_data_ptr<at::BFloat16>();
  const int64_t sk = b.stride(0), sn = b.stride(1);
  parallel_tasks(Kp / 2, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, N)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const at::BFloat16* r0 = src + 2 * p * sk;
      at::BFloat16* d = dst + p * N * 2;
      if (2 * p + 1 < K) {
        const at::BFloat16* r1 = r0 + sk;
        for (int64_t n = 0; n < N; ++n) d[2 * n] = r0[n * sn], d[2 * n + 1] = r1[n * sn];
      } else {
        for (int64_t n = 0; n < N; ++n) d[2 * n] = r0[n * sn], d[2 * n + 1] = at::BFloat16(0.f);
      }
    }
  });
  return PackedB{data, K, Kp, N};
}

void bf16_gemm(const at::Tensor& a, const PackedB& b, const at::Tensor& c, bool add) {
  TORCH_INTERNAL_ASSERT(a.scalar_type() == at::kBFloat16 && (a.size(1) == b.K || a.size(1) == b.Kp) &&
                        c.scalar_type() == at::kFloat &&
                        c.size(0) == a.size(0) && c.size(1) == b.N && c.stride(1) == 1);
  if (a.size(0) == 0 || b.N == 0) return;
  if (b.K == 0) {
    if (!add) c.zero_();
    return;
  }
  run_blocks(rows_for_kernel(a, b.Kp), b, c.mutable_data_ptr<float>(), c.stride(0), add);
}

at::Tensor mm_acc(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != at::kBFloat16) return at::mm(a, b);
  auto c = at::empty({a.size(0), b.size(1)}, a.options().dtype(at::kFloat));
  bf16_gemm(a, pack_b(b), c, false);
  return c;
}

void addmm_acc_(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != at::kBFloat16) {
    c.addmm_(a, b);
    return;
  }
  if (c.stride(1) == 1) return bf16_gemm(a, pack_b(b), c, true);
  c.add_(mm_acc(a, b));
}

}  // namespace cpu
}  // namespace deconv_ext
