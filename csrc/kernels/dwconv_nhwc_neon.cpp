// NEON fused depthwise conv + bias + activation, NHWC: 4 channels per vector, 2 output rows
// x 7 or 8 pixels of accumulators per step (32 registers: 16 accumulators, up to 10 weight
// vectors for 5x5, 1 input pixel). The algorithm is in dwconv_nhwc.inc. Channel tails (C % 4)
// load and store lane by lane (simd_neon.h): nothing past the exact end of a buffer is touched.
#include <cstdint>

#include "kernels.h"
#include "simd_neon.h"

namespace mnv3ext::neon {
namespace {
constexpr int kNhwcMaxRows = 2;
constexpr int kVectorRegisters = 32;
}  // namespace
#include "dwconv_nhwc.inc"
}  // namespace mnv3ext::neon
