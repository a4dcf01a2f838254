// AVX2 + FMA fused depthwise conv + bias + activation, NCHW (planar): per plane a zero-padded,
// stride-phase-split scratch copy, 8 output columns per vector, U vectors in flight (only 3x3
// weights are kept in the 16 registers; 5x5 weights are reloaded per tap). Narrow planes go 8
// planes at a time, channel-interleaved through 8x8 transposes.
// Every output is bias + taps in (ky, kx) order, one FMA per tap: independent of threading.
// Compiled with AVX2 flags: internal linkage, no STL, scratch from thread_scratch().
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "simd_avx2.h"

namespace mnv3ext::avx2 {
namespace {

// Output vectors (planar) / pixels (interleaved) per step and whether the weights stay in
// registers.
constexpr int nchw_vectors(int taps) { return taps <= 9 ? 5 : 8; }
constexpr bool nchw_weights_in_regs(int taps) { return taps <= 9; }
constexpr int interleaved_pixels(int taps) { return taps <= 9 ? 4 : 8; }
constexpr bool interleaved_weights_in_regs(int taps) { return taps <= 9; }

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
  const int64_t hp = (OH - 1) * s.stride_h + int64_t(s.kernel_h - 1) * s.dilation_h + 1;
  const int64_t wp = (OW - 1) * s.stride_w + int64_t(s.kernel_w - 1) * s.dilation_w + 1;
  const int64_t in_plane = H * W, out_plane = OH * OW;
  // obuf rounded up to whole 8-pixel blocks for the output transposes.
  const int64_t in_floats = hp * wp * kLanes, out_floats = (out_plane + kLanes - 1) / kLanes * kLanes * kLanes;
  float* scr = thread_scratch(in_floats + out_floats + (1 + T) * kLanes);
  float* obuf = scr + in_floats;
  float* wts = obuf + out_floats;
  std::memset(scr, 0, sizeof(float) * (in_floats + out_floats + (1 + T) * kLanes));

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

}  // namespace mnv3ext::avx2
