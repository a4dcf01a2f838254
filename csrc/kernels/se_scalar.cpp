// Portable building blocks of the fused squeeze-excite (see driver.cpp for the sequence).
#include "kernels.h"

namespace mnv3ext::scalar {

void plane_sum(const float* input, int64_t planes, int64_t hw, float* sums) {
  for (int64_t p = 0; p < planes; ++p) {
    const float* in = input + p * hw;
    float acc = 0.0f;
    for (int64_t i = 0; i < hw; ++i) acc += in[i];
    sums[p] = acc;
  }
}

void pixel_sum(const float* input, int64_t pixels, int64_t stride, int64_t count, float* sums) {
  for (int64_t c = 0; c < count; ++c) sums[c] = 0.0f;
  for (int64_t p = 0; p < pixels; ++p) {
    const float* in = input + p * stride;
    for (int64_t c = 0; c < count; ++c) sums[c] += in[c];
  }
}

void matvec(const float* weight, const float* bias, const float* x, int64_t rows, int64_t cols,
            float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = weight + r * cols;
    float acc = 0.0f;
    for (int64_t k = 0; k < cols; ++k) acc += w[k] * x[k];
    y[r] = bias ? acc + bias[r] : acc;
  }
}

void scale_planes(const float* input, const float* gate, float* output, int64_t planes,
                  int64_t hw) {
  for (int64_t p = 0; p < planes; ++p) {
    const float g = gate[p];
    for (int64_t i = 0; i < hw; ++i) output[p * hw + i] = input[p * hw + i] * g;
  }
}

void scale_pixels(const float* input, const float* gate, float* output, int64_t pixels,
                  int64_t channels) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c)
      output[p * channels + c] = input[p * channels + c] * gate[c];
}

}  // namespace mnv3ext::scalar
