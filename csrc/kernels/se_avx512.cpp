// AVX-512 building blocks of the fused squeeze-excite (see driver.cpp for the sequence).
//
// Reductions (plane sums, matvec rows) work on groups of 16 rows at once: each row gets one
// 16-lane accumulator, filled in a fixed order (full vectors, then one masked tail), and the
// 16 accumulators are reduced together by a transposing add tree that yields the 16 sums in
// one vector. Per row the tree adds lane i and i+8, then i+4, i+2, i+1, whatever the other
// rows of the group are, so every result depends only on its own row and the row length:
// results are the same for any split of the rows between calls (threads). A group with fewer
// than 16 rows re-reads its first row for the missing ones and drops those sums, which keeps
// the inner loop free of branches.
//
// Pixel sums (channels-last) accumulate each channel over the pixels in order, as the
// scalar reference does, with up to 128 channels in flight for instruction-level parallelism.
#include <immintrin.h>

#include "kernels.h"
#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

// lanes_mask without its clamp, for n known to be in [0, 16] (one shift, no compare).
inline Mask tail_mask(int64_t n) { return Mask((1u << n) - 1u); }

// Lanes [lo, hi) of a 16-lane vector, clamped to [0, 16).
inline __mmask16 range_mask(int64_t lo, int64_t hi) {
  auto first = [](int64_t n) { return tail_mask(n < 0 ? 0 : (n > kLanes ? kLanes : n)); };
  return __mmask16(first(hi) & ~first(lo));
}

// One step of the add tree: shuffle(x, y, Lo) + shuffle(x, y, Hi), the shuffle moving 128-bit
// quarters (Quarters) or floats within each quarter.
template <bool Quarters, int Lo, int Hi>
inline __m512 add_shuffled(__m512 x, __m512 y) {
  if constexpr (Quarters)
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, Lo), _mm512_shuffle_f32x4(x, y, Hi));
  else
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, Lo), _mm512_shuffle_ps(x, y, Hi));
}

// Transposing add tree: out lane r = sum of the 16 lanes of v[r] (in the fixed tree order).
inline __m512 reduce16(__m512 v[16]) {
  // Step 1 (lane i + lane i+8): pair rows (r, r+1) into one vector, x.q0 x.q1 y.q0 y.q1 +
  // x.q2 x.q3 y.q2 y.q3: low 256 bits hold row r's 8 partial sums, high 256 bits row r+1's.
  __m512 a[8];
  for (int r = 0; r < 8; ++r)
    a[r] = add_shuffled<true, _MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(v[2 * r], v[2 * r + 1]);
  // a[r] = [row 2r: 8 | row 2r+1: 8] as 128-bit quarters [2r.q0, 2r.q1, 2r+1.q0, 2r+1.q1].
  // Step 2 (i + i+4): quarters q0 + q1 of each row (x.q0 x.q2 y.q0 y.q2 + x.q1 x.q3 y.q1 y.q3).
  __m512 b[4];
  for (int r = 0; r < 4; ++r)
    b[r] = add_shuffled<true, _MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(a[2 * r], a[2 * r + 1]);
  // b[r]: quarter k holds 4 partial sums of row 4r + k.
  // Step 3 (i + i+2): within each 128-bit lane, elements 0,1 + 2,3 (x0 x1 y0 y1 + x2 x3 y2 y3).
  __m512 c[2];
  for (int r = 0; r < 2; ++r)
    c[r] = add_shuffled<false, _MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(b[2 * r], b[2 * r + 1]);
  // c[r] quarter k: [row 8r+k: 2 partials, row 8r+4+k: 2 partials].
  // Step 4 (i + i+1).
  const __m512 s = add_shuffled<false, _MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(c[0], c[1]);
  // s quarter k = rows [k, 4+k, 8+k, 12+k]; put row r in lane r.
  const __m512i order =
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutex2var_ps(s, order, s);
}

// sums[r] = sum of len floats at rows[r] (times x if kDot) for r < count (count in [1, 16]);
// rows[count..15] must be valid pointers (their sums are discarded).
template <bool kDot>
inline __m512 group_sums(const float* const rows[16], const float* x, int64_t len) {
  __m512 acc[16];
  for (int r = 0; r < 16; ++r) acc[r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + kLanes <= len; k += kLanes) {
    if (kDot) {
      const __m512 xv = _mm512_loadu_ps(x + k);
      for (int r = 0; r < 16; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(rows[r] + k), xv, acc[r]);
    } else {
      for (int r = 0; r < 16; ++r) acc[r] = _mm512_add_ps(acc[r], _mm512_loadu_ps(rows[r] + k));
    }
  }
  if (k < len) {
    const __mmask16 m = tail_mask(len - k);
    if (kDot) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
      for (int r = 0; r < 16; ++r)
        acc[r] = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(m, rows[r] + k), xv, acc[r], m);
    } else {
      for (int r = 0; r < 16; ++r)
        acc[r] = _mm512_mask_add_ps(acc[r], m, acc[r], _mm512_maskz_loadu_ps(m, rows[r] + k));
    }
  }
  return reduce16(acc);
}

#define MNV3EXT_UNROLL _Pragma("GCC unroll 16")

// Dot products of rows whose length is 8 (mod 16) floats, the first one 32-byte aligned: rows
// then start alternately at offset 0 and 8 of a 64-byte line, and the plain loop above would
// split every other load across two lines. Here each row is read as the `lines` aligned lines
// that contain it (lanes outside the row masked off) against a copy of x shifted by the row's
// offset (xs[r % 2]), so no load straddles lines. Row r's accumulator adds its line i in
// order of i with lane j holding the floats at addresses = j (mod 16): the sum depends only
// on the row's data and address, not on the group.
inline __m512 group_dots_pairs(const float* const line[16], const float* const xs[2],
                               const __mmask16 first[2], const __mmask16 last[2],
                               int64_t lines) {
  __m512 acc[16];
  MNV3EXT_UNROLL
  for (int r = 0; r < 16; ++r)
    acc[r] = _mm512_mul_ps(_mm512_maskz_load_ps(first[r % 2], line[r]), _mm512_load_ps(xs[r % 2]));
  for (int64_t i = 1; i + 1 < lines; ++i) {
    const __m512 x0 = _mm512_load_ps(xs[0] + i * kLanes), x1 = _mm512_load_ps(xs[1] + i * kLanes);
    MNV3EXT_UNROLL
    for (int r = 0; r < 16; ++r)
      acc[r] = _mm512_fmadd_ps(_mm512_load_ps(line[r] + i * kLanes), r % 2 ? x1 : x0, acc[r]);
  }
  const int64_t i = lines - 1;
  MNV3EXT_UNROLL
  for (int r = 0; r < 16; ++r)
    acc[r] = _mm512_mask3_fmadd_ps(_mm512_maskz_load_ps(last[r % 2], line[r] + i * kLanes),
                                   _mm512_load_ps(xs[r % 2] + i * kLanes), acc[r], last[r % 2]);
  return reduce16(acc);
}

// Vector v of a run of `left` floats: lanes [16v, min(left, 16v + 16)).
inline __mmask16 vector_mask(int64_t left, int v) {
  const int64_t n = left - int64_t(v) * kLanes;
  return tail_mask(n < 0 ? 0 : (n > kLanes ? kLanes : n));
}

// sums[c] = sum over pixels (in order) of in[p * stride + c], c < left <= 16 * NV.
template <int NV>
inline void pixel_sum_chunk(const float* in, int64_t pixels, int64_t stride, int64_t left,
                            float* sums) {
  __mmask16 m[NV];
  __m512 acc[NV];
  for (int v = 0; v < NV; ++v) m[v] = vector_mask(left, v), acc[v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pixels; ++p, in += stride)
    for (int v = 0; v < NV; ++v)
      acc[v] = _mm512_add_ps(acc[v], _mm512_maskz_loadu_ps(m[v], in + v * kLanes));
  for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(sums + v * kLanes, m[v], acc[v]);
}

// scale_pixels for channels <= 16 * NV, the gate held in registers.
template <int NV>
inline void scale_pixels_small(const float* input, const float* gate, float* output,
                               int64_t pixels, int64_t channels) {
  __mmask16 m[NV];
  __m512 g[NV];
  for (int v = 0; v < NV; ++v)
    m[v] = vector_mask(channels, v), g[v] = _mm512_maskz_loadu_ps(m[v], gate + v * kLanes);
  for (int64_t p = 0; p < pixels; ++p) {
    const float* in = input + p * channels;
    float* out = output + p * channels;
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(out + v * kLanes, m[v],
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(m[v], in + v * kLanes), g[v]));
  }
}

}  // namespace

void plane_sum(const float* input, int64_t planes, int64_t hw, float* sums) {
  for (int64_t p0 = 0; p0 < planes; p0 += 16) {
    const int64_t count = planes - p0 < 16 ? planes - p0 : 16;
    const float* rows[16];
    for (int r = 0; r < 16; ++r) rows[r] = input + (p0 + (r < count ? r : 0)) * hw;
    const __m512 s = group_sums<false>(rows, nullptr, hw);
    _mm512_mask_storeu_ps(sums + p0, tail_mask(count), s);
  }
}

void matvec(const float* weight, const float* bias, const float* x, int64_t rows, int64_t cols,
            float* y) {
  const int64_t offset = int64_t(reinterpret_cast<uintptr_t>(weight) % 64) / int64_t(sizeof(float));
  // Rows of 8 (mod 16) floats from a 32-byte aligned start (fc2 of most MobileNetV3 SE
  // layers: S = 24, 40, 72, 120, 168): aligned lines, see group_dots_pairs.
  const bool pairs = cols % kLanes == 8 && offset % 8 == 0 && cols > kLanes && rows >= 2;
  const int64_t lines = (cols + 8) / kLanes;
  const float* xs[2];
  __mmask16 first[2], last[2];
  if (pairs) {
    float* const copies = thread_scratch(2 * lines * kLanes);
    for (int q = 0; q < 2; ++q) {  // row q (and q + 2k) starts at line offset o
      const int64_t o = (offset + q * 8) % kLanes;
      float* copy = copies + q * lines * kLanes;
      for (int64_t i = 0; i < lines; ++i) {  // copy[16i + j] = x[16i + j - o], zero outside x
        const int64_t k = i * kLanes - o;
        const __mmask16 m = range_mask(-k, cols - k);
        _mm512_store_ps(copy + i * kLanes, _mm512_maskz_loadu_ps(m, x + k));
      }
      xs[q] = copy;
      first[q] = o == 0 ? __mmask16(0xFFFF) : __mmask16(0xFF00);
      last[q] = o == 0 ? __mmask16(0x00FF) : __mmask16(0xFFFF);
    }
  }
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int64_t count = rows - r0 < 16 ? rows - r0 : 16;
    const __mmask16 m = tail_mask(count);
    __m512 s;
    if (pairs) {  // r0 is even, so row r0 + r starts at the offset of row r % 2
      const float* line[16];
      for (int r = 0; r < 16; ++r) {
        // Rows past the end repeat a real row of the same parity (their sums are masked off):
        // r0 + 1 when it exists, else r0 - 1 (a lone last row has r0 >= 16, as rows >= 2).
        const int64_t spare = r % 2 == 0 ? r0 : (r0 + 1 < rows ? r0 + 1 : r0 - 1);
        const int64_t row = r < count ? r0 + r : spare;
        line[r] = weight + row * cols - (offset + (row % 2) * 8) % kLanes;
      }
      s = group_dots_pairs(line, xs, first, last, lines);
    } else {
      const float* w[16];
      for (int r = 0; r < 16; ++r) w[r] = weight + (r0 + (r < count ? r : 0)) * cols;
      s = group_sums<true>(w, x, cols);
    }
    if (bias) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, bias + r0));
    _mm512_mask_storeu_ps(y + r0, m, s);
  }
}

#include "se_simd.inc"

}  // namespace mnv3ext::avx512
