// AVX2 + FMA vector layer shared by the AVX2 kernel files (only they include it: it needs the
// AVX2 compile flags). Everything has internal linkage, so no AVX2 code can be picked by the
// linker for a baseline caller. Masks are vmaskmov masks: lane i active when its sign bit is set.
//
// Activations, written once for both x86 layers: simd_common.inc.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels.h"

namespace mnv3ext::avx2 {
namespace {

constexpr int64_t kLanes = 8;
using Vec = __m256;
using Mask = __m256i;  // lane i active when its sign bit is set (vmaskmov)

inline Mask lanes_mask(int64_t n) {  // first min(n, 8) lanes
  const int32_t k = int32_t(n >= kLanes ? kLanes : n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Mask full_mask() { return _mm256_set1_epi32(-1); }
inline Mask no_mask() { return _mm256_setzero_si256(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
// vmaskmovps neither reads nor faults on inactive lanes.
inline Vec vloadm(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline void vstorem(float* p, Mask m, Vec v) { _mm256_maskstore_ps(p, m, v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vset1(float x) { return _mm256_set1_ps(x); }
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
// max(a, b) = a > b ? a : b and min(a, b) = a < b ? a : b: a NaN in b comes through.
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }

// Stride-2 deinterleave: the 8 even-position floats of the 16 in (lo, hi).
inline Vec deinterleave2v(Vec lo, Vec hi) {
  const __m256 even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));  // l0 l2 h0 h2 | l4 l6 h4 h6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0)));
}

#include "simd_common.inc"

// In-register transpose of 8 rows of 8 floats: r[i][j] -> r[j][i].
inline void transpose8(Vec r[8]) {
  Vec t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4i + j], 128-bit lane k: column 4k + j of rows 4i..4i+3.
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
    t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
  }
  for (int j = 0; j < 8; ++j) r[j] = t[j];
}

}  // namespace
}  // namespace mnv3ext::avx2
