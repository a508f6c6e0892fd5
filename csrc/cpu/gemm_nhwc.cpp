// The gemm path on channels_last (NHWC) images, with no layout conversion: NHWC is the GEMM formulation's
// natural layout, an image being a (pixels x channels) row-major matrix.
//
// The weight of group g is repacked once per call as Wp (cig x kH*kW*cog), columns ordered (tap, co), so
// that one tap's output channels are contiguous, as they are in an NHWC image. With X_g the (pixels x cig)
// column block of the input (a strided view, no copy):
//   forward      Z = X_g Wp (pixels x taps*cog), then col2im: y[n, oh, ow, g*cog + :] += Z[(n, ih, iw), tap*cog + :]
//   grad_input   gx[:, g*cig + :] = C Wp^T    C = im2col(gy): C[(n, ih, iw), tap*cog + :] = gy[n, oh, ow, g*cog + :]
//   grad_weight  gw_g = X_g^T C
// (oh = ih*sH - pH + kh*dH, ow likewise; zero outside the image). Every copy and add runs over cog
// contiguous channels. Pixels are processed in chunks (whole images or rows of one) that keep Z or C
// near the output's size. col2im is parallel over output rows, each written by one thread in a fixed
// order (chunks in sequence), so results are deterministic; at::mm may block its sums differently with
// the thread count, as on the NCHW gemm path. This is the float64 route (and float32's with the ISA capped at
// baseline); float32 and native bfloat16 take the tiled kernels of gemm_tiles.cpp (tiled_nhwc_*).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include "fast_paths.h"

namespace deconv_ext {
namespace cpu {
namespace {

// Wp[ci][tap*cog + co] = w[g*cig + ci][co][tap]
at::Tensor packed_weight(const ConvT2dShape& s, const at::Tensor& w, int64_t g) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  return w.narrow(0, g * cig, cig).reshape({cig, cog, kk}).transpose(1, 2).contiguous().view({cig, kk * cog});
}

// The pixels' rows of an NHWC image as a (pixels x count) matrix of channels [c0, c0 + count): a view.
at::Tensor pixel_rows(const ConvT2dShape& s, const at::Tensor& t, const Chunk& p, int64_t c0, int64_t count) {
  const int64_t C = t.size(1);
  return t.as_strided({p.columns(s), count}, {C, 1}, t.storage_offset() + p.first_column(s) * C + c0);
}

template <typename scalar_t>
void col2im_add(const ConvT2dShape& s, const at::Tensor& z, int64_t g, const Chunk& p, scalar_t* y) {
  const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW, ld = kk * cog;
  const scalar_t* zp = z.const_data_ptr<scalar_t>();
  // The output rows this chunk reaches: those of its images, between its first and last input row's taps.
  const int64_t oh_lo = std::max<int64_t>(0, p.ih0 * s.sH - s.pH);
  const int64_t oh_hi = std::min<int64_t>(s.H_out, (p.ih0 + p.rows - 1) * s.sH - s.pH + (s.kH - 1) * s.dH + 1);
  if (oh_hi <= oh_lo) return;
  const int64_t span = oh_hi - oh_lo;
  at::parallel_for(0, p.images * span, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = p.n0 + r / span, oh = oh_lo + r % span;
      scalar_t* yrow = y + ((n * s.H_out + oh) * s.W_out) * s.C_out + g * cog;
      for (int64_t kh = 0; kh < s.kH; ++kh) {
        const int64_t num = oh + s.pH - kh * s.dH;
        if (num < 0 || num % s.sH != 0) continue;
        const int64_t ih = num / s.sH;
        if (ih < p.ih0 || ih >= p.ih0 + p.rows || ih >= s.H_in) continue;
        const scalar_t* zrow = zp + (((n - p.n0) * p.rows + ih - p.ih0) * s.W_in) * ld + kh * s.kW * cog;
        for (int64_t kw = 0; kw < s.kW; ++kw) {
          const Range iw = inputs_for_tap(kw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
          for (int64_t i = iw.begin; i < iw.end; ++i) {
            scalar_t* yp = yrow + (i * s.sW - s.pW + kw * s.dW) * s.C_out;
            const scalar_t* zr = zrow + i * ld + kw * cog;
            for (int64_t c = 0; c < cog; ++c) yp[c] += zr[c];
          }
        }
      }
    }
  });
}

// C[(pixel), tap*cog + co] = gy[n, oh, ow, g*cog + co] or 0.
template <typename scalar_t>
at::Tensor im2col(const ConvT2dShape& s, const at::Tensor& gy, int64_t g, const Chunk& p) {
  const int64_t cog = s.cout_per_group(), kk = s.kH * s.kW, ld = kk * cog, rows = p.images * p.rows;
  auto buf = at::empty({p.columns(s), ld}, gy.options().memory_format(c10::MemoryFormat::Contiguous));
  const scalar_t* src = gy.const_data_ptr<scalar_t>();
  scalar_t* dst = buf.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = p.n0 + r / p.rows, ih = p.ih0 + r % p.rows;
      scalar_t* drow = dst + r * s.W_in * ld;
      for (int64_t iw = 0; iw < s.W_in; ++iw)
        for (int64_t kh = 0; kh < s.kH; ++kh) {
          const int64_t oh = ih * s.sH - s.pH + kh * s.dH;
          for (int64_t kw = 0; kw < s.kW; ++kw) {
            const int64_t ow = iw * s.sW - s.pW + kw * s.dW;
            scalar_t* d = drow + iw * ld + (kh * s.kW + kw) * cog;
            if (oh < 0 || oh >= s.H_out || ow < 0 || ow >= s.W_out) {
              std::fill(d, d + cog, scalar_t(0));
            } else {
              const scalar_t* g0 = src + ((n * s.H_out + oh) * s.W_out + ow) * s.C_out + g * cog;
              std::copy(g0, g0 + cog, d);
            }
          }
        }
    }
  });
  return buf;
}

template <typename scalar_t>
void forward_impl(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& y) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const scalar_t* bp = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
  const int64_t pixels = s.N * s.H_out * s.W_out;
  at::parallel_for(0, pixels, std::max<int64_t>(1, 65536 / s.C_out), [&](int64_t p0, int64_t p1) {
    for (int64_t q = p0; q < p1; ++q)
      for (int64_t c = 0; c < s.C_out; ++c) yp[q * s.C_out + c] = bp ? bp[c] : scalar_t(0);
  });
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto wp = packed_weight(s, w, g);
    for_each_chunk(s, kk * cog, [&](const Chunk& p) {
      col2im_add<scalar_t>(s, at::mm(pixel_rows(s, x, p, g * cig, cig), wp), g, p, yp);
    });
  }
}

template <typename scalar_t>
void grad_input_impl(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  for (int64_t g = 0; g < s.groups; ++g) {
    const auto wpt = packed_weight(s, w, g).t();
    for_each_chunk(s, kk * cog, [&](const Chunk& p) {
      pixel_rows(s, gx, p, g * cig, cig).copy_(at::mm(im2col<scalar_t>(s, gy, g, p), wpt));
    });
  }
}

template <typename scalar_t>
void grad_weight_impl(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group(), kk = s.kH * s.kW;
  for (int64_t g = 0; g < s.groups; ++g) {
    at::Tensor acc;  // (cig x taps*cog), columns (tap, co)
    for_each_chunk(s, kk * cog, [&](const Chunk& p) {
      const auto xt = pixel_rows(s, x, p, g * cig, cig).t();
      const auto c = im2col<scalar_t>(s, gy, g, p);
      if (acc.defined()) acc.addmm_(xt, c);
      else acc = at::mm(xt, c);
    });
    gw.narrow(0, g * cig, cig).copy_(acc.view({cig, kk, cog}).transpose(1, 2).reshape({cig, cog, s.kH, s.kW}));
  }
}

}  // namespace

void gemm_nhwc_forward(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                       const at::Tensor& y) {
  if (x.scalar_type() == at::kDouble) return forward_impl<double>(s, x, w, b, y);
  // One output channel: y is the same memory in either layout, and the NCHW tiles' scatter (the forward's
  // columns deinterleaved, added a phase row at a time) beats the NHWC one, which adds the taps' single
  // values one by one (16 x 56 x 48 x 48 patches: 4.9 -> 2.6 ms, x transposed to NCHW first). x's blocks of
  // pixels are transposed in cache as they are read (instead of a whole NCHW copy first: FSRCNN-s x2
  // 2.8 -> 2.0 ms).
  // (The forward by phase, where taken, reads channels_last x itself; tiled_forward's NCHW one would not.)
  if (s.C_out == 1 && x.scalar_type() == at::kFloat && use_tiles(at::kFloat) &&
      !forward_by_phase(s, true, at::kFloat) && !forward_by_phase(s, false, at::kFloat))
    return tiled_forward(s, x, w, b, y);
  if (use_tiles(x.scalar_type())) return tiled_nhwc_forward(s, x, w, b, y);
  forward_impl<float>(s, x, w, b, y);
}
void gemm_nhwc_grad_input(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  if (gy.scalar_type() == at::kDouble) return grad_input_impl<double>(s, gy, w, gx);
  if (use_tiles(gy.scalar_type())) return tiled_nhwc_grad_input(s, gy, w, gx);
  grad_input_impl<float>(s, gy, w, gx);
}
void gemm_nhwc_grad_weight(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  if (x.scalar_type() == at::kDouble) return grad_weight_impl<double>(s, gy, x, gw);
  if (use_tiles(x.scalar_type())) return tiled_nhwc_grad_weight(s, gy, x, gw);
  grad_weight_impl<float>(s, gy, x, gw);
}

}  // namespace cpu
}  // namespace deconv_ext
