// AVX-512 vector layer shared by the AVX-512 kernel files (only they include it: it needs the
// AVX-512 compile flags). Everything has internal linkage, so no AVX-512 code can be picked by
// the linker for a baseline caller.
// Activations, written once for both x86 layers: simd_common.inc.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

// GCC 12 reports the _mm512_undefined_ps() inside min/max/unpack intrinsics as (maybe-)
// uninitialized; the intrinsics overwrite every lane.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace mnv3ext::avx512 {
namespace {

constexpr int64_t kLanes = 16;
using Vec = __m512;
using Mask = __mmask16;

inline Mask lanes_mask(int64_t n) {  // first min(n, 16) lanes
  return n >= kLanes ? Mask(0xFFFF) : Mask((1u << n) - 1u);
}
inline Mask full_mask() { return Mask(0xFFFF); }
inline Mask no_mask() { return Mask(0); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vloadm(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline void vstorem(float* p, Mask m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vset1(float x) { return _mm512_set1_ps(x); }
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
// max(a, b) = a > b ? a : b and min(a, b) = a < b ? a : b: a NaN in b comes through.
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }

// Stride-2 deinterleave: the 16 even-position floats of the 32 in (lo, hi).
inline Vec deinterleave2v(Vec lo, Vec hi) {
  const __m512i idx =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_ps(lo, idx, hi);
}
// The 16 odd-position floats of the 32 in (lo, hi).
inline Vec deinterleave2v_odd(Vec lo, Vec hi) {
  const __m512i idx =
      _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_permutex2var_ps(lo, idx, hi);
}

#include "simd_common.inc"

// In-register transpose of 16 rows of 16 floats: r[i][j] -> r[j][i].
inline void transpose16(Vec r[16]) {
  Vec t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4i + j], 128-bit lane k: column 4k + j of rows 4i..4i+3; transpose the 128-bit lanes.
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
  }
}

}  // namespace
}  // namespace mnv3ext::avx512
