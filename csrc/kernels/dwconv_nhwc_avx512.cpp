// AVX-512 fused depthwise conv + bias + activation, NHWC: 16 channels per vector, 2 output rows
// x 7 or 8 pixels of accumulators per step (32 registers). The algorithm is in dwconv_nhwc.inc.
// Compiled with AVX-512 flags: internal linkage, no STL.
#include <cstdint>

#include "kernels.h"
#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {
constexpr int kNhwcMaxRows = 3;
constexpr int kVectorRegisters = 32;
}  // namespace
#include "dwconv_nhwc.inc"
}  // namespace mnv3ext::avx512
