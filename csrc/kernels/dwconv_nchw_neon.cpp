// NEON depthwise conv + activation (Armv8.0-A baseline: Advanced SIMD float32x4, FMA).
// Same semantics as dwconv_scalar.cpp: out = act(bias + sum over in-range taps, in (ky, kx)
// order, of w * x); only the rounding differs (fused multiply-add).
//
// NHWC: vectorised over channels. A tile of 4 or 8 channels runs along an output row with
// the tile's bias and (for 3x3 / 5x5, dilation 1) all its taps held in registers; out-of-range
// taps are skipped (no zero row), so non-finite weights behave exactly as in the scalar path.
// Channel tails (C % 4) go through a small stack buffer: no load or store ever touches memory
// past the exact end of a buffer.
//
// NCHW: vectorised over output columns. Each plane is copied once into a zero-padded per-thread
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
#include "kernels.h"

namespace mnv3ext::neon {
namespace {

// Vector form of apply_activation (activation.h), exactly as PyTorch: relu/relu6 keep NaN
// (compare-and-select, never max), hardswish is x * min(max(x + 3, 0), 6) / 6 with a real
// division, NaN lanes pass through unchanged.
inline float32x4_t activate(Activation activation, float32x4_t x) {
  const float32x4_t zero = vdupq_n_f32(0.0f);
  switch (activation) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return vbslq_f32(vcltq_f32(x, zero), zero, x);
    case Activation::kRelu6: {
      const float32x4_t six = vdupq_n_f32(6.0f);
      const float32x4_t high = vbslq_f32(vcgtq_f32(x, six), six, x);
      return vbslq_f32(vcltq_f32(x, zero), zero, high);
    }
    case Activation::kHardswish: {
      const float32x4_t six = vdupq_n_f32(6.0f);
      const float32x4_t shifted =
          vminq_f32(vmaxq_f32(vaddq_f32(x, vdupq_n_f32(3.0f)), zero), six);
      const float32x4_t y = vdivq_f32(vmulq_f32(x, shifted), six);
      return vbslq_f32(vceqq_f32(x, x), y, x);  // NaN lanes keep x
    }
    default: {  // gates never reach the depthwise epilogue; stay exact anyway
      float lanes[4];
      vst1q_f32(lanes, x);
      for (float& v : lanes) v = apply_activation(activation, v);
      return vld1q_f32(lanes);
    }
  }
}

// The first `count` (< 4) floats only.
inline float32x4_t load_partial(const float* p, int count) {
  float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < count; ++i) lanes[i] = p[i];
  return vld1q_f32(lanes);
}

inline void store_partial(float* p, float32x4_t v, int count) {
  float lanes[4];
  vst1q_f32(lanes, v);
  for (int i = 0; i < count; ++i) p[i] = lanes[i];
}

// ---------------------------------------------------------------------------------------
// NHWC

constexpr int kMaxKernel = 7;

// One output row, channels [c0, c0 + 4 * R), or [c0, c0 + lanes) when kPartial (R == 1).
// K > 0: K x K kernel with dilation 1, taps in registers; K == 0: any kernel from memory.
// Packed weight rows are padded to 16 floats, so full-vector weight loads are always in bounds.
template <int K, int R, bool kPartial>
void nhwc_row_tile(const DwConvShape& s, const float* input, const float* packed, float* output,
                   int64_t row, int64_t c0, int lanes) {
  static_assert(!kPartial || R == 1, "partial tiles are one vector wide");
  constexpr bool kFixed = K > 0;
  const int kh = kFixed ? K : s.kernel_h, kw = kFixed ? K : s.kernel_w;
  const int dh = kFixed ? 1 : s.dilation_h, dw = kFixed ? 1 : s.dilation_w;
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t n = row / s.out_h, oy = row % s.out_h;
  const int64_t iy0 = oy * s.stride_h - s.pad_top;

  // Rows of the window: a null pointer marks a tap row outside the image.
  const float* rows[kMaxKernel];
  for (int ky = 0; ky < kh; ++ky) {
    const int64_t iy = iy0 + int64_t(ky) * dh;
    rows[ky] = (iy >= 0 && iy < s.in_h) ? input + (n * s.in_h + iy) * s.in_w * C + c0 : nullptr;
  }

  float32x4_t bias[R];
  for (int r = 0; r < R; ++r) bias[r] = vld1q_f32(packed + c0 + 4 * r);
  constexpr int kRegTaps = kFixed ? K * K : 1;
  float32x4_t w[kRegTaps][R];
  if constexpr (kFixed) {
#pragma GCC unroll 25
    for (int t = 0; t < K * K; ++t)
      for (int r = 0; r < R; ++r) w[t][r] = vld1q_f32(packed + (1 + t) * padded + c0 + 4 * r);
  }

  float* out = output + row * s.out_w * C + c0;
  const int64_t span = int64_t(kw - 1) * dw;
  for (int64_t ox = 0; ox < s.out_w; ++ox, out += C) {
    const int64_t ix0 = ox * s.stride_w - s.pad_left;
    const bool x_inside = ix0 >= 0 && ix0 + span < s.in_w;
    float32x4_t acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias[r];
#pragma GCC unroll 7
    for (int ky = 0; ky < kh; ++ky) {
      if (!rows[ky]) continue;
#pragma GCC unroll 7
      for (int kx = 0; kx < kw; ++kx) {
        const int64_t ix = ix0 + int64_t(kx) * dw;
        if (!x_inside && (ix < 0 || ix >= s.in_w)) continue;
        const float* in = rows[ky] + ix * C;
        const int t = ky * kw + kx;
        for (int r = 0; r < R; ++r) {
          const float32x4_t x = kPartial ? load_partial(in, lanes) : vld1q_f32(in + 4 * r);
          const float32x4_t wt =
              kFixed ? w[kFixed ? t : 0][r] : vld1q_f32(packed + (1 + t) * padded + c0 + 4 * r);
          acc[r] = vfmaq_f32(acc[r], x, wt);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const float32x4_t y = activate(s.activation, acc[r]);
      if (kPartial)
        store_partial(out, y, lanes);
      else
        vst1q_f32(out + 4 * r, y);
    }
  }
}

// All channels of one output row: tiles of 4 * kWide, then 4, then the < 4 tail.
template <int K, int kWide>
void nhwc_row(const DwConvShape& s, const float* input, const float* packed, float* output,
              int64_t row) {
  const int64_t C = s.channels;
  int64_t c0 = 0;
  if (kWide > 1)
    for (; c0 + 4 * kWide <= C; c0 += 4 * kWide)
      nhwc_row_tile<K, kWide, false>(s, input, packed, output, row, c0, 4);
  for (; c0 + 4 <= C; c0 += 4) nhwc_row_tile<K, 1, false>(s, input, packed, output, row, c0, 4);
  if (c0 < C) nhwc_row_tile<K, 1, true>(s, input, packed, output, row, c0, int(C - c0));
}

// ---------------------------------------------------------------------------------------
// NCHW

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
        store_partial(dst + ox + 4, a1, int(ow - ox - 4));
      } else {
        store_partial(dst + ox, a0, int(ow - ox));
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
        store_partial(dst + ox, a0, int(ow - ox));
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
      for (int ky = 0; ky < s.kernel_h; ++ky) {
        const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
        if (iy < 0 || iy >= s.in_h) continue;
        for (int kx = 0; kx < s.kernel_w; ++kx) {
          const int64_t ix = ox * s.stride_w - s.pad_left + int64_t(kx) * s.dilation_w;
          if (ix < 0 || ix >= s.in_w) continue;
          acc = std::fma(packed[(1 + ky * s.kernel_w + kx) * padded + c], in[iy * s.in_w + ix],
                         acc);
        }
      }
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

void dwconv_nhwc_rows(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  const bool unit_dilation = s.dilation_h == 1 && s.dilation_w == 1;
  const bool k3 = unit_dilation && s.kernel_h == 3 && s.kernel_w == 3;
  const bool k5 = unit_dilation && s.kernel_h == 5 && s.kernel_w == 5;
  for (int64_t row = row_begin; row < row_end; ++row) {
    if (k3)
      nhwc_row<3, 2>(s, input, packed, output, row);  // 18 weight + 2 bias registers
    else if (k5)
      nhwc_row<5, 1>(s, input, packed, output, row);  // 25 weight registers
    else
      nhwc_row<0, 2>(s, input, packed, output, row);
  }
}

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
