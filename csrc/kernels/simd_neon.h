// NEON vector layer shared by the NEON kernel files (Armv8.0-A baseline: Advanced SIMD
// float32x4 with FMA). Everything has internal linkage, like the x86 layers.
//
// NEON has no masked loads or stores: a Mask is the number of leading active lanes (0..4), and
// vloadm / vstorem move those lanes one at a time, touching no memory of the inactive ones (a
// mask of none reads and writes nothing).
//
// Activations are exactly PyTorch's (and apply_activation's, activation.h): relu/relu6 keep NaN
// (compare-and-select, never max), hardswish is x * min(max(x + 3, 0), 6) / 6 with a real
// division, NaN lanes pass through unchanged.
#pragma once

#include <arm_neon.h>

#include <cstdint>

#include "activation.h"
#include "kernels.h"

namespace mnv3ext::neon {
namespace {

constexpr int64_t kLanes = 4;
using Vec = float32x4_t;
using Mask = int;  // lanes [0, Mask) are active

inline Mask lanes_mask(int64_t n) { return n >= kLanes ? Mask(kLanes) : n <= 0 ? 0 : Mask(n); }
inline Mask full_mask() { return Mask(kLanes); }
inline Mask no_mask() { return 0; }
inline Vec vload(const float* p) { return vld1q_f32(p); }
// Active lanes from p, inactive lanes zero.
inline Vec vloadm(const float* p, Mask m) {
  Vec v = vdupq_n_f32(0.0f);
  if (m > 0) v = vld1q_lane_f32(p, v, 0);
  if (m > 1) v = vld1q_lane_f32(p + 1, v, 1);
  if (m > 2) v = vld1q_lane_f32(p + 2, v, 2);
  if (m > 3) v = vld1q_lane_f32(p + 3, v, 3);
  return v;
}
inline void vstore(float* p, Vec v) { vst1q_f32(p, v); }
inline void vstorem(float* p, Mask m, Vec v) {
  if (m > 0) vst1q_lane_f32(p, v, 0);
  if (m > 1) vst1q_lane_f32(p + 1, v, 1);
  if (m > 2) vst1q_lane_f32(p + 2, v, 2);
  if (m > 3) vst1q_lane_f32(p + 3, v, 3);
}
inline Vec vfma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }  // a * b + c, one rounding
inline Vec vset1(float x) { return vdupq_n_f32(x); }
inline Vec vzero() { return vdupq_n_f32(0.0f); }
inline Vec vadd(Vec a, Vec b) { return vaddq_f32(a, b); }
inline Vec vmul(Vec a, Vec b) { return vmulq_f32(a, b); }

// Vector form of apply_activation (activation.h).
inline Vec activate(Activation activation, Vec x) {
  const Vec zero = vzero();
  switch (activation) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return vbslq_f32(vcltq_f32(x, zero), zero, x);
    case Activation::kRelu6: {
      const Vec six = vdupq_n_f32(6.0f);
      const Vec high = vbslq_f32(vcgtq_f32(x, six), six, x);
      return vbslq_f32(vcltq_f32(x, zero), zero, high);
    }
    case Activation::kHardswish: {
      const Vec six = vdupq_n_f32(6.0f);
      const Vec shifted = vminq_f32(vmaxq_f32(vaddq_f32(x, vdupq_n_f32(3.0f)), zero), six);
      const Vec y = vdivq_f32(vmulq_f32(x, shifted), six);
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

// Activation with the kind fixed at compile time (hoisted out of the pixel loops).
template <Activation A>
inline Vec activate_t(Vec x) {
  if constexpr (A == Activation::kNone) return x;
  else return activate(A, x);
}

}  // namespace
}  // namespace mnv3ext::neon
