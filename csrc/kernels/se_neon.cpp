// NEON building blocks of the fused squeeze-excite (see driver.cpp for the sequence).
// Armv8.0-A baseline, float32x4. Tails are scalar: nothing is read or written past the exact
// end of a buffer. pixel_sum, scale_planes and scale_pixels round exactly as the scalar path;
// plane_sum and matvec sum in 16 lanes (a different, fixed order: deterministic for any
// thread count).
#include <arm_neon.h>

#include <cstdint>

#include "kernels.h"

namespace mnv3ext::neon {
namespace {

// sum of n floats: four 4-lane accumulators, then a scalar tail.
inline float sum16(const float* p, int64_t n) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = vaddq_f32(a0, vld1q_f32(p + i));
    a1 = vaddq_f32(a1, vld1q_f32(p + i + 4));
    a2 = vaddq_f32(a2, vld1q_f32(p + i + 8));
    a3 = vaddq_f32(a3, vld1q_f32(p + i + 12));
  }
  for (; i + 4 <= n; i += 4) a0 = vaddq_f32(a0, vld1q_f32(p + i));
  float acc = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  for (; i < n; ++i) acc += p[i];
  return acc;
}

inline float dot16(const float* a, const float* b, int64_t n) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = vfmaq_f32(a0, vld1q_f32(a + i), vld1q_f32(b + i));
    a1 = vfmaq_f32(a1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    a2 = vfmaq_f32(a2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
    a3 = vfmaq_f32(a3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
  }
  for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, vld1q_f32(a + i), vld1q_f32(b + i));
  float acc = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  for (; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

void plane_sum(const float* input, int64_t planes, int64_t hw, float* sums) {
  for (int64_t p = 0; p < planes; ++p) sums[p] = sum16(input + p * hw, hw);
}

void pixel_sum(const float* input, int64_t pixels, int64_t stride, int64_t count, float* sums) {
  int64_t c = 0;
  for (; c + 8 <= count; c += 8) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
    const float* in = input + c;
    for (int64_t p = 0; p < pixels; ++p, in += stride) {
      a0 = vaddq_f32(a0, vld1q_f32(in));
      a1 = vaddq_f32(a1, vld1q_f32(in + 4));
    }
    vst1q_f32(sums + c, a0);
    vst1q_f32(sums + c + 4, a1);
  }
  for (; c + 4 <= count; c += 4) {
    float32x4_t a0 = vdupq_n_f32(0.0f);
    const float* in = input + c;
    for (int64_t p = 0; p < pixels; ++p, in += stride) a0 = vaddq_f32(a0, vld1q_f32(in));
    vst1q_f32(sums + c, a0);
  }
  for (; c < count; ++c) {
    float acc = 0.0f;
    const float* in = input + c;
    for (int64_t p = 0; p < pixels; ++p, in += stride) acc += *in;
    sums[c] = acc;
  }
}

void matvec(const float* weight, const float* bias, const float* x, int64_t rows, int64_t cols,
            float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float acc = dot16(weight + r * cols, x, cols);
    y[r] = bias ? acc + bias[r] : acc;
  }
}

void scale_planes(const float* input, const float* gate, float* output, int64_t planes,
                  int64_t hw) {
  for (int64_t p = 0; p < planes; ++p) {
    const float g = gate[p];
    const float* in = input + p * hw;
    float* out = output + p * hw;
    int64_t i = 0;
    for (; i + 8 <= hw; i += 8) {
      vst1q_f32(out + i, vmulq_n_f32(vld1q_f32(in + i), g));
      vst1q_f32(out + i + 4, vmulq_n_f32(vld1q_f32(in + i + 4), g));
    }
    for (; i + 4 <= hw; i += 4) vst1q_f32(out + i, vmulq_n_f32(vld1q_f32(in + i), g));
    for (; i < hw; ++i) out[i] = in[i] * g;
  }
}

void scale_pixels(const float* input, const float* gate, float* output, int64_t pixels,
                  int64_t channels) {
  for (int64_t p = 0; p < pixels; ++p) {
    const float* in = input + p * channels;
    float* out = output + p * channels;
    int64_t c = 0;
    for (; c + 4 <= channels; c += 4)
      vst1q_f32(out + c, vmulq_f32(vld1q_f32(in + c), vld1q_f32(gate + c)));
    for (; c < channels; ++c) out[c] = in[c] * gate[c];
  }
}

}  // namespace mnv3ext::neon
