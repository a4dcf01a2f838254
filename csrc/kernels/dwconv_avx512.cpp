// AVX-512 fused depthwise conv + bias + activation.
//
// NHWC (channels-last): vector over 16 channels (masked tail for C % 16). Per output row and
// channel tile the kh*kw weight vectors stay in registers and the interior pixels (every tap
// inside the input) are computed P at a time without any bounds checks (3x3 and 5x5, stride
// 1/2, dilation 1: compile-time specialisations). Edge pixels, leftover interior pixels and
// every other shape go pixel by pixel: the valid taps are listed once per pixel and the
// channels run 4 tiles at a time. Rows outside the input are skipped per output row; there
// are no per-channel branches.
//
// NCHW: per plane the input is copied into a zero-padded scratch; for stride s each padded row
// is split into s phases (padded col x -> phase x % s, index x / s), so the taps of 16
// consecutive output columns are one unaligned load each. Output vectors ("jobs", row-major
// over (oy, 16-column block)) are processed U at a time for independent FMA chains, with the
// weights broadcast in registers.
//
// Every output element is bias + sum over taps in (ky, kx) order, one FMA per tap, computed by
// exactly one call: results do not depend on how rows/planes are split between threads.
// Activations follow PyTorch: relu/relu6 keep NaN (max/min operand order below), hardswish is
// x * min(max(x + 3, 0), 6) * (1/6): the multiply by the rounded reciprocal differs from
// PyTorch's division by at most 1 ulp (NaN/Inf the same) and avoids vdivps in the epilogue.
// The scalar and NEON kernels (activation.h) still divide.
//
// This file is compiled with AVX-512 flags: everything stays in mnv3ext::avx512 with internal
// linkage, no STL templates are instantiated, scratch comes from thread_scratch().
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"

// GCC 12 reports _mm512_undefined_ps() inside min/max intrinsics as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace mnv3ext::avx512 {
namespace {

// ---------------------------------------------------------------- ISA layer
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
inline Vec deinterleave2(const float* src, Vec hi) { return deinterleave2v(vload(src), hi); }

// Tuning: output pixels per NHWC interior step, output vectors per NCHW step, and whether
// the kh*kw weight vectors are kept in registers (32 zmm registers).
constexpr int nhwc_pixels(int taps) { return taps <= 9 ? 8 : 5; }
constexpr int nhwc_pixels_tail(int taps) { return nhwc_pixels(taps); }  // must match: one split per row
constexpr bool nhwc_weights_in_regs(int taps) { return taps <= 25; }
constexpr int nchw_vectors(int taps) { return taps <= 9 ? 8 : 5; }
constexpr bool nchw_weights_in_regs(int taps) { return taps <= 25; }

// ---------------------------------------------------------------- shared body
inline Vec activate(Activation a, Vec x) {
  switch (a) {
    case Activation::kRelu: return vmax(vzero(), x);  // 0 > x ? 0 : x
    case Activation::kRelu6: return vmin(vset1(6.0f), vmax(vzero(), x));
    case Activation::kHardswish: {
      const Vec t = vmin(vset1(6.0f), vmax(vzero(), vadd(x, vset1(3.0f))));
      return vmul(vmul(x, t), vset1(1.0f / 6.0f));  // see the header comment
    }
    default: return x;
  }
}

template <bool Tail>
inline Vec ld(const float* p, Mask m) {
  if constexpr (Tail) return vloadm(p, m);
  else return vload(p);
}
template <bool Tail>
inline void st(float* p, Mask m, Vec v) {
  if constexpr (Tail) vstorem(p, m, v);
  else vstore(p, v);
}

// ---- NHWC
// One output row, one channel tile. rows[ky] points at input row iy = oy*sh - pt + ky*dh at
// the tile's first channel, or is null when that row is padding. wp = packed + c0, out = output
// row + c0. Pixels [0, ox_l) and [ox_r, out_w) need column checks, [ox_l, ox_r) do not.
struct NhwcTileArgs {
  const DwConvShape* s;
  const float* const* rows;
  const float* wp;
  int64_t padded;
  float* out;
  int64_t ox_l, ox_r;
  Mask m;
};

// Activation with the kind fixed at compile time (hoisted out of the pixel loops).
template <Activation A>
inline Vec activate_t(Vec x) {
  if constexpr (A == Activation::kRelu) return vmax(vzero(), x);
  else if constexpr (A == Activation::kRelu6) return vmin(vset1(6.0f), vmax(vzero(), x));
  else if constexpr (A == Activation::kHardswish) return activate(A, x);
  else return x;
}

// Interior pixels [ox_l, ox_l + groups * P) of one output row for one channel tile, the
// kh*kw weight vectors in registers; returns the first pixel not done.
// Per input row the (P - 1) * S + KW input pixels of the group are walked once, left to
// right, each loaded once and fed to every output pixel it is a tap of; for one output
// pixel the taps still come in (ky, kx) order. The walking pointer is made opaque to the
// compiler: otherwise it keeps one address register per (pixel, tap) offset (the pixel
// stride C is a run-time value), runs out of registers and spills in the inner loop.
template <int KH, int KW, int S, bool Tail, Activation A>
int64_t nhwc_tile_k(const NhwcTileArgs& a) {
  constexpr int T = KH * KW;
  constexpr bool WR = nhwc_weights_in_regs(T);
  constexpr int P = Tail ? nhwc_pixels_tail(T) : nhwc_pixels(T);
  constexpr int J = (P - 1) * S + KW;  // input pixels per row and group
  const int64_t C = a.s->channels, pl = a.s->pad_left;
  const int64_t padded = a.padded;
  const float* wp = a.wp;
  const Mask m = a.m;
  float* const out = a.out;
  const int64_t ox_r = a.ox_r;
  const float* rows[KH];
  for (int ky = 0; ky < KH; ++ky) rows[ky] = a.rows[ky];
  Vec w[WR ? T : 1];
  if constexpr (WR)
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t) w[t] = vload(wp + (1 + t) * padded);
  auto weight = [&](int t) {
    if constexpr (WR) return w[t];
    else return vload(wp + (1 + t) * padded);
  };
  const Vec bias = vload(wp);
  const uintptr_t step = uintptr_t(C) * sizeof(float);
  int64_t ox = a.ox_l;
  for (; ox + P <= ox_r; ox += P) {
    Vec acc[P];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) acc[p] = bias;
    const int64_t off = (ox * S - pl) * C;
#pragma GCC unroll 8
    for (int ky = 0; ky < KH; ++ky) {
      if (!rows[ky]) continue;
      uintptr_t x = reinterpret_cast<uintptr_t>(rows[ky] + off);
#pragma GCC unroll 32
      for (int j = 0; j < J; ++j) {
        const Vec v = ld<Tail>(reinterpret_cast<const float*>(x), m);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {
          const int kx = j - p * S;
          if (kx >= 0 && kx < KW) acc[p] = vfma(weight(ky * KW + kx), v, acc[p]);
        }
        x += step;
        __asm__("" : "+r"(x));
      }
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) st<Tail>(out + (ox + p) * C, m, activate_t<A>(acc[p]));
  }
  return ox;
}
using NhwcTileFn = int64_t (*)(const NhwcTileArgs&);

// Pixels [0, ox_l) and [done, out_w) of one output row for one channel tile (the edges and the
// interior leftovers), as one sequence:
// P at a time with the weights in registers; a tap outside the input is skipped with a masked
// FMA (lanes keep their accumulator, masked loads touch no memory), so the arithmetic is the
// same as skipping the tap. A last partial group recomputes its last pixel.
template <int KH, int KW, int S>
void nhwc_tile_checked(const NhwcTileArgs& a, int64_t done) {
  constexpr int T = KH * KW;
  constexpr int P = T <= 9 ? 8 : 4;  // 4 for 5x5: fewer repeats on 7-wide rows, fewer spills
  const int64_t C = a.s->channels, W = a.s->in_w, pl = a.s->pad_left, padded = a.padded;
  const float* wp = a.wp;
  const Activation act = a.s->activation;
  Vec w[T];
  for (int t = 0; t < T; ++t) w[t] = vload(wp + (1 + t) * padded);
  const Vec bias = vload(wp);
  const int64_t ox_l = a.ox_l, count = ox_l + a.s->out_w - done;
  for (int64_t i = 0; i < count; i += P) {
    int64_t px[P];
    for (int p = 0; p < P; ++p) {
      const int64_t j = i + p < count ? i + p : count - 1;
      px[p] = j < ox_l ? j : done + (j - ox_l);
    }
    Mask valid[P][KW];
    for (int p = 0; p < P; ++p)
      for (int kx = 0; kx < KW; ++kx) {
        const int64_t ix = px[p] * S - pl + kx;
        valid[p][kx] = (ix >= 0 && ix < W) ? a.m : no_mask();
      }
    Vec acc[P];
    for (int p = 0; p < P; ++p) acc[p] = bias;
    for (int ky = 0; ky < KH; ++ky) {
      if (!a.rows[ky]) continue;
      const float* r = a.rows[ky];
      for (int kx = 0; kx < KW; ++kx)
        for (int p = 0; p < P; ++p) {
          const Mask k = valid[p][kx];
          // Address formed as an integer: it may lie outside the input when k is empty.
          const float* x = reinterpret_cast<const float*>(
              reinterpret_cast<uintptr_t>(r) + uintptr_t((px[p] * S - pl + kx) * C * 4));
          acc[p] = _mm512_mask3_fmadd_ps(w[ky * KW + kx], vloadm(x, k), acc[p], k);
        }
    }
    for (int p = 0; p < P; ++p) vstorem(a.out + px[p] * C, a.m, activate(act, acc[p]));
  }
}
using NhwcCheckedFn = void (*)(const NhwcTileArgs&, int64_t);

// One output pixel over all channels, any shape: the valid taps are listed once, then the
// channels go 4 tiles at a time (4 independent FMA chains), weights read from memory.
void nhwc_pixel(const DwConvShape& s, const float* const* base, const float* packed,
                int64_t padded, float* out, int64_t ox) {
  const int64_t C = s.channels, W = s.in_w;
  const int64_t ix0 = ox * s.stride_w - s.pad_left;
  const float* in[49];
  const float* wt[49];
  int nt = 0;
  for (int ky = 0; ky < s.kernel_h; ++ky) {
    if (!base[ky]) continue;
    for (int kx = 0; kx < s.kernel_w; ++kx) {
      const int64_t ix = ix0 + int64_t(kx) * s.dilation_w;
      if (ix < 0 || ix >= W) continue;
      in[nt] = base[ky] + ix * C;
      wt[nt] = packed + (1 + ky * s.kernel_w + kx) * padded;
      ++nt;
    }
  }
  const Activation act = s.activation;
  int64_t c = 0;
  for (; c + 4 * kLanes <= C; c += 4 * kLanes) {
    Vec a0 = vload(packed + c), a1 = vload(packed + c + kLanes);
    Vec a2 = vload(packed + c + 2 * kLanes), a3 = vload(packed + c + 3 * kLanes);
    for (int i = 0; i < nt; ++i) {
      const float* x = in[i] + c;
      const float* w = wt[i] + c;
      a0 = vfma(vload(w), vload(x), a0);
      a1 = vfma(vload(w + kLanes), vload(x + kLanes), a1);
      a2 = vfma(vload(w + 2 * kLanes), vload(x + 2 * kLanes), a2);
      a3 = vfma(vload(w + 3 * kLanes), vload(x + 3 * kLanes), a3);
    }
    vstore(out + c, activate(act, a0));
    vstore(out + c + kLanes, activate(act, a1));
    vstore(out + c + 2 * kLanes, activate(act, a2));
    vstore(out + c + 3 * kLanes, activate(act, a3));
  }
  for (; c + kLanes <= C; c += kLanes) {
    Vec acc = vload(packed + c);
    for (int i = 0; i < nt; ++i) acc = vfma(vload(wt[i] + c), vload(in[i] + c), acc);
    vstore(out + c, activate(act, acc));
  }
  if (c < C) {
    const Mask m = lanes_mask(C - c);
    Vec acc = vload(packed + c);
    for (int i = 0; i < nt; ++i) acc = vfma(vload(wt[i] + c), vloadm(in[i] + c, m), acc);
    vstorem(out + c, m, activate(act, acc));
  }
}

// ---- NCHW
// scr: padded plane, rows of s_w phases of `r` floats each; row y of the padded plane at
// scr + y * s_w * r. Output vector jobs are row-major over (oy, 16-column block).
struct NchwPlaneArgs {
  const DwConvShape* s;
  const float* scr;
  int64_t r;          // floats per phase row
  const float* taps;  // packed + padded + c: tap t at taps[t * padded]
  int64_t padded;
  float bias;
  float* out;
};
using NchwPlaneFn = void (*)(const NchwPlaneArgs&);

template <int K, int S>
void nchw_plane_k(const NchwPlaneArgs& a) {
  constexpr int T = K * K;
  constexpr int U = nchw_vectors(T);
  constexpr bool WR = nchw_weights_in_regs(T);
  const int64_t OH = a.s->out_h, OW = a.s->out_w, R = a.r, pitch = S * R;
  const int64_t nvec = (OW + kLanes - 1) / kLanes, jobs = OH * nvec;
  const Mask tail = lanes_mask(OW - (nvec - 1) * kLanes);
  const Activation act = a.s->activation;
  Vec w[WR ? T : 1];
  if constexpr (WR)
    for (int t = 0; t < T; ++t) w[t] = vset1(a.taps[t * a.padded]);
  auto weight = [&](int t) {
    if constexpr (WR) return w[t];
    else return vset1(a.taps[t * a.padded]);
  };
  const Vec bias = vset1(a.bias);
  int64_t oy = 0, v = 0;
  for (int64_t q = 0; q < jobs; q += U) {
    // A last group with fewer than U jobs recomputes its first job in the spare slots.
    const int n = int(jobs - q < U ? jobs - q : U);
    const float* src[U];
    float* dst[U];
    Mask mk[U];
    for (int u = 0; u < n; ++u) {
      src[u] = a.scr + oy * S * pitch + v * kLanes;
      dst[u] = a.out + oy * OW + v * kLanes;
      mk[u] = v == nvec - 1 ? tail : full_mask();
      if (++v == nvec) v = 0, ++oy;
    }
    for (int u = n; u < U; ++u) src[u] = src[0], dst[u] = nullptr, mk[u] = no_mask();
    Vec acc[U];
    for (int u = 0; u < U; ++u) acc[u] = bias;
    for (int ky = 0; ky < K; ++ky)
      for (int kx = 0; kx < K; ++kx) {
        const Vec wt = weight(ky * K + kx);
        const int64_t off = ky * pitch + (kx % S) * R + kx / S;
        for (int u = 0; u < U; ++u) acc[u] = vfma(wt, vload(src[u] + off), acc[u]);
      }
    for (int u = 0; u < n; ++u) vstorem(dst[u], mk[u], activate(act, acc[u]));
  }
}

void nchw_plane_generic(const NchwPlaneArgs& a) {
  const DwConvShape& s = *a.s;
  const int KH = s.kernel_h, KW = s.kernel_w;
  const int64_t SH = s.stride_h, SW = s.stride_w, DH = s.dilation_h, DW = s.dilation_w;
  const int64_t OH = s.out_h, OW = s.out_w, R = a.r, pitch = SW * R;
  const int64_t nvec = (OW + kLanes - 1) / kLanes, jobs = OH * nvec;
  const Mask tail = lanes_mask(OW - (nvec - 1) * kLanes);
  const Vec bias = vset1(a.bias);
  constexpr int U = 4;
  int64_t oy = 0, v = 0, q = 0;
  for (; q < jobs; q += U) {
    const int n = int(jobs - q < U ? jobs - q : U);
    const float* src[U];
    float* dst[U];
    Mask mk[U];
    for (int u = 0; u < n; ++u) {
      src[u] = a.scr + oy * SH * pitch + v * kLanes;
      dst[u] = a.out + oy * OW + v * kLanes;
      mk[u] = v == nvec - 1 ? tail : full_mask();
      if (++v == nvec) v = 0, ++oy;
    }
    for (int u = n; u < U; ++u) src[u] = src[0], dst[u] = nullptr, mk[u] = no_mask();
    Vec acc[U] = {bias, bias, bias, bias};
    for (int ky = 0; ky < KH; ++ky)
      for (int kx = 0; kx < KW; ++kx) {
        const Vec wt = vset1(a.taps[(ky * KW + kx) * a.padded]);
        const int64_t off = ky * DH * pitch + (kx * DW % SW) * R + kx * DW / SW;
        for (int u = 0; u < U; ++u) acc[u] = vfma(wt, vload(src[u] + off), acc[u]);
      }
    for (int u = 0; u < n; ++u) vstorem(dst[u], mk[u], activate(s.activation, acc[u]));
  }
}

// The padded, phase-split copy of an input plane: rows [0, hp) of s_w phases of r floats;
// padded (y, x) holds input (y - pt, x - pl) or zero. The zeros never change between planes,
// so the scratch is zeroed once per call and each plane only rewrites its input region.
struct PhaseSpan {
  int64_t j0, j1;  // dst[j] = src[j * s_w + p - pl] for j in [j0, j1)
};
inline PhaseSpan phase_span(const DwConvShape& s, int64_t p, int64_t r) {
  const int64_t SW = s.stride_w, lo = s.pad_left - p, hi = s.pad_left - p + s.in_w;
  int64_t j0 = lo <= 0 ? 0 : (lo + SW - 1) / SW;
  int64_t j1 = hi <= 0 ? 0 : (hi + SW - 1) / SW;
  if (j1 > r) j1 = r;
  if (j0 > j1) j0 = j1;
  return {j0, j1};
}

void copy_plane(const DwConvShape& s, const float* in, float* scr, int64_t hp, int64_t r) {
  const int64_t H = s.in_h, W = s.in_w, SW = s.stride_w, pt = s.pad_top, pl = s.pad_left;
  const int64_t y0 = pt, y1 = hp < pt + H ? hp : pt + H;
  for (int64_t p = 0; p < SW; ++p) {
    const PhaseSpan span = phase_span(s, p, r);
    const int64_t n = span.j1 - span.j0, first = span.j0 * SW + p - pl;
    if (n <= 0) continue;
    for (int64_t y = y0; y < y1; ++y) {
      const float* src = in + (y - pt) * W + first;  // n taps at stride SW, all inside the row
      float* dst = scr + (y * SW + p) * r + span.j0;
      if (SW == 1) {
        int64_t j = 0;
        for (; j + kLanes <= n; j += kLanes) vstore(dst + j, vload(src + j));
        if (j < n) {
          const Mask m = lanes_mask(n - j);
          vstorem(dst + j, m, vloadm(src + j, m));
        }
      } else if (SW == 2) {
        // kLanes outputs read src[2j .. 2j + 2 * kLanes - 2]; the row has `avail` floats from src.
        const int64_t avail = W - first;
        int64_t j = 0;
        for (; j + kLanes <= n && 2 * j + 2 * kLanes <= avail; j += kLanes)
          vstore(dst + j, deinterleave2(src + 2 * j, vload(src + 2 * j + kLanes)));
        for (; j < n; j += kLanes) {
          const int64_t left = avail - 2 * j;  // >= 1
          const Vec lo = vloadm(src + 2 * j, lanes_mask(left));
          const Vec hi = left > kLanes ? vloadm(src + 2 * j + kLanes, lanes_mask(left - kLanes))
                                       : vzero();
          vstorem(dst + j, lanes_mask(n - j), deinterleave2v(lo, hi));
        }
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] = src[j * SW];
      }
    }
  }
}

// ---- Zero-bordered 16-lane tiles (NHWC small images, NCHW small planes).
// A (rows, wp, kLanes) scratch holds a zero-padded block of the input for kLanes channels, so
// every output pixel takes the same kernel with constant tap offsets (one load per FMA, no
// bounds checks) and the kh*kw weight vectors stay in registers for the whole block. The
// arithmetic per output is the planar path's: bias, then every tap in (ky, kx) order
// including the padded zeros.
struct PadArgs {
  const DwConvShape* s;
  const float* scr;  // (rows * stride_h + ..., wp, kLanes)
  int64_t wp;
  const float* w;  // bias vector at w, tap t at w + (1 + t) * wstride
  int64_t wstride;
  int64_t rows, cols;  // output pixels, row-major
  float* out;          // output pixel j at out + j * ostride
  int64_t ostride;
  Mask m;
};
using PadFn = void (*)(const PadArgs&);

template <int K, int S>
void pad_compute_k(const PadArgs& a) {
  constexpr int T = K * K;
  constexpr bool WR = nhwc_weights_in_regs(T);
  constexpr int P = nhwc_pixels(T);
  const int64_t OW = a.cols, total = a.rows * OW, wp = a.wp, ws = a.wstride, os = a.ostride;
  const Activation act = a.s->activation;
  const Mask m = a.m;
  Vec w[WR ? T : 1];
  if constexpr (WR)
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t) w[t] = vload(a.w + (1 + t) * ws);
  auto weight = [&](int t) {
    if constexpr (WR) return w[t];
    else return vload(a.w + (1 + t) * ws);
  };
  const Vec bias = vload(a.w);
  int64_t oy = 0, ox = 0;
  for (int64_t i = 0; i < total; i += P) {
    // A last group with fewer than P pixels repeats its last pixel (same value stored twice).
    const int n = int(total - i < P ? total - i : P);
    const float* src[P];
    float* dst[P];
    for (int p = 0; p < P; ++p) {
      if (p < n) {
        src[p] = a.scr + (oy * S * wp + ox * S) * kLanes;
        dst[p] = a.out + (i + p) * os;
        if (++ox == OW) ox = 0, ++oy;
      } else {
        src[p] = src[n - 1], dst[p] = dst[n - 1];
      }
    }
    Vec acc[P];
    for (int p = 0; p < P; ++p) acc[p] = bias;
#pragma GCC unroll 8
    for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) {
        const Vec wt = weight(ky * K + kx);
        const int64_t off = (ky * wp + kx) * kLanes;
        for (int p = 0; p < P; ++p) acc[p] = vfma(wt, vload(src[p] + off), acc[p]);
      }
    for (int p = 0; p < P; ++p) vstorem(dst[p], m, activate(act, acc[p]));
  }
}

void pad_compute_generic(const PadArgs& a) {
  const DwConvShape& s = *a.s;
  const int KH = s.kernel_h, KW = s.kernel_w;
  const int64_t OW = a.cols, total = a.rows * OW, wp = a.wp;
  const int64_t SH = s.stride_h, SW = s.stride_w, DH = s.dilation_h, DW = s.dilation_w;
  constexpr int P = 4;
  const Vec bias = vload(a.w);
  int64_t oy = 0, ox = 0;
  for (int64_t i = 0; i < total; i += P) {
    const int n = int(total - i < P ? total - i : P);
    const float* src[P];
    float* dst[P];
    for (int p = 0; p < P; ++p) {
      if (p < n) {
        src[p] = a.scr + (oy * SH * wp + ox * SW) * kLanes;
        dst[p] = a.out + (i + p) * a.ostride;
        if (++ox == OW) ox = 0, ++oy;
      } else {
        src[p] = src[n - 1], dst[p] = dst[n - 1];
      }
    }
    Vec acc[P] = {bias, bias, bias, bias};
    for (int ky = 0; ky < KH; ++ky)
      for (int kx = 0; kx < KW; ++kx) {
        const Vec wt = vload(a.w + (1 + ky * KW + kx) * a.wstride);
        const int64_t off = (ky * DH * wp + kx * DW) * kLanes;
        for (int p = 0; p < P; ++p) acc[p] = vfma(wt, vload(src[p] + off), acc[p]);
      }
    for (int p = 0; p < P; ++p) vstorem(dst[p], a.m, activate(s.activation, acc[p]));
  }
}

PadFn pick_pad_fn(const DwConvShape& s, bool generic_ok) {
  if (s.kernel_h == s.kernel_w && s.stride_h == s.stride_w && s.dilation_h == 1 &&
      s.dilation_w == 1) {
    const int k = s.kernel_h, st = s.stride_h;
    if (k == 3 && st == 1) return pad_compute_k<3, 1>;
    if (k == 3 && st == 2) return pad_compute_k<3, 2>;
    if (k == 5 && st == 1) return pad_compute_k<5, 1>;
    if (k == 5 && st == 2) return pad_compute_k<5, 2>;
  }
  return generic_ok ? pad_compute_generic : nullptr;
}

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

// ---- NCHW, small planes: kLanes planes at once, channel-interleaved via 16x16 transposes.
void nchw_interleaved(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t plane_begin, int64_t plane_end) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w, T = int64_t(s.kernel_h) * s.kernel_w;
  const int64_t hp = (OH - 1) * s.stride_h + int64_t(s.kernel_h - 1) * s.dilation_h + 1;
  const int64_t wp = (OW - 1) * s.stride_w + int64_t(s.kernel_w - 1) * s.dilation_w + 1;
  const int64_t in_plane = H * W, out_plane = OH * OW;
  // obuf rounded up to whole 16-pixel blocks for the output transposes.
  const int64_t in_floats = hp * wp * kLanes, out_floats = (out_plane + kLanes - 1) / kLanes * kLanes * kLanes;
  float* scr = thread_scratch(in_floats + out_floats + (1 + T) * kLanes);
  float* obuf = scr + in_floats;
  float* wts = obuf + out_floats;
  std::memset(scr, 0, sizeof(float) * (in_floats + out_floats + (1 + T) * kLanes));
  const PadFn fn = pick_pad_fn(s, true);
  const int64_t pt = s.pad_top, pl = s.pad_left;
  for (int64_t g = plane_begin; g < plane_end; g += kLanes) {
    const int64_t nl = plane_end - g < kLanes ? plane_end - g : kLanes;
    const int64_t c = g % C;
    if (c + nl <= C) {
      const Mask ml = lanes_mask(nl);
      for (int64_t t = 0; t <= T; ++t) vstore(wts + t * kLanes, vloadm(packed + t * padded + c, ml));
    } else {
      for (int64_t l = 0; l < nl; ++l) {
        const int64_t cl = (g + l) % C;
        for (int64_t t = 0; t <= T; ++t) wts[t * kLanes + l] = packed[t * padded + cl];
      }
    }
    // Input: 16 planes x 16 consecutive pixels -> 16 pixel vectors, stored at their padded spots.
    const float* in = input + g * in_plane;
    int64_t y = 0, x = 0;
    for (int64_t q0 = 0; q0 < in_plane; q0 += kLanes) {
      const Mask mq = lanes_mask(in_plane - q0);
      Vec r[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) r[l] = l < nl ? vloadm(in + l * in_plane + q0, mq) : vzero();
      transpose16(r);
      const int64_t nq = in_plane - q0 < kLanes ? in_plane - q0 : kLanes;
      for (int64_t j = 0; j < nq; ++j) {
        const int64_t py = y + pt, px = x + pl;
        if (py < hp && px < wp) vstore(scr + (py * wp + px) * kLanes, r[j]);
        if (++x == W) x = 0, ++y;
      }
    }
    const PadArgs args{&s, scr, wp, wts, kLanes, OH, OW, obuf, kLanes, full_mask()};
    fn(args);
    float* out = output + g * out_plane;
    for (int64_t j0 = 0; j0 < out_plane; j0 += kLanes) {
      Vec r[kLanes];
      for (int64_t i = 0; i < kLanes; ++i) r[i] = vload(obuf + (j0 + i) * kLanes);
      transpose16(r);
      const Mask mj = lanes_mask(out_plane - j0);
      for (int64_t l = 0; l < nl; ++l) vstorem(out + l * out_plane + j0, mj, r[l]);
    }
  }
}

// ---- NHWC, small images: per band of output rows and channel tile, the padded input rows
// of the band go into a zero-bordered (rows, wp, kLanes) scratch; every pixel then takes the
// interior kernel with the tap weights in registers for the whole band.
constexpr int64_t kPaddedMaxWidth = 14;
constexpr int64_t kBandFloats = 12288;  // 48 KiB of scratch per band and tile
void nhwc_padded(const DwConvShape& s, const float* input, const float* packed, float* output,
                 int64_t row_begin, int64_t row_end, PadFn fn) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w;
  const int64_t K = s.kernel_h, S = s.stride_h, pt = s.pad_top, pl = s.pad_left;
  const int64_t wp = (OW - 1) * S + K;
  const int64_t max_rows = kBandFloats / (wp * kLanes);
  int64_t band = max_rows <= K ? 1 : (max_rows - K) / S + 1;
  if (band > OH) band = OH;
  float* scr = thread_scratch(((band - 1) * S + K) * wp * kLanes);
  const int64_t xa = pl < wp ? pl : wp, xb = pl + W < wp ? pl + W : wp;
  for (int64_t row = row_begin; row < row_end;) {
    const int64_t n = row / OH, oy0 = row % OH;
    const int64_t oy1 = OH - oy0 < row_end - row ? OH : oy0 + (row_end - row);
    for (int64_t b0 = oy0; b0 < oy1; b0 += band) {
      const int64_t b1 = b0 + band < oy1 ? b0 + band : oy1;
      const int64_t nr = (b1 - b0 - 1) * S + K;
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
        const Mask m = lanes_mask(C - c0);
        for (int64_t yy = 0; yy < nr; ++yy) {
          const int64_t iy = b0 * S + yy - pt;
          float* dst = scr + yy * wp * kLanes;
          if (iy < 0 || iy >= H) {
            for (int64_t x = 0; x < wp; ++x) vstore(dst + x * kLanes, vzero());
            continue;
          }
          const float* src = input + ((n * H + iy) * W - pl) * C + c0;
          int64_t x = 0;
          for (; x < xa; ++x) vstore(dst + x * kLanes, vzero());
          for (; x < xb; ++x) vstore(dst + x * kLanes, vloadm(src + x * C, m));
          for (; x < wp; ++x) vstore(dst + x * kLanes, vzero());
        }
        const PadArgs args{&s, scr, wp, packed + c0, padded, b1 - b0, OW,
                           output + ((n * OH + b0) * OW) * C + c0, C, m};
        fn(args);
      }
    }
    row += oy1 - oy0;
  }
}

template <int KH, int KW, int S, Activation A>
void pick_nhwc_act(NhwcTileFn& full, NhwcTileFn& tail) {
  full = nhwc_tile_k<KH, KW, S, false, A>;
  tail = nhwc_tile_k<KH, KW, S, true, A>;
}
template <int KH, int KW, int S>
void pick_nhwc(Activation act, NhwcTileFn& full, NhwcTileFn& tail, NhwcCheckedFn& checked) {
  switch (act) {
    case Activation::kRelu: pick_nhwc_act<KH, KW, S, Activation::kRelu>(full, tail); break;
    case Activation::kRelu6: pick_nhwc_act<KH, KW, S, Activation::kRelu6>(full, tail); break;
    case Activation::kHardswish:
      pick_nhwc_act<KH, KW, S, Activation::kHardswish>(full, tail);
      break;
    default: pick_nhwc_act<KH, KW, S, Activation::kNone>(full, tail); break;
  }
  checked = nhwc_tile_checked<KH, KW, S>;
}

}  // namespace

void dwconv_nhwc_rows(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w;
  const int64_t SW = s.stride_w, pl = s.pad_left;
  // Interior columns: every tap inside the input.
  int64_t ox_l = (pl + SW - 1) / SW;
  if (ox_l > OW) ox_l = OW;
  const int64_t last = W - 1 + pl - int64_t(s.kernel_w - 1) * s.dilation_w;
  int64_t ox_r = last < 0 ? 0 : last / SW + 1;
  if (ox_r > OW) ox_r = OW;
  if (ox_r < ox_l) ox_r = ox_l;

  NhwcTileFn full = nullptr, tail = nullptr;
  NhwcCheckedFn checked = nullptr;
  if (s.kernel_h == s.kernel_w && s.stride_h == s.stride_w && s.dilation_h == 1 &&
      s.dilation_w == 1) {
    const int k = s.kernel_h, st = s.stride_h;
    if (k == 3 && st == 1) pick_nhwc<3, 3, 1>(s.activation, full, tail, checked);
    if (k == 3 && st == 2) pick_nhwc<3, 3, 2>(s.activation, full, tail, checked);
    if (k == 5 && st == 1) pick_nhwc<5, 5, 1>(s.activation, full, tail, checked);
    if (k == 5 && st == 2) pick_nhwc<5, 5, 2>(s.activation, full, tail, checked);
  }

  // Small images (edges a large part of every row): zero-bordered bands, one uniform kernel.
  if (OW <= kPaddedMaxWidth) {
    if (const PadFn pf = pick_pad_fn(s, false)) {
      nhwc_padded(s, input, packed, output, row_begin, row_end, pf);
      return;
    }
  }
  const float* base[8];
  const float* rows[8];
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t n = row / OH, oy = row % OH;
    for (int ky = 0; ky < s.kernel_h; ++ky) {
      const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
      base[ky] = (iy < 0 || iy >= H) ? nullptr : input + (n * H + iy) * W * C;
    }
    float* out_row = output + row * OW * C;
    // Interior groups per channel tile (weights in registers), the rest pixel by pixel.
    int64_t done = ox_l;
    if (full) {
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
        for (int ky = 0; ky < s.kernel_h; ++ky) rows[ky] = base[ky] ? base[ky] + c0 : nullptr;
        const NhwcTileArgs args{&s, rows, packed + c0, padded, out_row + c0, ox_l, ox_r,
                                lanes_mask(C - c0)};
        done = C - c0 >= kLanes ? full(args) : tail(args);
        // Edge pixels of this tile with masked FMAs (AVX-512 only).
        checked(args, done);
      }
      continue;
    }
    for (int64_t ox = 0; ox < ox_l; ++ox) nhwc_pixel(s, base, packed, padded, out_row + ox * C, ox);
    for (int64_t ox = done; ox < OW; ++ox)
      nhwc_pixel(s, base, packed, padded, out_row + ox * C, ox);
  }
}

void dwconv_nchw_planes(const DwConvShape& s, const float* input, const float* packed,
                        float* output, int64_t plane_begin, int64_t plane_end) {
  if (plane_begin >= plane_end) return;
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t OW = s.out_w, OH = s.out_h;
  const int64_t nvec = (OW + kLanes - 1) / kLanes;
  // Narrow planes (more than a quarter of each row vector unused) go kLanes planes at a time.
  // Decided by the shape alone, so every thread split takes the same path.
  if (4 * (nvec * kLanes - OW) > nvec * kLanes) {
    nchw_interleaved(s, input, packed, output, plane_begin, plane_end);
    return;
  }
  // Phase rows cover every output vector's taps, including the lanes past out_w.
  const int64_t r = nvec * kLanes + int64_t(s.kernel_w - 1) * s.dilation_w / s.stride_w + 1;
  const int64_t hp = (OH - 1) * s.stride_h + int64_t(s.kernel_h - 1) * s.dilation_h + 1;
  float* scr = thread_scratch(hp * s.stride_w * r);
  std::memset(scr, 0, sizeof(float) * hp * s.stride_w * r);

  NchwPlaneFn fn = nchw_plane_generic;
  if (s.kernel_h == s.kernel_w && s.stride_h == s.stride_w && s.dilation_h == 1 &&
      s.dilation_w == 1) {
    const int k = s.kernel_h, st = s.stride_h;
    if (k == 3 && st == 1) fn = nchw_plane_k<3, 1>;
    if (k == 3 && st == 2) fn = nchw_plane_k<3, 2>;
    if (k == 5 && st == 1) fn = nchw_plane_k<5, 1>;
    if (k == 5 && st == 2) fn = nchw_plane_k<5, 2>;
  }
  const int64_t in_plane = s.in_h * s.in_w, out_plane = OH * OW;
  for (int64_t plane = plane_begin; plane < plane_end; ++plane) {
    const int64_t c = plane % C;
    copy_plane(s, input + plane * in_plane, scr, hp, r);
    const NchwPlaneArgs args{&s, scr, r, packed + padded + c, padded, packed[c],
                             output + plane * out_plane};
    fn(args);
  }
}

}  // namespace mnv3ext::avx512
