// Scalar activations (static: each ISA file gets its own copy, never a shared symbol), written exactly as PyTorch defines them (hardswish divides by 6),
// shared by the scalar kernels, the SIMD tails and the SE gate.
#pragma once

#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace mnv3ext {

static inline float relu6_shifted(float x) { return std::min(std::max(x + 3.0f, 0.0f), 6.0f); }

static inline float apply_activation(Activation activation, float x) {
  switch (activation) {
    case Activation::kNone: return x;
    // max(x, 0) would turn NaN into 0; the reference keeps NaN, so compare explicitly.
    case Activation::kRelu: return x < 0.0f ? 0.0f : x;
    case Activation::kRelu6: return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    case Activation::kHardswish: return std::isnan(x) ? x : x * relu6_shifted(x) / 6.0f;
    case Activation::kHardsigmoid: return std::isnan(x) ? x : relu6_shifted(x) / 6.0f;
    case Activation::kSigmoid: return 1.0f / (1.0f + std::exp(-x));
  }
  return x;
}

}  // namespace mnv3ext
