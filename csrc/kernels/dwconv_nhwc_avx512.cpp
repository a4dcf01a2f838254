// AVX-512 fused depthwise conv + bias + activation, NHWC (channels-last).
//
// Vector over 16 channels (masked tail for C % 16). Per output row and channel tile the kh*kw
// weight vectors stay in registers and the interior pixels (every tap inside the input) are
// computed P at a time without any bounds checks (3x3 and 5x5, stride 1/2, dilation 1:
// compile-time specialisations). Edge pixels and leftover interior pixels use masked FMAs;
// every other shape goes pixel by pixel: the valid taps are listed once per pixel and the
// channels run 4 tiles at a time. Small images go through zero-bordered scratch tiles
// (dwconv_pad_avx512.h). Rows outside the input are skipped per output row.
//
// Every output element is bias + sum over taps in (ky, kx) order, one FMA per tap, computed by
// exactly one call: results do not depend on how rows are split between threads.
// Compiled with AVX-512 flags: internal linkage, no STL, scratch from thread_scratch().
#include <cstdint>

#include "dwconv_pad_avx512.h"
#include "kernels.h"
#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

// Output pixels per NHWC interior step and whether the weights stay in registers.
constexpr int nhwc_pixels(int taps) { return taps <= 9 ? 8 : 5; }
constexpr int nhwc_pixels_tail(int taps) { return nhwc_pixels(taps); }  // must match: one split per row
constexpr bool nhwc_weights_in_regs(int taps) { return taps <= 25; }

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

}  // namespace mnv3ext::avx512
