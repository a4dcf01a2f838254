// AVX2 + FMA building blocks of the fused squeeze-excite (see driver.cpp for the sequence).
//
// Reductions (plane sums, matvec rows) work on groups of 8 rows at once: each row gets one
// 8-lane accumulator, filled in a fixed order (full vectors, then one masked tail whose
// missing lanes load as zero), and the 8 accumulators are reduced together by a transposing
// add tree that yields the 8 sums in one vector. Per row the tree adds lane i and i+4, then
// i+2, then i+1, whatever the other rows of the group are, so every result depends only on
// its own row and the row length: results are the same for any split of the rows between
// calls (threads). A group with fewer than 8 rows re-reads its first row for the missing
// ones and drops those sums, which keeps the inner loop free of branches.
//
// Pixel sums (channels-last) accumulate each channel over the pixels in order, as the
// scalar reference does, with up to 64 channels in flight for instruction-level parallelism.
#include <immintrin.h>

#include "kernels.h"
#include "simd_avx2.h"

namespace mnv3ext::avx2 {
namespace {

// Transposing add tree: out lane r = sum of the 8 lanes of v[r] (in the fixed tree order).
inline __m256 reduce8(const __m256 v[8]) {
  // Step 1 (lane i + lane i+4): t[r] = [row 2r: 4 partials | row 2r+1: 4 partials].
  __m256 t[4];
  for (int r = 0; r < 4; ++r) {
    const __m256 x = v[2 * r], y = v[2 * r + 1];
    t[r] = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  }
  // Step 2 (i + i+2): u[r] = [row 4r: 2, row 4r+2: 2 | row 4r+1: 2, row 4r+3: 2].
  __m256 u[2];
  for (int r = 0; r < 2; ++r) {
    const __m256 x = t[2 * r], y = t[2 * r + 1];
    u[r] = _mm256_add_ps(_mm256_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Step 3 (i + i+1): s = [r0 r2 r4 r6 | r1 r3 r5 r7].
  const __m256 s = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Sums of len floats at rows[r] (times x if kDot), r < 8; every rows[r] must be valid.
template <bool kDot>
inline __m256 group_sums(const float* const rows[8], const float* x, int64_t len) {
  __m256 acc[8];
  for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + kLanes <= len; k += kLanes) {
    if (kDot) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      for (int r = 0; r < 8; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[r] + k), xv, acc[r]);
    } else {
      for (int r = 0; r < 8; ++r) acc[r] = _mm256_add_ps(acc[r], _mm256_loadu_ps(rows[r] + k));
    }
  }
  if (k < len) {
    const __m256i m = lanes_mask(len - k);
    if (kDot) {
      const __m256 xv = _mm256_maskload_ps(x + k, m);
      for (int r = 0; r < 8; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_maskload_ps(rows[r] + k, m), xv, acc[r]);
    } else {
      for (int r = 0; r < 8; ++r) acc[r] = _mm256_add_ps(acc[r], _mm256_maskload_ps(rows[r] + k, m));
    }
  }
  return reduce8(acc);
}

inline void store_first(float* out, int64_t count, __m256 v) {
  if (count == kLanes)
    _mm256_storeu_ps(out, v);
  else
    _mm256_maskstore_ps(out, lanes_mask(count), v);
}

// sums[c] = sum over pixels (in order) of in[p * stride + c], c < left <= 8 * NV.
// Full vectors use plain loads; only the last one may be partial.
template <int NV>
inline void pixel_sum_chunk(const float* in, int64_t pixels, int64_t stride, int64_t left,
                            float* sums) {
  const __m256i m = lanes_mask(left - (NV - 1) * kLanes);
  __m256 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t p = 0; p < pixels; ++p, in += stride) {
    for (int v = 0; v < NV - 1; ++v)
      acc[v] = _mm256_add_ps(acc[v], _mm256_loadu_ps(in + v * kLanes));
    acc[NV - 1] = _mm256_add_ps(acc[NV - 1], _mm256_maskload_ps(in + (NV - 1) * kLanes, m));
  }
  for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(sums + v * kLanes, acc[v]);
  _mm256_maskstore_ps(sums + (NV - 1) * kLanes, m, acc[NV - 1]);
}

// scale_pixels for channels <= 8 * NV, the gate held in registers.
template <int NV>
inline void scale_pixels_small(const float* input, const float* gate, float* output,
                               int64_t pixels, int64_t channels) {
  const __m256i m = lanes_mask(channels - (NV - 1) * kLanes);
  const bool last_full = channels == NV * kLanes;
  __m256 g[NV];
  for (int v = 0; v < NV - 1; ++v) g[v] = _mm256_loadu_ps(gate + v * kLanes);
  g[NV - 1] = _mm256_maskload_ps(gate + (NV - 1) * kLanes, m);
  for (int64_t p = 0; p < pixels; ++p) {
    const float* in = input + p * channels;
    float* out = output + p * channels;
    for (int v = 0; v < NV - 1; ++v)
      _mm256_storeu_ps(out + v * kLanes, _mm256_mul_ps(_mm256_loadu_ps(in + v * kLanes), g[v]));
    const __m256 last = _mm256_mul_ps(_mm256_maskload_ps(in + (NV - 1) * kLanes, m), g[NV - 1]);
    if (last_full)  // vmaskmovps stores are slow: use them only for a real tail
      _mm256_storeu_ps(out + (NV - 1) * kLanes, last);
    else
      _mm256_maskstore_ps(out + (NV - 1) * kLanes, m, last);
  }
}

}  // namespace

void plane_sum(const float* input, int64_t planes, int64_t hw, float* sums) {
  for (int64_t p0 = 0; p0 < planes; p0 += kLanes) {
    const int64_t count = planes - p0 < kLanes ? planes - p0 : kLanes;
    const float* rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = input + (p0 + (r < count ? r : 0)) * hw;
    store_first(sums + p0, count, group_sums<false>(rows, nullptr, hw));
  }
}

void matvec(const float* weight, const float* bias, const float* x, int64_t rows, int64_t cols,
            float* y) {
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t count = rows - r0 < kLanes ? rows - r0 : kLanes;
    const float* w[8];
    for (int r = 0; r < 8; ++r) w[r] = weight + (r0 + (r < count ? r : 0)) * cols;
    __m256 s = group_sums<true>(w, x, cols);
    if (bias) s = _mm256_add_ps(s, _mm256_maskload_ps(bias + r0, lanes_mask(count)));
    store_first(y + r0, count, s);
  }
}

#include "se_simd.inc"

}  // namespace mnv3ext::avx2
