// The taps of one depthwise output pixel that fall inside the input, in (ky, kx) order: the tap
// loop of the exact (scalar) kernels, shared by dwconv_scalar.cpp and the NEON exact fallback.
// Internal linkage: every including file (and ISA) gets its own copy.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace mnv3ext {
namespace {

// f(t, iy, ix) for every tap t = ky * kernel_w + kx of output (oy, ox) whose input pixel
// (iy, ix) is inside the input, in (ky, kx) order; padding taps are skipped.
template <class F>
inline void for_each_input_tap(const DwConvShape& s, int64_t oy, int64_t ox, F&& f) {
  for (int ky = 0; ky < s.kernel_h; ++ky) {
    const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
    if (iy < 0 || iy >= s.in_h) continue;
    for (int kx = 0; kx < s.kernel_w; ++kx) {
      const int64_t ix = ox * s.stride_w - s.pad_left + int64_t(kx) * s.dilation_w;
      if (ix < 0 || ix >= s.in_w) continue;
      f(ky * s.kernel_w + kx, iy, ix);
    }
  }
}

}  // namespace
}  // namespace mnv3ext
