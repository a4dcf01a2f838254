// Portable depthwise conv: the correctness baseline for every SIMD path and the
// fallback on CPUs without one. Plain loops; the compiler may auto-vectorise them.
#include <algorithm>

#include "activation.h"
#include "kernels.h"

namespace mnv3ext::avx2 {

void dwconv_nhwc_rows(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  const int64_t channels = s.channels, padded = padded_channels(s.channels);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / s.out_h, oy = row % s.out_h;
    for (int64_t ox = 0; ox < s.out_w; ++ox) {
      float* out = output + (row * s.out_w + ox) * channels;
      std::copy(packed, packed + channels, out);
      for (int ky = 0; ky < s.kernel_h; ++ky) {
        const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
        if (iy < 0 || iy >= s.in_h) continue;
        for (int kx = 0; kx < s.kernel_w; ++kx) {
          const int64_t ix = ox * s.stride_w - s.pad_left + int64_t(kx) * s.dilation_w;
          if (ix < 0 || ix >= s.in_w) continue;
          const float* in = input + ((n * s.in_h + iy) * s.in_w + ix) * channels;
          const float* tap = packed + (1 + ky * s.kernel_w + kx) * padded;
          for (int64_t c = 0; c < channels; ++c) out[c] += tap[c] * in[c];
        }
      }
      for (int64_t c = 0; c < channels; ++c) out[c] = apply_activation(s.activation, out[c]);
    }
  }
}

void dwconv_nchw_planes(const DwConvShape& s, const float* input, const float* packed,
                        float* output, int64_t plane_begin, int64_t plane_end) {
  const int64_t padded = padded_channels(s.channels);
  for (int64_t plane = plane_begin; plane < plane_end; ++plane) {
    const int64_t c = plane % s.channels;
    const float* in = input + plane * s.in_h * s.in_w;
    float* out = output + plane * s.out_h * s.out_w;
    for (int64_t oy = 0; oy < s.out_h; ++oy) {
      for (int64_t ox = 0; ox < s.out_w; ++ox) {
        float acc = packed[c];
        for (int ky = 0; ky < s.kernel_h; ++ky) {
          const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
          if (iy < 0 || iy >= s.in_h) continue;
          for (int kx = 0; kx < s.kernel_w; ++kx) {
            const int64_t ix = ox * s.stride_w - s.pad_left + int64_t(kx) * s.dilation_w;
            if (ix < 0 || ix >= s.in_w) continue;
            acc += packed[(1 + ky * s.kernel_w + kx) * padded + c] * in[iy * s.in_w + ix];
          }
        }
        out[oy * s.out_w + ox] = apply_activation(s.activation, acc);
      }
    }
  }
}

}  // namespace mnv3ext::avx2
