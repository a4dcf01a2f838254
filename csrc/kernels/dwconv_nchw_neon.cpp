// NEON depthwise conv + activation, NCHW (Armv8.0-A baseline: Advanced SIMD float32x4, FMA).
// Same semantics as dwconv_scalar.cpp: out = act(bias + sum over in-range taps, in (ky, kx)
// order, of w * x); only the rounding differs (fused multiply-add). The NHWC kernel is
// dwconv_nhwc_neon.cpp; both use the vector layer simd_neon.h.
//
// Vectorised over output columns. Each plane is copied once into a zero-padded per-thread
// scratch (mnv3ext::thread_scratch) with the stride phases deinterleaved (phase p of a padded
// row holds its columns p, p + stride, ...), so every tap of every stride/dilation reads 4
// consecutive output columns with one contiguous load. 3x3 and 5x5 keep their weights and tap
// offsets in registers; 8 output columns per step. A zero padding product can differ from a
// skipped tap only if the weight is inf/NaN (0 * inf = NaN): planes with a non-finite weight
// take an exact scalar path instead.
#include <arm_neon.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "activation.h"
#include "dwconv_taps.h"
#include "kernels.h"
#include "simd_neon.h"

namespace mnv3ext::neon {
namespace {

constexpr int kMaxKernel = 7;

// Geometry of the zero-padded, phase-deinterleaved plane copy.
struct PlaneLayout {
  int64_t padded_rows;  // rows of the padded plane that any output reads
  int64_t phase_len;    // floats per phase row
  int64_t row_floats;   // stride * phase_len: one padded row, all its phases
  int64_t out_w4;       // out_w rounded up to 4
};

PlaneLayout plane_layout(const DwConvShape& s) {
  PlaneLayout l;
  l.out_w4 = (s.out_w + 3) / 4 * 4;
  l.padded_rows = (s.out_h - 1) * s.stride_h + int64_t(s.kernel_h - 1) * s.dilation_h + 1;
  l.phase_len = l.out_w4 + int64_t(s.kernel_w - 1) * s.dilation_w / s.stride_w;
  l.row_floats = s.stride_w * l.phase_len;
  return l;
}

// scratch[r * row_floats + p * phase_len + j] = input(r - pad_top, j * stride_w + p - pad_left),
// zero outside the image.
void fill_plane(const DwConvShape& s, const PlaneLayout& l, const float* in, float* scratch) {
  const int64_t sw = s.stride_w;
  for (int64_t r = 0; r < l.padded_rows; ++r) {
    float* dst = scratch + r * l.row_floats;
    const int64_t iy = r - s.pad_top;
    if (iy < 0 || iy >= s.in_h) {
      std::memset(dst, 0, sizeof(float) * l.row_floats);
      continue;
    }
    const float* src = in + iy * s.in_w;
    for (int64_t p = 0; p < sw; ++p, dst += l.phase_len) {
      // Valid j: 0 <= j * sw + p - pad_left < in_w.
      const int64_t first = s.pad_left - p;  // j * sw >= first
      int64_t j_lo = first <= 0 ? 0 : (first + sw - 1) / sw;
      const int64_t last = s.in_w - 1 + s.pad_left - p;  // j * sw <= last
      int64_t j_hi = last < 0 ? 0 : last / sw + 1;
      if (j_hi > l.phase_len) j_hi = l.phase_len;
      if (j_lo > j_hi) j_lo = j_hi;
      for (int64_t j = 0; j < j_lo; ++j) dst[j] = 0.0f;
      if (sw == 1) {
        std::memcpy(dst + j_lo, src + j_lo - s.pad_left, sizeof(float) * (j_hi - j_lo));
      } else if (sw == 2) {
        const float* from = src + 2 * j_lo + p - s.pad_left;
        int64_t j = j_lo;
        // vld2q reads 8 floats starting at `from`: the last read index must be < in_w.
        for (; j + 4 <= j_hi && (from - src) + 8 <= s.in_w; j += 4, from += 8)
          vst1q_f32(dst + j, vld2q_f32(from).val[0]);
        for (; j < j_hi; ++j, from += 2) dst[j] = *from;
      } else {
        for (int64_t j = j_lo; j < j_hi; ++j) dst[j] = src[j * sw + p - s.pad_left];
      }
      for (int64_t j = j_hi; j < l.phase_len; ++j) dst[j] = 0.0f;
    }
  }
}

// One plane from the padded copy. K > 0: K x K taps with weights and offsets in registers.
template <int K>
void nchw_plane(const DwConvShape& s, const PlaneLayout& l, const float* scratch,
                const float* packed, int64_t c, float* out) {
  constexpr int kTapCap = K > 0 ? K * K : kMaxKernel * kMaxKernel;
  const int kh = K > 0 ? K : s.kernel_h, kw = K > 0 ? K : s.kernel_w;
  const int taps = kh * kw;
  const int64_t padded = padded_channels(s.channels);
  float w[kTapCap];
  int64_t offset[kTapCap];
  for (int ky = 0; ky < kh; ++ky)
    for (int kx = 0; kx < kw; ++kx) {
      const int t = ky * kw + kx;
      const int64_t dx = int64_t(kx) * s.dilation_w;
      w[t] = packed[(1 + t) * padded + c];
      offset[t] = int64_t(ky) * s.dilation_h * l.row_floats + (dx % s.stride_w) * l.phase_len +
                  dx / s.stride_w;
    }
  const float32x4_t bias = vdupq_n_f32(packed[c]);
  const int64_t ow = s.out_w;
  for (int64_t oy = 0; oy < s.out_h; ++oy) {
    const float* base = scratch + oy * s.stride_h * l.row_floats;
    float* dst = out + oy * ow;
    int64_t ox = 0;
    for (; ox + 8 <= l.out_w4; ox += 8) {
      float32x4_t a0 = bias, a1 = bias;
#pragma GCC unroll 49
      for (int t = 0; t < (K > 0 ? K * K : taps); ++t) {
        const float* p = base + offset[t] + ox;
        a0 = vfmaq_n_f32(a0, vld1q_f32(p), w[t]);
        a1 = vfmaq_n_f32(a1, vld1q_f32(p + 4), w[t]);
      }
      a0 = activate(s.activation, a0);
      a1 = activate(s.activation, a1);
      if (ox + 8 <= ow) {
        vst1q_f32(dst + ox, a0);
        vst1q_f32(dst + ox + 4, a1);
      } else if (ox + 4 <= ow) {
        vst1q_f32(dst + ox, a0);
        vstorem(dst + ox + 4, lanes_mask(ow - ox - 4), a1);
      } else {
        vstorem(dst + ox, lanes_mask(ow - ox), a0);
      }
    }
    for (; ox < l.out_w4; ox += 4) {
      float32x4_t a0 = bias;
#pragma GCC unroll 49
      for (int t = 0; t < (K > 0 ? K * K : taps); ++t)
        a0 = vfmaq_n_f32(a0, vld1q_f32(base + offset[t] + ox), w[t]);
      a0 = activate(s.activation, a0);
      if (ox + 4 <= ow)
        vst1q_f32(dst + ox, a0);
      else
        vstorem(dst + ox, lanes_mask(ow - ox), a0);
    }
  }
}

// Exactly the scalar kernel, for planes whose weights are not all finite.
void nchw_plane_exact(const DwConvShape& s, const float* in, const float* packed, int64_t c,
                      float* out) {
  const int64_t padded = padded_channels(s.channels);
  for (int64_t oy = 0; oy < s.out_h; ++oy)
    for (int64_t ox = 0; ox < s.out_w; ++ox) {
      float acc = packed[c];
      for_each_input_tap(s, oy, ox, [&](int t, int64_t iy, int64_t ix) {
        acc = std::fma(packed[(1 + t) * padded + c], in[iy * s.in_w + ix], acc);
      });
      out[oy * s.out_w + ox] = apply_activation(s.activation, acc);
    }
}

bool finite_taps(const DwConvShape& s, const float* packed, int64_t c) {
  const int64_t padded = padded_channels(s.channels);
  const int taps = s.kernel_h * s.kernel_w;
  for (int t = 0; t < taps; ++t)
    if (!std::isfinite(packed[(1 + t) * padded + c])) return false;
  return true;
}

}  // namespace

void dwconv_nchw_planes(const DwConvShape& s, const float* input, const float* packed,
                        float* output, int64_t plane_begin, int64_t plane_end) {
  if (plane_begin >= plane_end) return;
  const PlaneLayout l = plane_layout(s);
  float* scratch = thread_scratch(l.padded_rows * l.row_floats);
  // Any stride and dilation: they only change the precomputed tap offsets.
  const bool k3 = s.kernel_h == 3 && s.kernel_w == 3;
  const bool k5 = s.kernel_h == 5 && s.kernel_w == 5;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  for (int64_t plane = plane_begin; plane < plane_end; ++plane) {
    const int64_t c = plane % s.channels;
    const float* in = input + plane * in_plane;
    float* out = output + plane * out_plane;
    if (!finite_taps(s, packed, c)) {
      nchw_plane_exact(s, in, packed, c, out);
      continue;
    }
    fill_plane(s, l, in, scratch);
    if (k3)
      nchw_plane<3>(s, l, scratch, packed, c, out);
    else if (k5)
      nchw_plane<5>(s, l, scratch, packed, c, out);
    else
      nchw_plane<0>(s, l, scratch, packed, c, out);
  }
}

}  // namespace mnv3ext::neon
