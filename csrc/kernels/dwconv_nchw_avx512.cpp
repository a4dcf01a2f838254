// AVX-512 fused depthwise conv + bias + activation, NCHW (planar).
//
// Square 3x3 / 5x5 kernels with stride 1 (any padding) or stride 2 (left padding k / 2), no
// dilation, are computed straight from the input in strips of output rows (strip_k below);
// with outputs 8 or fewer pixels wide they go 16 planes at a time, transposed into
// zero-bordered channel-interleaved tiles, computed by il_rows (6..8 wide) or pad_compute_k
// (dwconv_pad_avx512.h). Anything else copies each plane into a zero-padded scratch, each
// padded row split into s_w phases (padded col x -> phase x % s, index x / s), so that the
// taps of 16 consecutive output columns are one unaligned load each (nchw_plane_generic), or
// takes the interleaved tiles when the planes are narrow.
//
// Every output element is bias + sum over taps in (ky, kx) order, one FMA per tap (the strip
// kernels skip taps on padding rows), computed by exactly one call whose path depends on the
// shape only: results do not depend on how planes are split between threads.
// Compiled with AVX-512 flags: internal linkage, no STL, scratch from thread_scratch().
#include <cstdint>
#include <cstring>

#include "dwconv_pad_avx512.h"
#include "kernels.h"
#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

#include "dwconv_nchw_generic.inc"

// ---- NCHW, square 3x3 / 5x5 kernels, stride 1 or 2, no dilation: straight from the input.
// The plane is walked in strips of R output rows (balanced: q or q + 1 rows); the strip's
// input rows are read in place and rows above / below the input are skipped. Per 16-column
// block each input row is loaded once per tap column and that vector feeds every output row
// of the strip it is a tap of, so the weights (those that fit) and the R accumulators stay in
// registers and the FMAs take register operands; R up to 14 independent chains hide the FMA
// latency. Columns outside the input are zeroed by masked loads (which also never touch
// memory outside the row). Stride 2 splits each row block into even / odd columns with two
// permutes; the shifted taps are one more permute each. For one output the taps come in
// (ky, kx) order; padding columns contribute w * 0.
template <int K, int S>
constexpr int strip_rows() {
  return K == 3 ? 14 : (S == 1 ? 14 : 10);
}

#include "dwconv_nchw_planes.inc"

// A value the compiler must keep in a register: otherwise it folds the load into every FMA
// that uses it (one load per FMA, mostly split across cache lines).
inline Vec keep(Vec x) {
  asm("" : "+v"(x));
  return x;
}

// Lanes l with 0 <= lo + l < n.
inline Mask range_mask(int64_t lo, int64_t n) {
  int64_t b = -lo, e = n - lo;
  if (b < 0) b = 0;
  if (e > kLanes) e = kLanes;
  if (e <= b) return no_mask();
  return Mask(((1u << e) - 1u) & ~((1u << b) - 1u));
}

inline Vec perm2(Vec a, __m512i idx, Vec b) { return _mm512_permutex2var_ps(a, idx, b); }

// Row u of n vectors at o + u * stride, activated; the activation switch outside the rows.
template <int N, Activation A>
inline void store_rows_t(const Vec* acc, float* o, int64_t stride, Mask m) {
#pragma GCC unroll 16
  for (int u = 0; u < N; ++u, o += stride) vstorem(o, m, activate_t<A>(acc[u]));
}
template <int N>
inline void store_rows(Activation act, const Vec* acc, float* o, int64_t stride, Mask m) {
  switch (act) {
    case Activation::kRelu: return store_rows_t<N, Activation::kRelu>(acc, o, stride, m);
    case Activation::kRelu6: return store_rows_t<N, Activation::kRelu6>(acc, o, stride, m);
    case Activation::kHardswish:
      return store_rows_t<N, Activation::kHardswish>(acc, o, stride, m);
    default: return store_rows_t<N, Activation::kNone>(acc, o, stride, m);
  }
}

template <int K, int S, int R>
void strip_k(const StripArgs& a) {
  constexpr int T = K * K, NR = (R - 1) * S + K;
  // 5x5 stride 2 needs too many temporaries for 25 weight registers: broadcast operands.
  constexpr bool WR = !(K == 5 && S == 2);
  Vec w[WR ? T : 1];
  float wf[T];
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t) {
    wf[t] = a.taps[t * a.padded];
    if constexpr (WR) w[t] = vset1(wf[t]);
  }
  const float* wp = wf;
  auto weight = [&](int t) {
    if constexpr (WR) return w[t];
    else return vset1(wp[t]);
  };
  const int64_t H = a.h, W = a.w, pl = a.pl, nvec = a.nvec, ow = a.ow;
  const Activation act = a.act;
  const Vec bias = vset1(a.bias);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // (a, b) -> a[15 - k], b[0..14]  (k = 0: shift right by one lane, k = 1: a[14] first)
  const __m512i right1 = _mm512_setr_epi32(15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
  const __m512i right1b = _mm512_setr_epi32(14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
  // (a, b) -> a[1..15], b[0]
  const __m512i left1 = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
  for (int64_t strip = 0; strip < a.count; ++strip) {
    const int64_t oy = a.oy0 + strip * R, y0 = oy * S - a.pt;
    // Strip rows [lo, hi) are inside the input; the others (padding) are skipped.
    const int64_t lo = y0 < 0 ? -y0 : 0, hi = H - y0 < NR ? H - y0 : NR;
    float* out = a.out + oy * ow;
    for (int64_t v = 0; v < nvec; ++v) {
      const int64_t x0 = v * kLanes;
      Vec acc[R];
#pragma GCC unroll 16
      for (int u = 0; u < R; ++u) acc[u] = bias;
      // Input row y0 + i, column x0 - pl (stride 1) or 2 * x0 (stride 2), advanced row by row
      // (opaque, so one register instead of one per row). Only valid rows are dereferenced.
      const float* p = a.in + y0 * W + (S == 1 ? x0 - pl : 2 * x0);
      if constexpr (S == 1) {
        Mask m[K];
#pragma GCC unroll 8
        for (int kx = 0; kx < K; ++kx) m[kx] = range_mask(x0 + kx - pl, W);
#pragma GCC unroll 32
        for (int i = 0; i < NR; ++i, p += W) {
          asm("" : "+r"(p));
          if (i < lo || i >= hi) continue;
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) {
            const Vec x = keep(vloadm(p + kx, m[kx]));
#pragma GCC unroll 16
            for (int u = 0; u < R; ++u) {
              const int ky = i - u;
              if (ky >= 0 && ky < K) acc[u] = vfma(weight(ky * K + kx), x, acc[u]);
            }
          }
        }
      } else {
        // Input columns b + 2l + d for tap d = kx - K / 2.
        const int64_t b = 2 * x0;
        const Mask mp = range_mask(b - kLanes, W) & Mask(K == 3 ? 0x8000 : 0xC000);
        const Mask ma = range_mask(b, W), mb = range_mask(b + kLanes, W);
        const Mask mc = range_mask(b + 2 * kLanes, W) & Mask(1);
#pragma GCC unroll 32
        for (int i = 0; i < NR; ++i, p += W) {
          asm("" : "+r"(p));
          if (i < lo || i >= hi) continue;
          // Opaque per row: the broadcasts stay memory operands instead of hoisted, spilled zmm.
          if constexpr (!WR) asm("" : "+r"(wp));
          const Vec prev = vloadm(p - kLanes, mp);
          const Vec l = vloadm(p, ma), h = vloadm(p + kLanes, mb);
          const Vec e = perm2(l, even, h), o = perm2(l, odd, h);
          Vec t[K];
          if constexpr (K == 3) {
            t[0] = perm2(prev, right1, o);
            t[1] = e;
            t[2] = o;
          } else {
            t[0] = perm2(prev, right1b, e);
            t[1] = perm2(prev, right1, o);
            t[2] = e;
            t[3] = o;
            t[4] = perm2(e, left1, vloadm(p + 2 * kLanes, mc));
          }
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 16
            for (int u = 0; u < R; ++u) {
              const int ky = i - 2 * u;
              if (ky >= 0 && ky < K) acc[u] = vfma(weight(ky * K + kx), t[kx], acc[u]);
            }
          }
        }
      }
      store_rows<R>(act, acc, out + x0, ow, v == nvec - 1 ? a.tail : full_mask());
    }
  }
}

// ---- Channel-interleaved tiles (16 planes, one pixel per vector), 3x3 / 5x5, stride 1 / 2,
// output rows of P = out_w pixels (6..8): NRW output rows at a time, NRW * P accumulators
// (independent FMA chains) in registers. Per kernel row the K weight vectors are loaded once
// and each input pixel of the NRW input rows is loaded once and fed to every output pixel it
// is a tap of (up to K), so FMAs take register operands. Taps in (ky, kx) order.
struct IlArgs {
  const float* tile;  // zero-bordered (rows, wp, 16)
  int64_t wp;
  const float* wts;  // bias vector, then tap t at wts + (1 + t) * wstride
  int64_t wstride;
  float* obuf;       // output pixel j at obuf + j * 16
  int64_t oy0, count;  // blocks of NRW output rows from oy0
  Activation act;
};
using IlFn = void (*)(const IlArgs&);

template <int K, int S, int NRW, int P>
void il_rows(const IlArgs& a) {
  constexpr int NJ = (P - 1) * S + K;
  const int64_t wp = a.wp;
  const Activation act = a.act;
  for (int64_t blk = 0; blk < a.count; ++blk) {
    const int64_t oy = a.oy0 + blk * NRW;
    Vec acc[NRW][P];
    const Vec bias = vload(a.wts);
#pragma GCC unroll 4
    for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[r][p] = bias;
#pragma GCC unroll 1
    for (int ky = 0; ky < K; ++ky) {
      Vec wk[K];
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) wk[kx] = vload(a.wts + (1 + ky * K + kx) * a.wstride);
#pragma GCC unroll 4
      for (int r = 0; r < NRW; ++r) {
        const float* base = a.tile + ((oy + r) * S + ky) * wp * kLanes;
#pragma GCC unroll 32
        for (int j = 0; j < NJ; ++j) {
          const Vec x = keep(vload(base + j * kLanes));
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) {
            const int kx = j - p * S;
            if (kx >= 0 && kx < K) acc[r][p] = vfma(wk[kx], x, acc[r][p]);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < NRW; ++r)
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p)
        vstore(a.obuf + ((oy + r) * P + p) * kLanes, activate(act, acc[r][p]));
  }
}

template <int K, int S>
IlFn il_fn(int nrw, int64_t p) {
  switch (p * 4 + nrw) {
    case 6 * 4 + 1: return il_rows<K, S, 1, 6>;
    case 6 * 4 + 2: return il_rows<K, S, 2, 6>;
    case 6 * 4 + 3: return il_rows<K, S, 3, 6>;
    case 7 * 4 + 1: return il_rows<K, S, 1, 7>;
    case 7 * 4 + 2: return il_rows<K, S, 2, 7>;
    case 7 * 4 + 3: return il_rows<K, S, 3, 7>;
    case 8 * 4 + 1: return il_rows<K, S, 1, 8>;
    case 8 * 4 + 2: return il_rows<K, S, 2, 8>;
    case 8 * 4 + 3: return il_rows<K, S, 3, 8>;
  }
  return nullptr;
}

// ---- NCHW, small planes: kLanes planes at once, channel-interleaved via 16x16 transposes.
void nchw_interleaved(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t plane_begin, int64_t plane_end) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w, T = int64_t(s.kernel_h) * s.kernel_w;
  const int64_t in_plane = H * W, out_plane = OH * OW;
  const auto [hp, wp, scr, obuf, wts] = interleaved_scratch(s);
  const PadFn fn = pick_pad_fn(s, true);
  // Rows of 6..8 pixels with the specialised kernels: il_rows, in balanced blocks of <= 3 rows.
  IlFn il_big = nullptr, il_small = nullptr;
  const int64_t blocks = (OH + 2) / 3, q = OH / blocks, big = OH - q * blocks;
  if (s.kernel_h == s.kernel_w && s.stride_h == s.stride_w && s.dilation_h == 1 &&
      s.dilation_w == 1 && OW >= 6 && OW <= 8) {
    const int k = s.kernel_h, st = s.stride_h;
    for (int i = 0; i < 2; ++i) {
      const int nrw = int(q) + (i == 0 ? 1 : 0);
      IlFn f = nullptr;
      if (nrw >= 1 && nrw <= 3) {
        if (k == 3 && st == 1) f = il_fn<3, 1>(nrw, OW);
        if (k == 3 && st == 2) f = il_fn<3, 2>(nrw, OW);
        if (k == 5 && st == 1) f = il_fn<5, 1>(nrw, OW);
        if (k == 5 && st == 2) f = il_fn<5, 2>(nrw, OW);
      }
      (i == 0 ? il_big : il_small) = f;
    }
    if (!il_small || (big > 0 && !il_big)) il_big = il_small = nullptr;
  }
  const __m512i out_idx = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(int(out_plane)));
  // Scatter offsets l * out_plane must fit in int32.
  const bool scatter = out_plane < (int64_t(1) << 26);
  const int64_t pt = s.pad_top, pl = s.pad_left;
  // Input pixels (flattened) up to the last row the tile holds.
  const int64_t used = (H < hp - pt ? H : (hp - pt > 0 ? hp - pt : 0)) * W;
  for (int64_t g = plane_begin; g < plane_end; g += kLanes) {
    const int64_t nl = plane_end - g < kLanes ? plane_end - g : kLanes;
    const int64_t c = g % C;
    // The packed rows serve in place (lanes past nl are never stored) unless the group wraps
    // into the next image or would read past a row's padding; then its lanes are gathered.
    const float* w = packed + c;
    int64_t wstride = padded;
    if (c + nl > C || c + kLanes > padded) {
      w = wts;
      wstride = kLanes;
      for (int64_t l = 0; l < nl; ++l) {
        const int64_t cl = (g + l) % C;
        for (int64_t t = 0; t <= T; ++t) wts[t * kLanes + l] = packed[t * padded + cl];
      }
    }
    // Input: 16 planes x 16 consecutive pixels of the flattened plane -> 16 pixel vectors,
    // each stored at its padded spot (pixels outside the tile are dropped). The rows the
    // output needs are all that is read.
    const float* in = input + g * in_plane;
    Mask lane_mask[kLanes];  // all lanes of planes < nl, none of the others
    for (int l = 0; l < kLanes; ++l) lane_mask[l] = l < nl ? full_mask() : no_mask();
#pragma GCC unroll 1
    for (int64_t j0 = 0, y = 0, x = 0; j0 < used; j0 += kLanes) {
      const Mask mq = lanes_mask(used - j0);
      Vec r[kLanes];
#pragma GCC unroll 16
      for (int l = 0; l < kLanes; ++l) r[l] = vloadm(in + l * in_plane + j0, lane_mask[l] & mq);
      transpose16(r);
      const int64_t n = used - j0 < kLanes ? used - j0 : kLanes;
#pragma GCC unroll 16
      for (int i = 0; i < kLanes; ++i) {
        if (i < n && x + pl < wp) vstore(scr + ((y + pt) * wp + x + pl) * kLanes, r[i]);
        if (++x == W) {
          x = 0;
          ++y;
        }
      }
    }
    if (il_small) {
      IlArgs args{scr, wp, w, wstride, obuf, 0, big, s.activation};
      if (big > 0) il_big(args);
      args.oy0 = big * (q + 1);
      args.count = blocks - big;
      il_small(args);
    } else {
      const PadArgs args{&s, scr, wp, w, wstride, OH, OW, obuf, kLanes, full_mask()};
      fn(args);
    }
    float* out = output + g * out_plane;
    const Mask ml = lanes_mask(nl);
    for (int64_t j0 = 0; j0 < out_plane; j0 += kLanes) {
      if (scatter && out_plane - j0 <= 4) {  // a few pixels: one scatter each
        for (int64_t j = j0; j < out_plane; ++j)
          _mm512_mask_i32scatter_ps(out + j, ml, out_idx, vload(obuf + j * kLanes), 4);
        break;
      }
      Vec r[kLanes];
#pragma GCC unroll 16
      for (int i = 0; i < kLanes; ++i) r[i] = vload(obuf + (j0 + i) * kLanes);
      transpose16(r);
      const Mask mj = lanes_mask(out_plane - j0);
#pragma GCC unroll 16
      for (int l = 0; l < kLanes; ++l) vstorem(out + l * out_plane + j0, l < nl ? mj : no_mask(), r[l]);
    }
  }
}

}  // namespace

void dwconv_nchw_planes(const DwConvShape& s, const float* input, const float* packed,
                        float* output, int64_t plane_begin, int64_t plane_end) {
  if (plane_begin >= plane_end) return;
  const int64_t OW = s.out_w;
  const int64_t nvec = (OW + kLanes - 1) / kLanes;
  // Narrow planes (more than a quarter of each row vector unused) go kLanes planes at a time.
  // Decided by the shape alone, so every thread split takes the same path.
  const bool strips = s.kernel_w == s.kernel_h && s.stride_w == s.stride_h &&
                      s.dilation_h == 1 && s.dilation_w == 1 &&
                      (s.kernel_h == 3 || s.kernel_h == 5) &&
                      (s.stride_h == 1 || (s.stride_h == 2 && s.pad_left == s.kernel_h / 2));
  if (strips ? OW <= 8 : 4 * (nvec * kLanes - OW) > nvec * kLanes) {
    nchw_interleaved(s, input, packed, output, plane_begin, plane_end);
    return;
  }
  if (strips) strip_planes(s, input, packed, output, plane_begin, plane_end);
  else generic_planes(s, input, packed, output, plane_begin, plane_end);
}

}  // namespace mnv3ext::avx512
