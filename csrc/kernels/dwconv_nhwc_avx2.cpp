// AVX2 + FMA fused depthwise conv + bias + activation, NHWC: 8 channels per vector, 1 output row
// x 7 or 8 pixels of accumulators per step (16 registers). The algorithm is in dwconv_nhwc.inc.
// Compiled with AVX2 flags: internal linkage, no STL.
#include <cstdint>

#include "kernels.h"
#include "simd_avx2.h"

namespace mnv3ext::avx2 {
namespace {
constexpr int kNhwcMaxRows = 1;
constexpr int kVectorRegisters = 16;
}  // namespace
#include "dwconv_nhwc.inc"
}  // namespace mnv3ext::avx2
