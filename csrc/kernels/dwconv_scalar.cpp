// Portable depthwise conv: the correctness baseline for every SIMD path and the
// fallback on CPUs without one. Plain loops; the compiler may auto-vectorise them.
#include <algorithm>

#include "activation.h"
#include "dwconv_taps.h"
#include "kernels.h"

namespace mnv3ext::scalar {

void dwconv_nhwc_rows(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  const int64_t channels = s.channels, padded = padded_channels(s.channels);
  const int64_t c0 = s.channel_begin, c1 = s.channel_stop();
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / s.out_h, oy = row % s.out_h;
    for (int64_t ox = 0; ox < s.out_w; ++ox) {
      float* out = output + (row * s.out_w + ox) * channels;
      std::copy(packed + c0, packed + c1, out + c0);
      for_each_input_tap(s, oy, ox, [&](int t, int64_t iy, int64_t ix) {
        const float* in = input + ((n * s.in_h + iy) * s.in_w + ix) * channels;
        const float* tap = packed + (1 + t) * padded;
        for (int64_t c = c0; c < c1; ++c) out[c] += tap[c] * in[c];
      });
      for (int64_t c = c0; c < c1; ++c) out[c] = apply_activation(s.activation, out[c]);
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
        for_each_input_tap(s, oy, ox, [&](int t, int64_t iy, int64_t ix) {
          acc += packed[(1 + t) * padded + c] * in[iy * s.in_w + ix];
        });
        out[oy * s.out_w + ox] = apply_activation(s.activation, acc);
      }
    }
  }
}

}  // namespace mnv3ext::scalar
