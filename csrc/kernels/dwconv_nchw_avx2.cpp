// AVX2 + FMA fused depthwise conv + bias + activation, NCHW (planar).
//
// Square 3x3 / 5x5 kernels with stride 1 or 2 (any padding), no dilation, are computed straight
// from the input in strips of output rows (strip_k); planes of one 8-column block and at most
// 7 output rows (7x7 outputs) go two planes at a time (pair_k). Outputs narrower than 3/4 of
// their row vectors (e.g. 4 or 5 wide) go 8 planes at a time, channel-interleaved through 8x8
// transposes. Anything else copies each plane into a zero-padded, stride-phase-split scratch
// (nchw_plane_generic).
//
// Every output is bias + taps in (ky, kx) order, one FMA per tap (the strip kernels skip taps
// on padding rows), computed by exactly one call whose path depends on the shape only: results
// do not depend on how planes are split between threads.
// Compiled with AVX2 flags: internal linkage, no STL, scratch from thread_scratch().
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "simd_avx2.h"

namespace mnv3ext::avx2 {
namespace {

// Interleaved pixels per step and whether the weights stay in registers.
constexpr int interleaved_pixels(int taps) { return taps <= 9 ? 4 : 8; }
constexpr bool interleaved_weights_in_regs(int taps) { return taps <= 9; }

#include "dwconv_nchw_generic.inc"

// ---- NCHW, square 3x3 / 5x5 kernels, stride 1 or 2 (any padding), no dilation: straight
// from the input. The plane is walked in strips of R output rows (balanced: q or q + 1 rows);
// the strip's input rows are read in place and rows above / below the input are skipped. Per
// 8-column block each input row is loaded once per tap column and that vector feeds every
// output row of the strip it is a tap of, so the R accumulators stay in registers (R
// independent FMA chains) and the FMAs take register inputs; the 16 ymm registers leave no
// room for the weights, which are pre-broadcast once per plane into an aligned stack array and
// taken as FMA memory operands. Blocks whose columns are all inside the row use plain loads;
// the (usually two) edge blocks use masked loads that zero the columns outside the input and
// never touch memory outside the row. Stride 2 splits each pair of row vectors into even / odd
// columns with one vshufps each, leaving the outputs in lane order 0 1 4 5 2 3 6 7 (the same
// for every tap); the accumulators are put back in order with one vpermpd before the store.
// For one output the taps come in (ky, kx) order; padding columns contribute w * 0.
template <int K, int S>
constexpr int strip_rows() {
  return S == 1 ? 12 : 10;
}

#include "dwconv_nchw_planes.inc"

// A value the compiler must keep in a register: otherwise it folds the load into every FMA
// that uses it (one load per FMA, mostly split across cache lines).
inline Vec keep(Vec x) {
  asm("" : "+x"(x));
  return x;
}

// Lanes l with 0 <= lo + l < n.
inline Mask range_mask(int64_t lo, int64_t n) {
  int64_t b = -lo, e = n - lo;
  b = b < 0 ? 0 : (b > kLanes ? kLanes : b);
  e = e < 0 ? 0 : (e > kLanes ? kLanes : e);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(b)), iota),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(e)), iota));
}

// Row u of vectors at o + u * stride, activated (stride 2: lanes put back in order first).
template <int N, int S, Activation A>
inline void store_rows_t(const Vec* acc, float* o, int64_t stride, bool full, Mask m) {
#pragma GCC unroll 16
  for (int u = 0; u < N; ++u, o += stride) {
    Vec x = acc[u];
    if constexpr (S == 2)
      x = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(x), _MM_SHUFFLE(3, 1, 2, 0)));
    x = activate_t<A>(x);
    if (full) vstore(o, x);
    else vstorem(o, m, x);
  }
}
template <int N, int S>
inline void store_rows(Activation act, const Vec* acc, float* o, int64_t stride, bool full,
                       Mask m) {
  switch (act) {
    case Activation::kRelu: return store_rows_t<N, S, Activation::kRelu>(acc, o, stride, full, m);
    case Activation::kRelu6: return store_rows_t<N, S, Activation::kRelu6>(acc, o, stride, full, m);
    case Activation::kHardswish:
      return store_rows_t<N, S, Activation::kHardswish>(acc, o, stride, full, m);
    default: return store_rows_t<N, S, Activation::kNone>(acc, o, stride, full, m);
  }
}

// acc[u] += w[ky * K + kx] * x for every strip row u whose tap row ky = i - S u is in [0, K):
// x is column kx of the strip's input row i.
template <int K, int S, int R>
__attribute__((always_inline)) inline void feed_column(const Vec* w, int i, int kx, Vec x,
                                                       Vec* acc) {
#pragma GCC unroll 16
  for (int u = 0; u < R; ++u) {
    const int ky = i - S * u;
    if (ky >= 0 && ky < K) acc[u] = vfma(w[ky * K + kx], x, acc[u]);
  }
}

// Stride 2: the even / odd columns of the vector pair (l, h) at input column 2j are tap columns
// 2j and 2j + 1 of input row i (one vshufps each, lanes in order 0 1 4 5 2 3 6 7).
template <int K, int R>
__attribute__((always_inline)) inline void feed_pair(const Vec* w, int i, int j, Vec l, Vec h,
                                                     Vec* acc) {
#pragma GCC unroll 2
  for (int d = 0; d < 2; ++d) {
    const int kx = 2 * j + d;
    if (kx >= K) break;
    const Vec x = keep(d == 0 ? _mm256_shuffle_ps(l, h, _MM_SHUFFLE(2, 0, 2, 0))
                              : _mm256_shuffle_ps(l, h, _MM_SHUFFLE(3, 1, 3, 1)));
    feed_column<K, 2, R>(w, i, kx, x, acc);
  }
}

// One 8-column block of a strip: input column b (stride 1: b + kx for tap kx; stride 2:
// b + 2 l + kx for output lane l) of input rows y0 + i, i in [lo, hi); p = row y0, column b.
template <int K, int S, int R, bool Edge>
__attribute__((always_inline)) inline void strip_block(const float* p, int64_t W, int64_t b,
                                                       int lo, int hi, const Vec* wv, Vec* acc) {
  constexpr int NR = (R - 1) * S + K;
  if constexpr (S == 1) {
    Mask m[K];
    if constexpr (Edge)
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) m[kx] = range_mask(b + kx, W);
#pragma GCC unroll 32
    for (int i = 0; i < NR; ++i, p += W) {
      asm("" : "+r"(p));
      if (i < lo || i >= hi) continue;
      // Opaque per row: the weights stay memory operands instead of hoisted, spilled ymm.
      asm("" : "+r"(wv));
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) {
        feed_column<K, 1, R>(wv, i, kx, keep(Edge ? vloadm(p + kx, m[kx]) : vload(p + kx)), acc);
      }
    }
  } else {
    constexpr int NP = (K + 1) / 2;  // vector pairs at b + 2j, b + 2j + 8: taps 2j, 2j + 1
    Mask ml[NP], mh[NP];
    if constexpr (Edge)
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) ml[j] = range_mask(b + 2 * j, W), mh[j] = range_mask(b + 2 * j + kLanes, W);
#pragma GCC unroll 32
    for (int i = 0; i < NR; ++i, p += W) {
      asm("" : "+r"(p));
      if (i < lo || i >= hi) continue;
      asm("" : "+r"(wv));
#pragma GCC unroll 8
      for (int j = 0; j < NP; ++j) {
        const Vec l = keep(Edge ? vloadm(p + 2 * j, ml[j]) : vload(p + 2 * j));
        const Vec h = keep(Edge ? vloadm(p + 2 * j + kLanes, mh[j]) : vload(p + 2 * j + kLanes));
        feed_pair<K, R>(wv, i, j, l, h, acc);
      }
    }
  }
}

template <int K, int S, int R>
void strip_k(const StripArgs& a) {
  constexpr int T = K * K, NR = (R - 1) * S + K;
  // Input columns [b, b + span) per block; plain loads when they are all inside the row.
  constexpr int64_t span = S == 1 ? K - 1 + kLanes : K - 1 + 2 * kLanes;
  Vec wv[T];
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t) wv[t] = vset1(a.taps[t * a.padded]);
  const int64_t H = a.h, W = a.w, pl = a.pl, nvec = a.nvec, ow = a.ow;
  const Activation act = a.act;
  const Vec bias = vset1(a.bias);
  for (int64_t strip = 0; strip < a.count; ++strip) {
    const int64_t oy = a.oy0 + strip * R, y0 = oy * S - a.pt;
    // Strip rows [lo, hi) are inside the input; the others (padding) are skipped.
    const int lo = int(y0 < 0 ? -y0 : 0), hi = int(H - y0 < NR ? H - y0 : NR);
    float* out = a.out + oy * ow;
    const float* row = a.in + y0 * W;
    for (int64_t v = 0; v < nvec; ++v) {
      const int64_t x0 = v * kLanes, b = S * x0 - pl;
      Vec acc[R];
#pragma GCC unroll 16
      for (int u = 0; u < R; ++u) acc[u] = bias;
      if (b >= 0 && b + span <= W) strip_block<K, S, R, false>(row + b, W, b, lo, hi, wv, acc);
      else strip_block<K, S, R, true>(row + b, W, b, lo, hi, wv, acc);
      const bool full = v < nvec - 1 || ow % kLanes == 0;
      store_rows<R, S>(act, acc, out + x0, ow, full, a.tail);
    }
  }
}

// ---- Planes of one 8-column block and at most 7 output rows: two planes at a time. One plane
// is one strip of R <= 7 accumulator chains of up to K * K dependent FMAs (latency-bound); two
// planes interleaved row by row give 2 R independent chains and half the per-call work. Same
// loads and per-output arithmetic as strip_block (masked loads, taps in (ky, kx) order,
// padding rows skipped).
struct PairArgs {
  const float* in;  // plane A; plane B at in + in_plane
  int64_t in_plane;
  int64_t h, w, pt, pl;
  const float* taps_a;  // tap t at taps_x[t * padded]
  const float* taps_b;
  int64_t padded;
  float bias_a, bias_b;
  float* out;  // plane A; plane B at out + out_plane
  int64_t out_plane, ow;
  Mask tail;
  Activation act;
};
using PairFn = void (*)(const PairArgs&);

template <int K, int S, int R>
void pair_k(const PairArgs& a) {
  constexpr int T = K * K, NR = (R - 1) * S + K;
  constexpr int NL = S == 1 ? K : 2 * ((K + 1) / 2);  // loads per row (see strip_block)
  Vec wa[T], wb[T];
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t) wa[t] = vset1(a.taps_a[t * a.padded]), wb[t] = vset1(a.taps_b[t * a.padded]);
  const Vec* wpa = wa;
  const Vec* wpb = wb;
  const int64_t W = a.w, y0 = -a.pt, b = -a.pl, off = a.in_plane;
  const int lo = int(y0 < 0 ? -y0 : 0), hi = int(a.h - y0 < NR ? a.h - y0 : NR);
  Mask m[NL];
#pragma GCC unroll 8
  for (int j = 0; j < NL; ++j)
    m[j] = range_mask(b + (S == 1 ? j : (j / 2) * 2 + (j % 2) * kLanes), W);
  Vec acc[2][R];
  const Vec ba = vset1(a.bias_a), bb = vset1(a.bias_b);
#pragma GCC unroll 8
  for (int u = 0; u < R; ++u) acc[0][u] = ba, acc[1][u] = bb;
  const float* p = a.in + y0 * W + b;
#pragma GCC unroll 32
  for (int i = 0; i < NR; ++i, p += W) {
    asm("" : "+r"(p));
    if (i < lo || i >= hi) continue;
    asm("" : "+r"(wpa), "+r"(wpb));
    if constexpr (S == 1) {
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 2
        for (int q = 0; q < 2; ++q) {
          feed_column<K, 1, R>(q ? wpb : wpa, i, kx, keep(vloadm(p + q * off + kx, m[kx])), acc[q]);
        }
      }
    } else {
#pragma GCC unroll 8
      for (int j = 0; j < (K + 1) / 2; ++j) {
#pragma GCC unroll 2
        for (int q = 0; q < 2; ++q) {
          const Vec l = keep(vloadm(p + q * off + 2 * j, m[2 * j]));
          const Vec h = keep(vloadm(p + q * off + 2 * j + kLanes, m[2 * j + 1]));
          feed_pair<K, R>(q ? wpb : wpa, i, j, l, h, acc[q]);
        }
      }
    }
  }
  const bool full = a.ow == kLanes;
  store_rows<R, S>(a.act, acc[0], a.out, a.ow, full, a.tail);
  store_rows<R, S>(a.act, acc[1], a.out + a.out_plane, a.ow, full, a.tail);
}

template <int K, int S, int R>
PairFn pair_fn(int n) {
  if constexpr (R == 0) return nullptr;
  else return n == R ? pair_k<K, S, R> : pair_fn<K, S, R - 1>(n);
}

// ---- NCHW, small planes: kLanes planes at once, channel-interleaved.
// Narrow outputs waste most lanes of a row vector, so kLanes consecutive planes are copied
// into one zero-padded (hp, wp, kLanes) scratch, computed like NHWC (vector over planes, taps in
// registers, no bounds checks) and written back plane by plane. The arithmetic per output is
// the planar path's: bias, then every tap in (ky, kx) order including the padded zeros.
struct IlArgs {
  const DwConvShape* s;
  const float* scr;  // (hp, wp, kLanes)
  int64_t wp;
  const float* wts;  // (1 + kh*kw) vectors: bias, taps
  float* obuf;       // (out_h * out_w, kLanes)
};
using IlFn = void (*)(const IlArgs&);

template <int K, int S>
void il_compute_k(const IlArgs& a) {
  constexpr int T = K * K;
  constexpr bool WR = interleaved_weights_in_regs(T);
  constexpr int P = interleaved_pixels(T);
  const int64_t OW = a.s->out_w, total = a.s->out_h * OW, wp = a.wp;
  const Activation act = a.s->activation;
  Vec w[WR ? T : 1];
  if constexpr (WR)
    for (int t = 0; t < T; ++t) w[t] = vload(a.wts + (1 + t) * kLanes);
  auto weight = [&](int t) {
    if constexpr (WR) return w[t];
    else return vload(a.wts + (1 + t) * kLanes);
  };
  const Vec bias = vload(a.wts);
  for (int64_t i = 0; i < total; i += P) {
    // A last group with fewer than P pixels repeats the last pixel (same value stored twice).
    const float* src[P];
    for (int p = 0; p < P; ++p) {
      const int64_t j = i + p < total ? i + p : total - 1, oy = j / OW, ox = j % OW;
      src[p] = a.scr + (oy * S * wp + ox * S) * kLanes;
    }
    Vec acc[P];
    for (int p = 0; p < P; ++p) acc[p] = bias;
    for (int ky = 0; ky < K; ++ky)
      for (int kx = 0; kx < K; ++kx) {
        const Vec wt = weight(ky * K + kx);
        const int64_t off = (ky * wp + kx) * kLanes;
        for (int p = 0; p < P; ++p) acc[p] = vfma(wt, vload(src[p] + off), acc[p]);
      }
    for (int p = 0; p < P; ++p) {
      const int64_t j = i + p < total ? i + p : total - 1;
      vstore(a.obuf + j * kLanes, activate(act, acc[p]));
    }
  }
}

void il_compute_generic(const IlArgs& a) {
  const DwConvShape& s = *a.s;
  const int KH = s.kernel_h, KW = s.kernel_w;
  const int64_t OW = s.out_w, total = s.out_h * OW, wp = a.wp;
  const int64_t SH = s.stride_h, SW = s.stride_w, DH = s.dilation_h, DW = s.dilation_w;
  constexpr int P = 4;
  const Vec bias = vload(a.wts);
  for (int64_t i = 0; i < total; i += P) {
    const float* src[P];
    for (int p = 0; p < P; ++p) {
      const int64_t j = i + p < total ? i + p : total - 1, oy = j / OW, ox = j % OW;
      src[p] = a.scr + (oy * SH * wp + ox * SW) * kLanes;
    }
    Vec acc[P] = {bias, bias, bias, bias};
    for (int ky = 0; ky < KH; ++ky)
      for (int kx = 0; kx < KW; ++kx) {
        const Vec wt = vload(a.wts + (1 + ky * KW + kx) * kLanes);
        const int64_t off = (ky * DH * wp + kx * DW) * kLanes;
        for (int p = 0; p < P; ++p) acc[p] = vfma(wt, vload(src[p] + off), acc[p]);
      }
    for (int p = 0; p < P; ++p) {
      const int64_t j = i + p < total ? i + p : total - 1;
      vstore(a.obuf + j * kLanes, activate(s.activation, acc[p]));
    }
  }
}

void nchw_interleaved(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t plane_begin, int64_t plane_end) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w, T = int64_t(s.kernel_h) * s.kernel_w;
  const int64_t in_plane = H * W, out_plane = OH * OW;
  const auto [hp, wp, scr, obuf, wts] = interleaved_scratch(s);

  IlFn fn = il_compute_generic;
  if (s.kernel_h == s.kernel_w && s.stride_h == s.stride_w && s.dilation_h == 1 &&
      s.dilation_w == 1) {
    const int k = s.kernel_h, st = s.stride_h;
    if (k == 3 && st == 1) fn = il_compute_k<3, 1>;
    if (k == 3 && st == 2) fn = il_compute_k<3, 2>;
    if (k == 5 && st == 1) fn = il_compute_k<5, 1>;
    if (k == 5 && st == 2) fn = il_compute_k<5, 2>;
  }
  const int64_t pt = s.pad_top, pl = s.pad_left;
  for (int64_t g = plane_begin; g < plane_end; g += kLanes) {
    const int64_t nl = plane_end - g < kLanes ? plane_end - g : kLanes;
    for (int64_t l = 0; l < nl; ++l) {
      const int64_t c = (g + l) % C;
      wts[l] = packed[c];
      for (int64_t t = 0; t < T; ++t) wts[(1 + t) * kLanes + l] = packed[(1 + t) * padded + c];
    }
    // Input: 8 planes x 8 consecutive pixels -> 8 pixel vectors, stored at their padded spots.
    const float* in = input + g * in_plane;
    int64_t y = 0, x = 0;
    for (int64_t q0 = 0; q0 < in_plane; q0 += kLanes) {
      const Mask mq = lanes_mask(in_plane - q0);
      Vec r[kLanes];
      for (int64_t l = 0; l < kLanes; ++l)
        r[l] = l < nl ? vloadm(in + l * in_plane + q0, mq) : _mm256_setzero_ps();
      transpose8(r);
      const int64_t nq = in_plane - q0 < kLanes ? in_plane - q0 : kLanes;
      for (int64_t j = 0; j < nq; ++j) {
        const int64_t py = y + pt, px = x + pl;
        if (py < hp && px < wp) vstore(scr + (py * wp + px) * kLanes, r[j]);
        if (++x == W) x = 0, ++y;
      }
    }
    const IlArgs args{&s, scr, wp, wts, obuf};
    fn(args);
    float* out = output + g * out_plane;
    for (int64_t j0 = 0; j0 < out_plane; j0 += kLanes) {
      Vec r[kLanes];
      for (int64_t i = 0; i < kLanes; ++i) r[i] = vload(obuf + (j0 + i) * kLanes);
      transpose8(r);
      const Mask mj = lanes_mask(out_plane - j0);
      for (int64_t l = 0; l < nl; ++l) vstorem(out + l * out_plane + j0, mj, r[l]);
    }
  }
}

}  // namespace

void dwconv_nchw_planes(const DwConvShape& s, const float* input, const float* packed,
                        float* output, int64_t plane_begin, int64_t plane_end) {
  if (plane_begin >= plane_end) return;
  const int64_t OW = s.out_w, OH = s.out_h;
  const int64_t nvec = (OW + kLanes - 1) / kLanes;
  // Narrow planes (more than a quarter of each row vector unused) go kLanes planes at a time.
  // Decided by the shape alone, so every thread split takes the same path.
  if (4 * (nvec * kLanes - OW) > nvec * kLanes) {
    nchw_interleaved(s, input, packed, output, plane_begin, plane_end);
    return;
  }
  const int64_t H = s.in_h, W = s.in_w, C = s.channels, padded = padded_channels(C);
  const int64_t in_plane = H * W, out_plane = OH * OW;
  const int K = s.kernel_h, S = s.stride_h;
  if (s.kernel_w == K && s.stride_w == S && s.dilation_h == 1 && s.dilation_w == 1 &&
      (K == 3 || K == 5) && (S == 1 || S == 2)) {
    int64_t plane = plane_begin;
    if (nvec == 1 && OH <= 7) {
      const PairFn pf = K == 3 ? (S == 1 ? pair_fn<3, 1, 7>(int(OH)) : pair_fn<3, 2, 7>(int(OH)))
                               : (S == 1 ? pair_fn<5, 1, 7>(int(OH)) : pair_fn<5, 2, 7>(int(OH)));
      const Mask tail = lanes_mask(OW - (nvec - 1) * kLanes);
      for (; plane + 2 <= plane_end; plane += 2) {
        const int64_t ca = plane % C, cb = (plane + 1) % C;
        const PairArgs args{input + plane * in_plane, in_plane, H, W, s.pad_top, s.pad_left,
                            packed + padded + ca, packed + padded + cb, padded, packed[ca],
                            packed[cb], output + plane * out_plane, out_plane, OW, tail,
                            s.activation};
        pf(args);
      }
    }
    strip_planes(s, input, packed, output, plane, plane_end);  // the rest (an odd last plane)
    return;
  }
  generic_planes(s, input, packed, output, plane_begin, plane_end);
}

}  // namespace mnv3ext::avx2
