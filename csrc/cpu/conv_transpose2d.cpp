// The CPU backend of the four deconv_ext ops: its launchers, registered for the CPU dispatch key, and
// the dispatch queries. Each launcher takes the path choose_path() picks (fast_paths.h): direct
// (direct.cpp), gemm (gemm.cpp; gemm_nhwc.cpp for channels_last images, taken as they are) — float16/bfloat16
// on widened float32 copies, bfloat16 on the gemm path natively where the CPU has AVX512-BF16 — or the generic loops
// below, which serve every dtype directly and accumulate in at::opmath_type (float for the half types). Checks, layouts and
// empty tensors are handled once for every backend by the entry layer (csrc/conv_transpose2d.h).
//
// Each output element is reduced by exactly one thread in a fixed order, so the generic loops' results
// are deterministic and independent of the thread count; they need no buffers beyond the result.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../register_backend.h"
#include "fast_paths.h"

namespace deconv_ext {
namespace {

// Work per parallel chunk: aim for ~32k multiply-adds so small problems stay on one thread.
int64_t grain(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// ---- forward: gather over the taps that reach each output pixel ----------------------------------
template <typename scalar_t>
void forward_kernel(const ConvT2dShape& s, const scalar_t* x, const scalar_t* w, const scalar_t* b, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  std::vector<TapRun> cols(s.W_out);
  for (int64_t ow = 0; ow < s.W_out; ++ow) cols[ow] = taps_for_output(ow, s.W_in, s.kW, s.sW, s.pW, s.dW);
  const int64_t rows = s.N * s.C_out * s.H_out;
  at::parallel_for(0, rows, grain(s.W_out * cig * s.kH * s.kW / (s.sH * s.sW) + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % s.H_out, co = (r / s.H_out) % s.C_out, n = r / (s.H_out * s.C_out);
      const int64_t g = co / cog, col = co % cog;
      const TapRun th = taps_for_output(oh, s.H_in, s.kH, s.sH, s.pH, s.dH);
      scalar_t* yrow = y + r * s.W_out;
      for (int64_t ow = 0; ow < s.W_out; ++ow) {
        const TapRun& tw = cols[ow];
        acc_t acc = b ? static_cast<acc_t>(b[co]) : acc_t(0);
        for (int64_t cil = 0; cil < cig; ++cil) {
          const int64_t ci = g * cig + cil;
          const scalar_t* xc = x + (n * s.C_in + ci) * s.H_in * s.W_in;
          const scalar_t* wc = w + (ci * cog + col) * s.kH * s.kW;
          for (int64_t jh = th.j_begin; jh < th.j_end; ++jh) {
            const scalar_t* xr = xc + th.input(jh) * s.W_in;
            const scalar_t* wr = wc + th.tap(jh) * s.kW;
            for (int64_t jw = tw.j_begin; jw < tw.j_end; ++jw)
              acc += static_cast<acc_t>(xr[tw.input(jw)]) * static_cast<acc_t>(wr[tw.tap(jw)]);
          }
        }
        yrow[ow] = static_cast<scalar_t>(acc);
      }
    }
  });
}

// ---- grad_input: direct strided convolution of grad_output with the weight ------------------------
template <typename scalar_t>
void grad_input_kernel(const ConvT2dShape& s, const scalar_t* gy, const scalar_t* w, scalar_t* gx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t rows = s.N * s.C_in * s.H_in;
  at::parallel_for(0, rows, grain(s.W_in * cog * s.kH * s.kW + 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t ih = r % s.H_in, ci = (r / s.H_in) % s.C_in, n = r / (s.H_in * s.C_in);
      const int64_t g = ci / cig;
      const Range kh = taps_for_input(ih, s.H_out, s.kH, s.sH, s.pH, s.dH);
      for (int64_t iw = 0; iw < s.W_in; ++iw) {
        const Range kw = taps_for_input(iw, s.W_out, s.kW, s.sW, s.pW, s.dW);
        acc_t acc(0);
        for (int64_t col = 0; col < cog; ++col) {
          const scalar_t* gyc = gy + (n * s.C_out + g * cog + col) * s.H_out * s.W_out;
          const scalar_t* wc = w + (ci * cog + col) * s.kH * s.kW;
          for (int64_t th = kh.begin; th < kh.end; ++th) {
            const scalar_t* gyr = gyc + (ih * s.sH - s.pH + th * s.dH) * s.W_out + iw * s.sW - s.pW;
            for (int64_t tw = kw.begin; tw < kw.end; ++tw)
              acc += static_cast<acc_t>(gyr[tw * s.dW]) * static_cast<acc_t>(wc[th * s.kW + tw]);
          }
        }
        gx[r * s.W_in + iw] = static_cast<scalar_t>(acc);
      }
    }
  });
}

// ---- grad_weight: per weight element, a reduction over batch and the input positions it touched ----
template <typename scalar_t>
void grad_weight_kernel(const ConvT2dShape& s, const scalar_t* gy, const scalar_t* x, scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cig = s.cin_per_group(), cog = s.cout_per_group();
  const int64_t elems = s.C_in * cog * s.kH * s.kW;
  at::parallel_for(0, elems, grain(s.N * s.H_in * s.W_in + 1), [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t tw = e % s.kW, th = (e / s.kW) % s.kH, col = (e / (s.kW * s.kH)) % cog;
      const int64_t ci = e / (s.kW * s.kH * cog), co = (ci / cig) * cog + col;
      const Range ih = inputs_for_tap(th, s.H_in, s.H_out, s.sH, s.pH, s.dH);
      const Range iw = inputs_for_tap(tw, s.W_in, s.W_out, s.sW, s.pW, s.dW);
      acc_t acc(0);
      for (int64_t n = 0; n < s.N; ++n) {
        const scalar_t* xc = x + (n * s.C_in + ci) * s.H_in * s.W_in;
        const scalar_t* gyc = gy + (n * s.C_out + co) * s.H_out * s.W_out;
        for (int64_t i = ih.begin; i < ih.end; ++i) {
          const scalar_t* xr = xc + i * s.W_in;
          const scalar_t* gyr = gyc + (i * s.sH - s.pH + th * s.dH) * s.W_out + tw * s.dW - s.pW;
          for (int64_t j = iw.begin; j < iw.end; ++j)
            acc += static_cast<acc_t>(xr[j]) * static_cast<acc_t>(gyr[j * s.sW]);
        }
      }
      gw[e] = static_cast<scalar_t>(acc);
    }
  });
}

// ---- launchers ----------------------------------------------------------------------------------------
// float16 and bfloat16 on the float32 paths: the operands are widened to float32 (exact), the float32 path
// computes into a float32 buffer and the result is rounded once into the half-type output — the numerical
// contract of the generic loops (float accumulation, one rounding), at the speed of the float32 kernels.
// The copies cost O(input + output) memory traffic against O(K) multiply-adds per output element.
bool is_half(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

// channels_last: the gemm and direct paths take NHWC images as they are (gemm_nhwc.cpp, gemm_tiles.cpp;
// direct.cpp reads x while building its padded copy or its row buffers, reads gy while deinterleaving it,
// and stores y and gx with NHWC strides). The generic loops get NCHW.
c10::MemoryFormat launch_layout(const ConvT2dShape& s, at::ScalarType t, c10::MemoryFormat preferred) {
  return preferred == c10::MemoryFormat::ChannelsLast && cpu::choose_path(s, t) != cpu::Path::generic
             ? c10::MemoryFormat::ChannelsLast
             : c10::MemoryFormat::Contiguous;
}
at::Tensor widened(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

enum class Op { forward, grad_input, grad_weight };

// Whether a direct-path grad_input's GEMM on the float32 tiles has a K worth it for few input channels (see
// direct_on_tiles): NCHW gx, 48+ taps (cout_per_group kH kW) and strides.
bool grad_input_many_taps(const ConvT2dShape& s, bool nhwc) {
  return !nhwc && s.cout_per_group() * s.kH * s.kW >= 48 && s.sH * s.sW > 1;
}

// The NCHW bfloat16 grad_input of one output channel per group with 16+ input channels, 48+ taps and strides
// (the SR layers; see direct_on_tiles), unless a path is forced: on the float32 tiles, widened (their
// gathers copy runs of the column-deinterleaved gy), rather than on the bfloat16 tiles (which gather pairs
// of rows from gy itself) or the direct kernels. FSRCNN-s x3 3.34 -> 2.48 ms, x4 2.31 -> 1.60, FSRCNN x2
// (56 channels) 6.08 -> 3.78.
bool bf16_grad_input_widened_on_tiles(const ConvT2dShape& s, at::ScalarType t, bool nhwc, Op op) {
  return op == Op::grad_input && t == at::kBFloat16 && !cpu::path_forced() && cpu::bf16_gemm_available() &&
         cpu::use_tiles(at::kFloat) && s.cout_per_group() == 1 && s.cin_per_group() >= 16 &&
         grad_input_many_taps(s, nhwc);
}

// bfloat16 on the gemm path with the CPU's bfloat16 dot products (gemm_tiles.cpp): the images and the
// weight are read as they are, only the result is float32 (then rounded once, as on the widened path).
bool native_bf16(const ConvT2dShape& s, cpu::Path p, at::ScalarType t, bool nhwc, Op op) {
  return p == cpu::Path::gemm && t == at::kBFloat16 && cpu::bf16_gemm_available() &&
         !bf16_grad_input_widened_on_tiles(s, t, nhwc, op);
}
at::Tensor operand(const at::Tensor& t, bool native) { return native ? t : widened(t); }

// The direct path's calls that the tiled gemm kernels (gemm_tiles.cpp) run faster, taken there unless a path
// is forced (DECONV_EXT_CPU_PATH; so tests still reach the direct kernels on these shapes). Both need 16+
// input channels per group, so the GEMMs' K is worth it. Measured interleaved, 2 threads, AVX-512:
//   - the forward of narrow images (W_in < 128): the direct kernel's strips then hold only 1-4 vectors.
//     16 x 48x48 SR patches went from 5.9 to 2.4 ms, DCGAN 64->3 from 3.1 to 1.6 ms; channels_last alike.
//     (Wider images stayed direct then: FSRCNN on 256x256 tied in float32 and was 1.5-2x slower on the tiles
//     in channels_last, on one thread per image; see the next item.)
//   - the forward where the tiles' Z has 48+ rows (taps, cout_per_group kH kW): NCHW, or channels_last with
//     one output channel. Since the tiled forward splits one image's output channel into bands of rows (it
//     was one task, on one thread), 1.4-2.2x faster than the direct all-phases kernel: FSRCNN x2/x4 5.3 ->
//     2.5 / 3.1 -> 1.7 ms, FSRCNN-s x2/x3/x4 3.2 -> 1.7 / 3.6 -> 1.9 / 1.9 -> 1.3; channels_last x2/x4
//     1.3-1.4x (one output channel; 64->3 there 3.3x slower on the tiles). 64->3 on 32 channels 1.1x,
//     24->2 k5s2 even, 16->4 k4s2 / 24->3 k4s2 / 16->1 k7s1 / 32->4 k5s1 / 48->2 k6s3 on 256x256 1.3 / 1.6 /
//     2.3 / 1.8 / 2.0x; 16->4 k3s1 (36 taps) even, left direct.
//   - the NCHW forward of wider images with 48+ input channels per group and 2+ output channels per group
//     (the tiles' Z rows, output channels x taps, are then 160+ and the direct strips are narrow), or one
//     output channel with strides of 3+ that the direct all-phases kernel does not take (sW > 4 or dW > 1).
//     gemm / direct time against the plain strips: 64->3 k9 s2 on 128x128 0.84, on 256x256 0.70; 48->2 0.73;
//     128->3 0.78; one output channel at s3/s4 0.79-0.98. Against the all-phases kernel (strides 2-4, up to 4
//     output channels): one output channel 1.5-2.1 (FSRCNN x3/x4, 32 and 56 channels), so it stays direct;
//     2-3 output channels 0.86-1.18 (64->3 1.04, 56->2 s3 0.86, 48->2 1.09, 128->3 1.18), a draw, left on
//     the tiles. Left direct, where it was faster: 32 input channels 1.01-1.64 (one exception: 32->4 k5
//     0.54-0.69); channels_last 1.3-4.6. (Measured before the row bands: the item above now takes these.)
//   - the NCHW grad_input (float32 operands, or widened) with 48+ input channels per group, or where the
//     GEMM's K, the taps cout_per_group kH kW, is 48+. The tiles gather their im2col rows from the
//     column-deinterleaved gy (gemm_tiles.cpp), sharing it with a fused backward's direct grad_weight.
//     gemm / direct time, interleaved: FSRCNN x2/x3/x4 0.91/0.89/0.85, 16 x 48x48 patches 0.89, the RGB
//     layer 0.95, DCGAN 64->3 0.81 (whole fused backward 0.82-0.98). Since the tiles' gathers copy whole
//     runs (memcpy), 32 input channels too, with strides: FSRCNN-s x2/x3/x4 0.88/0.72/0.66; 64->3 on 32
//     channels 0.87, 24->2 k5s2 0.78, 16->4 k4s2 0.72, 24->3 k4s2 0.53. Left direct: 36 taps (16->4 k3s1:
//     1.35), stride 1 (16->1 k7s1 1.9, 32->4 k5s1 1.0). channels_last gx stays direct (vectorised along the
//     channels): its tiles (tiled_nhwc_grad_input) took FSRCNN-s x2 from 2.3 to 12.8 ms.
//   - with the CPU's bfloat16 dot products, NCHW bfloat16 ops: the direct kernels run on float32 copies.
//     With 2+ output channels per group every op (the RGB layer fwd 4.2 -> 2.7 ms, bwd 5.6 -> 4.8 ms); with
//     one, the forward of narrow images or of 48+ input channels (FSRCNN x2 6.9 -> 5.8 ms, x3 6.5 -> 6.0,
//     x4 3.3 -> 3.4, 16 x 48x48 patches 3.9 -> 2.0), while the backward and FSRCNN-s (32 channels: fwd
//     1.26-1.32x, bwd 1.14-1.26x faster direct) stay direct, where the all-phases forward and the backward's
//     tap blocks now win. Not for channels_last, whose direct backward (vectorised along the channels) is
//     faster.
// (For a configuration whose path is direct.)
bool direct_on_tiles(const ConvT2dShape& s, at::ScalarType t, bool nhwc, Op op) {
  if (cpu::path_forced() || s.cin_per_group() < 16) return false;
  const bool forward = op == Op::forward;
  // bfloat16 NCHW with one output channel: the forward on the tiles for narrow images or 48+ input
  // channels, and for every image where the tiles run on AMX (FSRCNN-s forward 1.2-1.7x faster there).
  if (!nhwc && t == at::kBFloat16 && cpu::bf16_gemm_available())
    return s.cout_per_group() >= 2 || bf16_grad_input_widened_on_tiles(s, t, nhwc, op) ||
           (forward && (s.W_in < 128 || s.cin_per_group() >= 48 || cpu::bf16_gemm_on_amx()));
  if (!cpu::use_tiles(at::kFloat)) return false;
  // (channels_last bfloat16 with the CPU's dot products keeps its direct backward: the float32 rules below
  // were measured on float32 tiles)
  const bool f32_tiles = !(t == at::kBFloat16 && cpu::bf16_gemm_available());
  const int64_t taps = s.cout_per_group() * s.kH * s.kW;
  const bool many_taps = f32_tiles && taps >= 48 && (!nhwc || s.C_out == 1);
  if (op == Op::grad_input)
    return (!nhwc && s.cin_per_group() >= 48) || (f32_tiles && grad_input_many_taps(s, nhwc));
  if (op == Op::grad_weight) return f32_tiles && nhwc && taps >= 48 && cpu::grad_weight_by_slices(s, true);
  if (s.W_in < 128 || many_taps) return true;
  return !nhwc && s.cin_per_group() >= 48 &&
         (s.cout_per_group() >= 2 || (s.sH * s.sW >= 9 && !cpu::direct_forward_all_phases(s)));
}
cpu::Path op_path(const ConvT2dShape& s, at::ScalarType t, bool nhwc, Op op) {
  const cpu::Path p = cpu::choose_path(s, t);
  return p == cpu::Path::direct && direct_on_tiles(s, t, nhwc, op) ? cpu::Path::gemm : p;
}

template <typename Fast>
void on_float_path(const at::Tensor& out, const Fast& fast) {
  const auto out_f = at::empty_like(out, out.options().dtype(at::kFloat));  // same layout
  fast(out_f);
  out.copy_(out_f);
}

void forward_launch(const ConvT2dShape& s, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& y) {
  const cpu::Path p = op_path(s, x.scalar_type(), !x.is_contiguous(), Op::forward);
  auto fast = [&](const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& b_, const at::Tensor& y_) {
    if (p == cpu::Path::direct) cpu::direct_forward(s, x_, w_, b_, y_);
    else if (images_nhwc(x_, y_)) cpu::gemm_nhwc_forward(s, x_, w_, b_, y_);
    else cpu::gemm_forward(s, x_, w_, b_, y_);
  };
  if (p != cpu::Path::generic && is_half(x.scalar_type())) {
    const bool n = native_bf16(s, p, x.scalar_type(), !x.is_contiguous(), Op::forward);
    if (n && cpu::gemm_forward_writes_bf16(s, images_nhwc(x, y))) return fast(x, w, widened(b), y);
    // The direct forward widens x in the padded copy it makes anyway (no separate float32 copy of x).
    const bool x_as_is = n || p == cpu::Path::direct;
    return on_float_path(y, [&](const at::Tensor& yf) { fast(operand(x, x_as_is), operand(w, n), widened(b), yf); });
  }
  if (p != cpu::Path::generic) return fast(x, w, b, y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_cpu", [&] {
    forward_kernel<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
  });
}

void grad_input_launch(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& w, const at::Tensor& gx) {
  const cpu::Path p = op_path(s, gy.scalar_type(), !gy.is_contiguous() || !gx.is_contiguous(), Op::grad_input);
  auto fast = [&](const at::Tensor& gy_, const at::Tensor& w_, const at::Tensor& gx_) {
    if (p == cpu::Path::direct) cpu::direct_grad_input(s, gy_, w_, gx_);
    else if (images_nhwc(gy_, gx_)) cpu::gemm_nhwc_grad_input(s, gy_, w_, gx_);
    else cpu::gemm_grad_input(s, gy_, w_, gx_);
  };
  if (p != cpu::Path::generic && is_half(gy.scalar_type())) {
    const bool n = native_bf16(s, p, gy.scalar_type(), !gy.is_contiguous() || !gx.is_contiguous(), Op::grad_input);
    if (n && cpu::gemm_grad_input_writes_bf16(s, images_nhwc(gy, gx))) return fast(gy, w, gx);
    return on_float_path(gx, [&](const at::Tensor& gxf) { fast(operand(gy, n), operand(w, n), gxf); });
  }
  if (p != cpu::Path::generic) return fast(gy, w, gx);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_input_cpu", [&] {
    grad_input_kernel<scalar_t>(s, gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                gx.mutable_data_ptr<scalar_t>());
  });
}

void grad_weight_launch(const ConvT2dShape& s, const at::Tensor& gy, const at::Tensor& x, const at::Tensor& gw) {
  const cpu::Path p = op_path(s, x.scalar_type(), !x.is_contiguous() || !gy.is_contiguous(), Op::grad_weight);
  auto fast = [&](const at::Tensor& gy_, const at::Tensor& x_, const at::Tensor& gw_) {
    if (p == cpu::Path::direct) cpu::direct_grad_weight(s, gy_, x_, gw_);
    else if (images_nhwc(gy_, x_)) cpu::gemm_nhwc_grad_weight(s, gy_, x_, gw_);
    else cpu::gemm_grad_weight(s, gy_, x_, gw_);
  };
  if (p != cpu::Path::generic && is_half(x.scalar_type())) {
    const bool n = native_bf16(s, p, x.scalar_type(), !x.is_contiguous() || !gy.is_contiguous(), Op::grad_weight);
    return on_float_path(gw, [&](const at::Tensor& gwf) { fast(operand(gy, n), operand(x, n), gwf); });
  }
  if (p != cpu::Path::generic) return fast(gy, x, gw);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "conv_transpose2d_grad_weight_cpu", [&] {
    grad_weight_kernel<scalar_t>(s, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                 gw.mutable_data_ptr<scalar_t>());
  });
}

// Each channel's N*HW values in fixed blocks of kBlock (one image row of blocks at a time), summed in
// double with four interleaved partial sums; the block sums are added in order. The blocks are the
// parallel tasks, so a single-channel gradient (FSRCNN) uses every thread, and the result does not
// depend on the thread count. Every path shares this one. A channels_last gy is read as it is, each
// task running over its block's pixels for all channels at once: the same sums in the same order, so
// the same bits as for NCHW.
void grad_bias_launch(const at::Tensor& gy, const at::Tensor& gb) {
  const int64_t N = gy.size(0), C = gy.size(1), HW = gy.size(2) * gy.size(3);
  const bool nhwc_gy = !gy.is_contiguous();  // the entry layer passes NCHW or channels_last-contiguous
  constexpr int64_t kBlock = 8192;
  const int64_t per_image = (HW + kBlock - 1) / kBlock, per_channel = N * per_image;
  std::vector<double> partial(C * per_channel);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "conv_transpose2d_grad_bias_cpu", [&] {
    const scalar_t* src = gy.const_data_ptr<scalar_t>();
    if (nhwc_gy) {
      at::parallel_for(0, per_channel, 1, [&](int64_t t0, int64_t t1) {
        std::vector<double> acc(4 * C);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t n = t / per_image, b = t % per_image, len = std::min(kBlock, HW - b * kBlock);
          const scalar_t* p = src + (n * HW + b * kBlock) * C;
          std::fill(acc.begin(), acc.end(), 0.0);
          const int64_t full = len / 4 * 4;
          for (int64_t i = 0; i < len; ++i) {
            double* a = acc.data() + (i < full ? i % 4 : 0) * C;
            for (int64_t c = 0; c < C; ++c) a[c] += static_cast<double>(p[i * C + c]);
          }
          for (int64_t c = 0; c < C; ++c)
            partial[c * per_channel + t] = (acc[c] + acc[C + c]) + (acc[2 * C + c] + acc[3 * C + c]);
        }
      });
    } else {
      at::parallel_for(0, C * per_channel, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t c = t / per_channel, n = (t % per_channel) / per_image, b = t % per_image;
          const scalar_t* p = src + (n * C + c) * HW + b * kBlock;
          const int64_t len = std::min(kBlock, HW - b * kBlock);
          double acc[4] = {0, 0, 0, 0};  // long sums: double keeps float32 results exact to rounding
          int64_t i = 0;
          for (; i + 4 <= len; i += 4)
            for (int k = 0; k < 4; ++k) acc[k] += static_cast<double>(p[i + k]);
          for (; i < len; ++i) acc[0] += static_cast<double>(p[i]);
          partial[t] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
      });
    }
    scalar_t* dst = gb.mutable_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0;
      for (int64_t k = 0; k < per_channel; ++k) sum += partial[c * per_channel + k];
      dst[c] = static_cast<scalar_t>(sum);
    }
  });
}

constexpr Launchers kCpuLaunchers{&forward_launch, &grad_input_launch, &grad_weight_launch, &grad_bias_launch,
                                  &launch_layout, /*grad_bias_takes_channels_last=*/true,
                                  &cpu::share_deinterleaved_gy};

// ---- dispatch queries ---------------------------------------------------------------------------------
// "direct:avx2", "gemm", "generic": the path (and vector ISA) that all four ops take on CPU for this
// configuration, dtype and input layout, environment overrides included; "direct:avx512 (forward: gemm)"
// when the forward alone runs on the tiles (direct_on_tiles), "direct:avx512 (forward: gemm, grad_input:
// gemm)" when grad_input does too: grad_weight's path first, then the ops that differ. Shapes only, so meta
// tensors work too.
std::string cpu_path(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                     at::IntArrayRef dilation) {
  const auto s = forward_shape(input, weight, stride, padding, output_padding, groups, dilation);
  const at::ScalarType t = input.scalar_type();
  const bool nhwc = !input.is_contiguous() && input.is_contiguous(c10::MemoryFormat::ChannelsLast);
  auto named = [&](cpu::Path p, Op op) {
    std::string name = cpu::path_name(p);
    if (p == cpu::Path::direct) name += std::string(":") + cpu::isa_name(cpu::isa_level());
    if (native_bf16(s, p, t, nhwc, op)) name += ":avx512_bf16";
    return name;
  };
  const cpu::Path p = op_path(s, t, nhwc, Op::grad_weight);
  const std::string first = named(p, Op::grad_weight);
  std::string others;
  for (const auto& [op, name] : {std::pair{Op::forward, "forward"}, std::pair{Op::grad_input, "grad_input"}}) {
    const std::string q = named(op_path(s, t, nhwc, op), op);
    if (q != first) others += std::string(others.empty() ? "" : ", ") + name + ": " + q;
  }
  return others.empty() ? first : first + " (" + others + ")";
}

// The vector ISAs this CPU can run the direct kernels with, lowest first.
std::vector<std::string> cpu_isas() {
  std::vector<std::string> out;
  for (int l = 0; l <= 2; ++l)
    if (cpu::cpu_isa_available(l)) out.push_back(cpu::isa_name(l));
  return out;
}

}  // namespace

namespace cpu {

const char* path_name(Path p) {
  return p == Path::direct ? "direct" : p == Path::gemm ? "gemm" : "generic";
}

bool path_forced() {
  const char* forced = std::getenv("DECONV_EXT_CPU_PATH");
  return forced != nullptr && *forced != 0 && std::strcmp(forced, "auto") != 0;
}

Path choose_path(const ConvT2dShape& s, at::ScalarType t) {
  // The half types take the float32 paths on widened operands (see the launchers).
  const at::ScalarType k = (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
  const Path natural = use_direct(s, k) ? Path::direct : use_gemm(s, k) ? Path::gemm : Path::generic;
  if (!path_forced()) return natural;
  const char* forced = std::getenv("DECONV_EXT_CPU_PATH");
  if (std::strcmp(forced, "generic") == 0) return Path::generic;
  if (std::strcmp(forced, "direct") == 0) return use_direct(s, k) ? Path::direct : natural;
  if (std::strcmp(forced, "gemm") == 0) return (k == at::kFloat || k == at::kDouble) ? Path::gemm : natural;
  TORCH_CHECK(false, "DECONV_EXT_CPU_PATH: expected one of auto, generic, direct, gemm, got '", std::string(forced),
              "'");
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(deconv_ext, CPU, m) { register_backend<&kCpuLaunchers>(m); }

TORCH_LIBRARY_FRAGMENT(deconv_ext, m) {
  m.def("_cpu_path(Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] output_padding, int groups, "
        "int[2] dilation) -> str",
        &cpu_path);
  m.def("_cpu_isas() -> str[]", &cpu_isas);
  // What runs the bfloat16 gemm tiles: "amx" (AMX tiles), "avx512_bf16" (dot products) or "" (widened float32).
  m.def("_cpu_bf16_gemm() -> str", []() -> std::string {
    return cpu::bf16_gemm_on_amx() ? "amx" : cpu::bf16_gemm_available() ? "avx512_bf16" : "";
  });
}

}  // namespace deconv_ext
