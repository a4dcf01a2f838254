// AVX-512 direct stem convolution (kernels.h, StemRowsFn): MobileNetV3's 3x3 stride-2 conv of
// the NCHW image (3 -> 16 channels) into NHWC, without im2col or a GEMM.
//
// 32 output pixels of a row per step, one vector per output channel and 16 pixels. Each input
// row segment of a channel is loaded as two vectors and split into its even and odd pixels:
// the kx = 0, 1 taps of 16 outputs; the even pixels moved by one are the kx = 2 taps. Every
// (tap, output channel) is then one FMA per pixel vector with the weight broadcast into a
// register once for both, and the sums are transposed to NHWC at the end. The GEMM path
// broadcasts one input value per FMA through a tap offset table instead: a warm 224x224 stem
// took 95 us there against 86 here (`mnv3ext_gemm_bench stem`; this and the numbers below:
// 2026-12-02, AMD Zen 5 VM, docs/performance.md). In a model the image comes from memory: see
// RowFetch.
//
// Each output is bias + its 27 (in_c x 9) products in (ky, c, kx) order, whatever rows a
// thread runs; taps outside the image multiply zeros (as the GEMM path's im2col does).
#include <algorithm>

#include "kernels/simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

inline const float* at(const float* row, int64_t x) {
  // As an integer: at the left edge the first pixels lie before the row (never read).
  return reinterpret_cast<const float*>(reinterpret_cast<uintptr_t>(row) + uintptr_t(x * 4));
}

// Pixels [x0, x0 + 16) of a row, zero outside [0, width) and for a null row (padding).
inline Vec load_row(const float* row, int64_t x0, int64_t width) {
  if (!row) return vzero();
  if (x0 >= 0 && x0 + kLanes <= width) return vload(row + x0);
  const int64_t lo = std::max<int64_t>(0, -x0), hi = std::min<int64_t>(kLanes, width - x0);
  if (hi <= lo) return vzero();
  return vloadm(at(row, x0), Mask(lanes_mask(hi) & ~lanes_mask(lo)));  // masked lanes are not read
}

// The kx = 0, 1, 2 taps of 16 outputs whose input starts at x0: pixels x0 + 2i, x0 + 2i + 1 and
// x0 + 2i + 2 of the row.
inline void row_taps(const float* row, int64_t x0, int64_t width, Vec (&taps)[3]) {
  const Vec lo = load_row(row, x0, width), hi = load_row(row, x0 + kLanes, width);
  const Vec last = load_row(row, x0 + 2 * kLanes, std::min<int64_t>(width, x0 + 2 * kLanes + 1));
  taps[0] = deinterleave2v(lo, hi);
  taps[1] = deinterleave2v_odd(lo, hi);
  taps[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(last), _mm512_castps_si512(taps[0]), 1));
}

// PV x 16 outputs of a row from input x0 = 2 * ox0 - pad_left on. The output channels go in two
// halves of 8, so that each broadcast weight feeds PV FMAs from a register; the halves' sums
// are staged channel-major, then transposed to NHWC 16 pixels at a time.
template <Activation A, int PV>
void stem_pixels(const float* const* rows, int64_t in_c, const float* packed, int64_t x0, int64_t width,
                 float* out, int64_t out_c, int pixels) {
  constexpr int kHalf = kGemmPanel / 2;
  alignas(64) float staged[kGemmPanel][PV * kLanes];
  for (int half = 0; half < 2; ++half) {
    Vec acc[kHalf][PV];
#pragma GCC unroll 8
    for (int o = 0; o < kHalf; ++o)
#pragma GCC unroll 2
      for (int v = 0; v < PV; ++v) acc[o][v] = vset1(packed[half * kHalf + o]);
    for (int ky = 0; ky < 3; ++ky) {
      for (int64_t c = 0; c < in_c; ++c) {
        const float* row = rows[ky * kStemMaxInC + c];
        Vec taps[PV][3];
#pragma GCC unroll 2
        for (int v = 0; v < PV; ++v) row_taps(row, x0 + 2 * kLanes * v, width, taps[v]);
#pragma GCC unroll 3
        for (int kx = 0; kx < 3; ++kx) {
          const float* w = packed + (1 + (ky * 3 + kx) * in_c + c) * kGemmPanel + half * kHalf;
#pragma GCC unroll 8
          for (int o = 0; o < kHalf; ++o) {
            const Vec wo = vset1(w[o]);
#pragma GCC unroll 2
            for (int v = 0; v < PV; ++v) acc[o][v] = vfma(wo, taps[v][kx], acc[o][v]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int o = 0; o < kHalf; ++o)
#pragma GCC unroll 2
      for (int v = 0; v < PV; ++v) _mm512_store_ps(&staged[half * kHalf + o][v * kLanes], acc[o][v]);
  }
  const Mask m = lanes_mask(out_c);
  for (int v = 0; v < PV; ++v) {
    Vec t[kGemmPanel];
#pragma GCC unroll 16
    for (int o = 0; o < kGemmPanel; ++o) t[o] = activate_t<A>(_mm512_load_ps(&staged[o][v * kLanes]));
    transpose16(t);  // t[i]: pixel i's 16 channels
    const int count = std::min(int(kLanes), pixels - v * int(kLanes));
    for (int i = 0; i < count; ++i) vstorem(out + (v * kLanes + i) * out_c, m, t[i]);
  }
}

// A model's stem finds its image (and often its output buffer) out of cache on every call. While
// a row computes, the lines of the row kRowsAhead further down are fetched a few per step: its
// two new input rows per channel (stride 2) and its output row. (A read-ahead pass over 16
// rows' input before computing them, the GEMM path's way, leaves the core idle meanwhile: the
// stem inside Large took 113-116 us that way, 97 us with these fetches.)
constexpr int64_t kRowsAhead = 4;

struct RowFetch {
  const char* begin[2 * kStemMaxInC + 1];
  int64_t lines[2 * kStemMaxInC + 1];
  int extents = 0, at = 0;
  int64_t line = 0, total = 0;
  void add(const float* first, int64_t floats) {
    begin[extents] = reinterpret_cast<const char*>(first);
    lines[extents] = (floats * 4 + 63) / 64;
    total += lines[extents++];
  }
  void issue(int64_t count) {
    for (; count > 0 && at < extents; --count) {
      _mm_prefetch(begin[at] + line * 64, _MM_HINT_T0);
      if (++line == lines[at]) line = 0, ++at;
    }
  }
};

template <Activation A>
void stem_rows_t(const ConvShape& s, const float* input, const int64_t strides[4], const float* packed,
                 float* output, int64_t row_begin, int64_t row_end) {
  const int64_t C = s.in_c, OW = s.out_w;
  const float* rows[3 * kStemMaxInC];
  auto input_row = [&](int64_t n, int64_t c, int64_t y) {
    return input + n * strides[0] + c * strides[1] + y * strides[2];
  };
  const int64_t steps = (OW + 2 * kLanes - 1) / (2 * kLanes) + 1;  // at most, per row
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t n = r / s.out_h, oy = r % s.out_h;
    for (int ky = 0; ky < 3; ++ky) {
      const int64_t iy = oy * 2 - s.pad_top + ky;
      for (int64_t c = 0; c < C; ++c)
        rows[ky * kStemMaxInC + c] = iy < 0 || iy >= s.in_h ? nullptr : input_row(n, c, iy);
    }
    RowFetch fetch;
    if (oy + kRowsAhead < s.out_h) {
      const int64_t iy = (oy + kRowsAhead) * 2 - s.pad_top;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = std::max<int64_t>(0, iy + 1); y <= std::min(s.in_h - 1, iy + 2); ++y)
          fetch.add(input_row(n, c, y), s.in_w);
    }
    if (r + kRowsAhead < row_end) fetch.add(output + (r + kRowsAhead) * OW * s.out_c, OW * s.out_c);
    const int64_t per_step = (fetch.total + steps - 1) / steps;
    float* out = output + r * OW * s.out_c;
    // Steps of 32 pixels, then of 16; the last one moved back to end at the row's end (its
    // overlap is recomputed with the same arithmetic), or fewer when the row is narrower.
    int64_t ox = 0;
    for (; ox + 2 * kLanes <= OW; ox += 2 * kLanes) {
      fetch.issue(per_step);
      stem_pixels<A, 2>(rows, C, packed, 2 * ox - s.pad_left, s.in_w, out + ox * s.out_c, s.out_c, 2 * kLanes);
    }
    for (; ox < OW; ox += kLanes) {
      fetch.issue(per_step);
      const int64_t start = OW >= kLanes ? std::min(ox, OW - kLanes) : 0;
      stem_pixels<A, 1>(rows, C, packed, 2 * start - s.pad_left, s.in_w, out + start * s.out_c, s.out_c,
                        int(std::min<int64_t>(kLanes, OW)));
    }
  }
}

void stem_rows_avx512(const ConvShape& s, const float* input, const int64_t strides[4], const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  switch (s.activation) {
    case Activation::kRelu: return stem_rows_t<Activation::kRelu>(s, input, strides, packed, output, row_begin, row_end);
    case Activation::kRelu6: return stem_rows_t<Activation::kRelu6>(s, input, strides, packed, output, row_begin, row_end);
    case Activation::kHardswish:
      return stem_rows_t<Activation::kHardswish>(s, input, strides, packed, output, row_begin, row_end);
    default: return stem_rows_t<Activation::kNone>(s, input, strides, packed, output, row_begin, row_end);
  }
}

}  // namespace

const StemRowsFn stem_rows = stem_rows_avx512;

}  // namespace mnv3ext::avx512
