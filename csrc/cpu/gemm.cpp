// GEMM kernels for many channels (see fast_paths.h for when they are used).
//
// With the weight of group g viewed as a matrix Wg (cig x cog*kH*kW):
//   forward      Z = Wg^T X            (cog*kH*kW x columns), then col2im: y[oh, ow] += Z[tap, (ih, iw)]
//   grad_input   gx = Wg C             C = im2col(gy): C[tap, (ih, iw)] = gy[ih*sH - pH + kh*dH, ...] or 0
//                                      (gathered from gy split into column phases: contiguous copies)
//   grad_weight  gw_g += X C^T
// where the columns are input pixels (n, ih, iw). The GEMMs go to BLAS through at::mm / addmm_ (float32,
// float64). bfloat16 images and weights go to gemm_tiles.cpp (no column buffer there). The
// column buffer Z or C is cog*kH*kW times the number of columns, so the columns are processed in chunks
// (whole images, or rows of one image) that keep it near the output size: no K*K*input buffer.
// col2im is parallel over (image, channel) planes and im2col over buffer rows, each element written by
// one thread in a fixed order, so results are deterministic.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "fast_paths.h"
#include "strided.h"

namespace deconv_ext {
namespace cpu {
namespace {

// The chunk's columns of channels [c0, c0 + count) of a (N, C, H_in, W_in) tensor as a (count, columns)
// matrix: a view for one image, a copy otherwise.
at::Tensor columns_of(const at::Tensor& t, const Chunk& c, int64_t c0, int64_t count) {
  if (c.images == 1) return t.select(0, c.n0).narrow(0, c0, count).narrow(1, c.ih0, c.rows).reshape({count, -1});
  return t.narrow(0, c.n0, c.images).narrow(1, c0, count).transpose(0, 1).reshape({count, -1});
}

// gy NCHW, or channels_last (nhwc: a row's values C_out apart).
template <typename scalar_t>
void deinterleave_impl(const ConvT2dShape& s, const scalar_t* src, bool nhwc, int64_t Wd, scalar_t* dst) {
  const int64_t rows = s.N * s.C_out * s.H_out, step = s.sW * (nhwc ? s.C_out : 1);
  const bool avx2 = isa_level() >= 1;  // (read once: isa_level() reads the environment)
  // Phase r's slots [j0, j1) hold gy values; the rest of its Wd are zeros.
  auto filled = [&](int64_t r) {
    const int64_t j0 = std::min(Wd, std::max<int64_t>(0, ceil_div(s.pW - r, s.sW)));
    return std::pair<int64_t, int64_t>{j0, std::max(j0, std::min(Wd, floor_div(s.W_out - 1 + s.pW - r, s.sW) + 1))};
  };
#if defined(__x86_64__)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (avx2 && !nhwc && s.sW == 2) {
      // Stride 2 (DCGAN-like), NCHW: each row split into its evens and odds in vectors, into two zero-bordered
      // buffers, then d[j] = gy[row][2 j + r - pW] = that parity's (2 j + r - pW) / 2-th value is one copy of
      // Wd values per phase. On DCGAN's rows of 16 the strided loop below, per phase and with its fills,
      // took 2.5 ms of a 32 ms grad_input (8 MB of gy: a plain copy takes 0.3).
      const int64_t left = (s.pW + 1) / 2, half = (s.W_out + 1) / 2, span = left + std::max(half, Wd);
      parallel_tasks(rows, std::max<int64_t>(1, 16384 / (s.sW * Wd)), [&](int64_t r0, int64_t r1) {
        std::vector<float> buf(2 * span, 0.f);  // evens at buf + left, odds at buf + span + left; 0 around
        for (int64_t t = r0; t < r1; ++t) {
          split_even_odd_avx2(src + t * s.W_out, s.W_out, buf.data() + left, buf.data() + span + left);
          for (int64_t r = 0; r < 2; ++r) {
            const int64_t q = r - s.pW, m = floor_div(q, 2);  // parity q - 2 m, first value m (-left <= m <= 0)
            std::memcpy(dst + (t * 2 + r) * Wd, buf.data() + (q - 2 * m) * span + left + m, Wd * sizeof(float));
          }
        }
      });
      return;
    }
  }
#endif
  if (nhwc && s.C_out <= 32) {
    // channels_last with few channels (the direct path's layers): per gy row (n, oh) and phase, each pixel's
    // C_out values (contiguous) to their rows: one strided read per (co, phase) row instead took 12% of
    // DCGAN 64->3's channels_last grad_input.
    const int64_t cs = s.H_out * s.sW * Wd;  // between two channels' rows
    parallel_tasks(s.N * s.H_out, std::max<int64_t>(1, 16384 / (s.C_out * s.sW * Wd)), [&](int64_t r0, int64_t r1) {
      for (int64_t t = r0; t < r1; ++t) {
        const int64_t n = t / s.H_out, oh = t % s.H_out;
        const scalar_t* base = src + t * s.W_out * s.C_out;
        for (int64_t r = 0; r < s.sW; ++r) {
          scalar_t* d = dst + ((n * s.C_out * s.H_out + oh) * s.sW + r) * Wd;  // channel co's row at d + co cs
          const auto [j0, j1] = filled(r);
          for (int64_t co = 0; co < s.C_out; ++co) {
            std::fill(d + co * cs, d + co * cs + j0, scalar_t(0));
            std::fill(d + co * cs + j1, d + co * cs + Wd, scalar_t(0));
          }
          const scalar_t* g = base + (r - s.pW) * s.C_out;  // pixel j of the phase at g + j sW C_out
          const auto copy = [&](auto channels) {  // the channel count as a constant where it is 1-4
            constexpr int64_t C = decltype(channels)::value;
            const int64_t nc = C > 0 ? C : s.C_out, step = s.sW * nc;
            for (int64_t j = j0; j < j1; ++j)
              for (int64_t co = 0; co < nc; ++co) d[co * cs + j] = g[j * step + co];
          };
          switch (s.C_out) {
            case 1: copy(std::integral_constant<int64_t, 1>{}); break;
            case 2: copy(std::integral_constant<int64_t, 2>{}); break;
            case 3: copy(std::integral_constant<int64_t, 3>{}); break;
            case 4: copy(std::integral_constant<int64_t, 4>{}); break;
            default: copy(std::integral_constant<int64_t, 0>{});
          }
        }
      }
    });
    return;
  }
  // Otherwise one strided read per row. Rows in the order of gy's memory: (n, co, oh) for NCHW; (n, oh, co)
  // for channels_last, so that a task's rows share the W_out x C_out block of gy they read (cache lines)
  // instead of striding through all of gy.
  parallel_tasks(rows, std::max<int64_t>(1, 16384 / (s.sW * Wd)), [&](int64_t r0, int64_t r1) {
    for (int64_t t = r0; t < r1; ++t) {
      const int64_t co = nhwc ? t % s.C_out : (t / s.H_out) % s.C_out, oh = nhwc ? (t / s.C_out) % s.H_out : t % s.H_out;
      const int64_t n = t / (s.H_out * s.C_out), row = (n * s.C_out + co) * s.H_out + oh;
      const scalar_t* base = nhwc ? src + ((n * s.H_out + oh) * s.W_out) * s.C_out + co : src + row * s.W_out;
      for (int64_t r = 0; r < s.sW; ++r) {
        scalar_t* d = dst + (row * s.sW + r) * Wd;
        // d[j] = gy[row][sW*j + r - pW]
        const scalar_t* g = base + (r - s.pW) * (nhwc ? s.C_out : 1);
        const auto [j0, j1] = filled(r);
        std::fill(d, d + j0, scalar_t(0));
        strided_values(g + step * j0, step, j1 - j0, d + j0, avx2);
        std::fill(d + j1, d + Wd, scalar_t(0));
      }
    }
  });
}

// The W_in values of row r = (col*kH + kh)*kW + kw of C (below) for input row (n, ih): a contiguous run of
// the deinterleaved gy, or nullptr where the tap row falls outside the output (zeros).
template <typename scalar_t>
const scalar_t* im2col_source(const ConvT2dShape& s, const scalar_t* gyd, int64_t Wd, int64_t g, int64_t r,
                              int64_t n, int64_t ih) {
  const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW;
  const int64_t kw = r % s.kW, kh = (r / s.kW) % s.kH, co = g * cog + r / kk;
  const int64_t oh = ih * s.sH - s.pH + kh * s.dH;
  if (oh < 0 || oh >= s.H_out) return nullptr;
  return gyd + (((n * s.C_out + co) * s.H_out + oh) * s.sW + kw * s.dW % s.sW) * Wd + kw * s.dW / s.sW;
}

// C[(col*kH + kh)*kW + kw, column] = gy[n, g*cog + col, ih*sH - pH + kh*dH, iw*sW - pW + kw*dW] or 0,
// copied row by row from the deinterleaved gy (so every copy is contiguous).
template <typename scalar_t>
at::Tensor im2col(const ConvT2dShape& s, const at::Tensor& gyd, int64_t Wd, int64_t g, const Chunk& c) {
  const int64_t taps = s.cout_per_group() * s.kH * s.kW, cols = c.columns(s);
  auto buf = at::empty({taps, cols}, gyd.options());
  const scalar_t* src = gyd.const_data_ptr<scalar_t>();
  scalar_t* dst = buf.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, taps, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      scalar_t* d = dst + r * cols;
      for (int64_t n = c.n0; n < c.n0 + c.images; ++n)
        for (int64_t ih = c.ih0; ih < c.ih0 + c.rows; ++ih, d += s.W_in) {
          const scalar_t* row = im2col_source(s, src, Wd, g, r, n, ih);
          if (row) std::copy(row, row + s.W_in, d);
          else std::fill(d, d + s.W_in, scalar_t(0));
        }
    }
  });
  return buf;
}

// y[n, g*cog + col] += col2im(Z) over the chunk's columns.
template <typename scalar_t>
void col2im_add(const ConvT2dShape& s, const at::Tensor& z, int64_t g, const Chunk& c, scalar_t* y) {
  const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW, cols = c.columns(s);
  const scalar_t* zp = z.const_data_ptr<scalar_t>();
  at::parallel_for(0, c.images * cog, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t col = p % cog, n = c.n0 + p / cog;
      scalar_t* plane = y + (n * s.C_out + g * cog + col) * s.H_out * s.W_out;
      const scalar_t* zc = zp + col * kk * cols + (p / cog) * c.rows * s.W_in;
      for (int64_t ih = c.ih0; ih < c.ih0 + c.rows; ++ih) {
        for (int64_t kh = 0; kh < s.kH; ++kh) {
          const int64_t oh = ih * s.sH - s.pH + kh * s.dH;
          if (oh < 0 || oh >= s.H_out) continue;
          for (int64_t kw = 0; kw < s.kW; ++kw) {
            const Range iw = inputs_for_tap(kw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
            const scalar_t* zr = zc + (kh * s.kW + kw) * cols + (ih - c.ih0) * s.W_in;
            scalar_t* yr = plane + oh * s.W_out - s.pW + kw * s.dW;
            for (int64_t i = iw.begin; i < iw.end; ++i) yr[i * s.sW] += zr[i];
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void forward_impl(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW, plane = s.H_out * s.W_out;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const scalar_t* bp = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
  at::parallel_for(0, s.N * s.C_out, std::max<int64_t>(1, 65536 / plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) std::fill(yp + p * plane, yp + (p + 1) * plane, bp ? bp[p % s.C_out] : scalar_t(0));
  });
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto wt = w.narrow(0, g * cig, cig).reshape({cig, cog * kk}).t();
    for_each_chunk(s, cog * kk, [&](const Chunk& c) {
      const auto z = at::mm(wt, columns_of(x, c, g * cig, cig));
      col2im_add<scalar_t>(s, z, g, c, yp);
    });
  }
}

template <typename scalar_t>
void grad_input_impl(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  const int64_t Wd = s.W_in + (s.kW - 1) * s.dW / s.sW;
  const auto gyd = deinterleave_columns(s, gy, Wd);
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto wg = w.narrow(0, g * cig, cig).reshape({cig, cog * kk});
    for_each_chunk(s, cog * kk, [&](const Chunk& c) {
      const auto r = at::mm(wg, im2col<scalar_t>(s, gyd, Wd, g, c));
      if (c.images == 1)
        gx.select(0, c.n0).narrow(0, g * cig, cig).narrow(1, c.ih0, c.rows).copy_(r.view({cig, c.rows, s.W_in}));
      else
        gx.narrow(0, c.n0, c.images).narrow(1, g * cig, cig).copy_(r.view({cig, c.images, s.H_in, s.W_in}).transpose(0, 1));
    });
  }
}

template <typename scalar_t>
void grad_weight_impl(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  const int64_t Wd = s.W_in + (s.kW - 1) * s.dW / s.sW;
  const auto gyd = deinterleave_columns(s, gy, Wd);
  gw.zero_();
  for (int64_t g = 0; g < s.groups; ++g) {
    auto gwg = gw.narrow(0, g * cig, cig).view({cig, cog * kk});
    for_each_chunk(s, cog * kk, [&](const Chunk& c) {
      gwg.addmm_(columns_of(x, c, g * cig, cig), im2col<scalar_t>(s, gyd, Wd, g, c).t());
    });
  }
}

}  // namespace

bool use_tiles(at::ScalarType t) {
  return (t == at::kBFloat16 && bf16_gemm_available()) || (t == at::kFloat && isa_level() >= 1);
}

namespace {
// The deinterleaved gy of the backward call in progress on this thread (share_deinterleaved_gy): the last
// one built, kept while a scope is open, and returned again for the same gy buffer, layout and Wd.
struct SharedGy {
  int scopes = 0;
  at::Tensor gy, out;  // gy: the buffer it was built from (held, so its address cannot be reused meanwhile)
  int64_t Wd = 0;
};
thread_local SharedGy shared_gy;

bool same_buffer(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.const_data_ptr() == b.const_data_ptr() && a.sizes() == b.sizes() &&
         a.strides() == b.strides() && a.scalar_type() == b.scalar_type();
}
}  // namespace

std::shared_ptr<void> share_deinterleaved_gy() {
  ++shared_gy.scopes;
  return std::shared_ptr<void>(nullptr, [](void*) {
    if (--shared_gy.scopes == 0) shared_gy = SharedGy{};
  });
}

at::Tensor deinterleave_columns(const ConvT2dShape& s, const at::Tensor& gy, int64_t Wd) {
  if (shared_gy.scopes > 0 && shared_gy.Wd == Wd && same_buffer(shared_gy.gy, gy)) return shared_gy.out;
  auto out = scratch(Scratch::deinterleaved_gy, s.N * s.C_out * s.H_out * s.sW * Wd, gy.options())
                 .view({s.N * s.C_out * s.H_out, s.sW, Wd});
  const bool nhwc = !gy.is_contiguous();
  if (gy.scalar_type() == at::kDouble)
    deinterleave_impl<double>(s, gy.const_data_ptr<double>(), nhwc, Wd, out.mutable_data_ptr<double>());
  else
    deinterleave_impl<float>(s, gy.const_data_ptr<float>(), nhwc, Wd, out.mutable_data_ptr<float>());
  if (shared_gy.scopes > 0) shared_gy.gy = gy, shared_gy.out = out, shared_gy.Wd = Wd;
  return out;
}

void gemm_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
  if (x.scalar_type() == at::kDouble) return forward_impl<double>(s, x, w, b, y);
  if (use_tiles(x.scalar_type())) return tiled_forward(s, x, w, b, y);
  forward_impl<float>(s, x, w, b, y);
}
void gemm_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  if (gy.scalar_type() == at::kDouble) return grad_input_impl<double>(s, gy, w, gx);
  if (use_tiles(gy.scalar_type())) return tiled_grad_input(s, gy, w, gx);
  grad_input_impl<float>(s, gy, w, gx);
}
void gemm_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  if (x.scalar_type() == at::kDouble) return grad_weight_impl<double>(s, gy, x, gw);
  if (use_tiles(x.scalar_type())) return tiled_grad_weight(s, gy, x, gw);
  grad_weight_impl<float>(s, gy, x, gw);
}

}  // namespace cpu
}  // namespace deconv_ext
