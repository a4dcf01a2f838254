// Zero-bordered 16-lane tiles, shared by the AVX-512 NHWC (small images) and NCHW (small
// planes) depthwise paths. Include after simd_avx512.h, AVX-512 files only.
#pragma once

#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

// Output pixels per step and whether the kh*kw weight vectors stay in registers (32 zmm).
constexpr int pad_pixels(int taps) { return taps <= 9 ? 8 : 5; }
constexpr bool pad_weights_in_regs(int taps) { return taps <= 25; }

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
  constexpr bool WR = pad_weights_in_regs(T);
  constexpr int P = pad_pixels(T);
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

}  // namespace
}  // namespace mnv3ext::avx512
