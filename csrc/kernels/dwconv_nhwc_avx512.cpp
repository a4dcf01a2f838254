// AVX-512 fused depthwise conv + bias + activation, NHWC (channels-last).
//
// Vector over 16 channels (masked tail for C % 16). For k x k kernels (3, 5), stride 1/2 and
// dilation 1/2 a compile-time kernel computes a group of 2 output rows x P consecutive pixels
// (P = 7 or 8) of one channel tile with the accumulators in registers: per input row it loads
// the weight vectors of the kernel rows that input row serves, then walks the input pixels
// the group touches, loading each once and feeding it to every output it is a tap of. That
// is about a third of a load per FMA (one per FMA if every tap were loaded), which is what
// bounds these kernels. Pixels outside the row are skipped (the masked tail tile loads them
// as zeros instead, touching no memory); rows outside the input are skipped. Each group runs
// over all channel tiles before the next, so the input streams in address order. Every other
// shape goes pixel by pixel over all channels.
//
// Every output element is bias + sum over its taps in (ky, kx) order, one FMA per tap, computed
// by exactly one group: results do not depend on how rows are split between threads (a group
// that overlaps its neighbour recomputes the same values).
// Compiled with AVX-512 flags: internal linkage, no STL.
#include <cstdint>

#include "kernels.h"
#include "simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {

// One channel tile of R consecutive output rows of one image.
constexpr int kMaxRows = 2;
constexpr int kMaxInputRows = (kMaxRows - 1) * 2 + 6 * 2 + 1;  // S <= 2; k <= 7 at D = 2 unused
struct RowTile {
  const float* rows[kMaxInputRows];  // input rows (channel 0), null = padding
  const float* packed;   // bias vector at c0, then tap t at packed + (1 + t) * padded + c0
  int64_t padded;
  int64_t channels;      // pixel stride in floats
  int64_t in_w, pad_left;
  float* out[kMaxRows];  // output rows (channel 0)
  Activation activation;
};

// How a group reads its input pixels. Masked loads cost more than plain ones, so they are
// kept for the tile with fewer than 16 channels.
enum class Reads {
  kInterior,  // full tile, every pixel inside the row
  kEdge,      // full tile, pixels outside the row are skipped (their taps add nothing)
  kMasked,    // channel tail tile: per-pixel masks, zero outside the row
};

template <Activation A, int P, bool Masked>
inline void store_pixels(float* out, int64_t C, Mask m, const Vec* acc) {
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
    if constexpr (Masked) vstorem(out + p * C, m, activate_t<A>(acc[p]));
    else vstore(out + p * C, activate_t<A>(acc[p]));
  }
}

// Output pixels [ox, ox + P) of R rows of one tile. Input row i (of the (R - 1) * S + (KH - 1)
// * D + 1 the rows touch) is walked once and feeds every output row it is a kernel row of.
template <int KH, int KW, int S, int D, int P, int R, Reads M>
void nhwc_group(const RowTile& a, int64_t ox, int64_t c0) {
  constexpr int IR = (R - 1) * S + (KH - 1) * D + 1;
  constexpr int J = (P - 1) * S + (KW - 1) * D + 1;  // input pixels per input row
  constexpr bool Masked = M == Reads::kMasked;
  const int64_t C = a.channels, ix0 = ox * S - a.pad_left;
  const Mask m = lanes_mask(C - c0);
  const float* weights = a.packed + c0;
  // Pixels [j_lo, j_hi) of the group lie inside the row.
  const int64_t j_lo = ix0 < 0 ? -ix0 : 0;
  const int64_t j_hi = a.in_w - ix0 < J ? a.in_w - ix0 : J;
  Mask mj[Masked ? J : 1];
  if constexpr (Masked)
    for (int j = 0; j < J; ++j) mj[j] = (j >= j_lo && j < j_hi) ? m : no_mask();
  const Vec bias = vload(weights);
  Vec acc[R][P];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) acc[r][p] = bias;
  const uintptr_t step = uintptr_t(C) * sizeof(float);
#pragma GCC unroll 16
  for (int i = 0; i < IR; ++i) {
    if (!a.rows[i]) continue;
    // The kernel row of input row i for output row r, or -1.
    auto kernel_row = [](int i, int r) {
      const int dy = i - r * S;
      return (dy >= 0 && dy % D == 0 && dy / D < KH) ? dy / D : -1;
    };
    Vec w[R][KW];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const int ky = kernel_row(i, r);
      if (ky < 0) continue;
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) w[r][kx] = vload(weights + (1 + ky * KW + kx) * a.padded);
    }
    // Formed as an integer: at the left edge the first pixels lie before the row.
    uintptr_t x = reinterpret_cast<uintptr_t>(a.rows[i] + c0) + uintptr_t(ix0 * C * 4);
#pragma GCC unroll 32
    for (int j = 0; j < J; ++j) {
      if (M == Reads::kEdge && (j < j_lo || j >= j_hi)) {
        x += step;
        __asm__("" : "+r"(x));
        continue;
      }
      const float* px = reinterpret_cast<const float*>(x);
      const Vec v = Masked ? vloadm(px, mj[j]) : vload(px);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        if (kernel_row(i, r) < 0) continue;
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) {
          const int t = j - p * S;  // kx * D when this pixel is a tap of output p
          if (t >= 0 && t % D == 0 && t / D < KW) acc[r][p] = vfma(w[r][t / D], v, acc[r][p]);
        }
      }
      // Opaque step: otherwise the compiler keeps one address register per pixel offset (the
      // stride C is a run-time value), runs out of registers and spills in this loop.
      x += step;
      __asm__("" : "+r"(x));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    float* out = a.out[r] + ox * C + c0;
    switch (a.activation) {
      case Activation::kRelu: store_pixels<Activation::kRelu, P, Masked>(out, C, m, acc[r]); break;
      case Activation::kRelu6: store_pixels<Activation::kRelu6, P, Masked>(out, C, m, acc[r]); break;
      case Activation::kHardswish:
        store_pixels<Activation::kHardswish, P, Masked>(out, C, m, acc[r]);
        break;
      default: store_pixels<Activation::kNone, P, Masked>(out, C, m, acc[r]); break;
    }
  }
}

using GroupFn = void (*)(const RowTile&, int64_t, int64_t);
struct GroupKernels {
  int pixels;  // P
  GroupFn interior[kMaxRows], edge[kMaxRows], masked[kMaxRows];  // [R - 1]
};

template <int KH, int KW, int S, int D, int P>
GroupKernels group_kernels() {
  return {P,
          {nhwc_group<KH, KW, S, D, P, 1, Reads::kInterior>,
           nhwc_group<KH, KW, S, D, P, 2, Reads::kInterior>},
          {nhwc_group<KH, KW, S, D, P, 1, Reads::kEdge>, nhwc_group<KH, KW, S, D, P, 2, Reads::kEdge>},
          {nhwc_group<KH, KW, S, D, P, 1, Reads::kMasked>,
           nhwc_group<KH, KW, S, D, P, 2, Reads::kMasked>}};
}

// 7 pixels per group when the row is a multiple of 7 (MobileNetV3's 7, 14, 28 wide rows), else 8
// (with the last group overlapping its neighbour). None when the shape has no specialisation
// or the row is narrower than a group.
template <int K, int S, int D>
GroupKernels pick_pixels(int64_t out_w) {
  if (out_w % 7 == 0) return group_kernels<K, K, S, D, 7>();
  if (out_w >= 8) return group_kernels<K, K, S, D, 8>();
  return {0, {nullptr, nullptr}, {nullptr, nullptr}, {nullptr, nullptr}};
}

GroupKernels pick_group_kernels(const DwConvShape& s) {
  if (s.kernel_h != s.kernel_w || s.stride_h != s.stride_w || s.dilation_h != s.dilation_w)
    return {0, {nullptr, nullptr}, {nullptr, nullptr}, {nullptr, nullptr}};
  const int k = s.kernel_h, st = s.stride_h, d = s.dilation_h;
  const int64_t ow = s.out_w;
  if (d == 1) {
    if (k == 3 && st == 1) return pick_pixels<3, 1, 1>(ow);
    if (k == 3 && st == 2) return pick_pixels<3, 2, 1>(ow);
    if (k == 5 && st == 1) return pick_pixels<5, 1, 1>(ow);
    if (k == 5 && st == 2) return pick_pixels<5, 2, 1>(ow);
  } else if (d == 2 && st == 1) {  // LR-ASPP's dilated last stage
    if (k == 3) return pick_pixels<3, 1, 2>(ow);
    if (k == 5) return pick_pixels<5, 1, 2>(ow);
  }
  return {0, {nullptr, nullptr}, {nullptr, nullptr}, {nullptr, nullptr}};
}

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

}  // namespace

void dwconv_nhwc_rows(const DwConvShape& s, const float* input, const float* packed,
                      float* output, int64_t row_begin, int64_t row_end) {
  const int64_t C = s.channels, padded = padded_channels(C);
  const int64_t H = s.in_h, W = s.in_w, OH = s.out_h, OW = s.out_w;
  const float* base[7];
  const GroupKernels g = pick_group_kernels(s);
  if (!g.interior[0]) {
    for (int64_t row = row_begin; row < row_end; ++row) {
      const int64_t n = row / OH, oy = row % OH;
      for (int ky = 0; ky < s.kernel_h; ++ky) {
        const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
        base[ky] = (iy < 0 || iy >= H) ? nullptr : input + (n * H + iy) * W * C;
      }
      for (int64_t ox = 0; ox < OW; ++ox)
        nhwc_pixel(s, base, packed, padded, output + (row * OW + ox) * C, ox);
    }
    return;
  }
  // Group starts: every P pixels, the last one moved back to end at the row's end. A group is
  // interior when all its input pixels lie inside the row.
  const int64_t P = g.pixels, SW = s.stride_w, SH = s.stride_h, DH = s.dilation_h;
  const int64_t J = (P - 1) * SW + int64_t(s.kernel_w - 1) * s.dilation_w + 1;
  RowTile t;
  t.packed = packed;
  t.padded = padded;
  t.channels = C;
  t.in_w = W;
  t.pad_left = s.pad_left;
  t.activation = s.activation;
  // Output rows [row, row + nrows) of one image.
  auto set_rows = [&](int64_t row, int nrows) {
    const int64_t n = row / OH, oy = row % OH;
    const int64_t input_rows = (nrows - 1) * SH + int64_t(s.kernel_h - 1) * DH + 1;
    for (int64_t i = 0; i < input_rows; ++i) {
      const int64_t iy = oy * SH - s.pad_top + i;
      t.rows[i] = (iy < 0 || iy >= H) ? nullptr : input + (n * H + iy) * W * C;
    }
    for (int r = 0; r < nrows; ++r) t.out[r] = output + (row + r) * OW * C;
  };
  // The group at `start` of channel tile c0 of the current rows.
  auto run_group = [&](int nrows, int64_t start, int64_t c0) {
    const int64_t ix0 = start * SW - s.pad_left;
    const bool inside = ix0 >= 0 && ix0 + J <= W;
    const GroupFn fn = C - c0 < kLanes ? g.masked[nrows - 1]
                       : inside        ? g.interior[nrows - 1]
                                       : g.edge[nrows - 1];
    fn(t, start, c0);
  };
  // Group starts: every P pixels, the last one moved back to end at the row's end.
  auto group_start = [&](int64_t ox) { return ox + P <= OW ? ox : OW - P; };
  // Two rows per step while both are in [row_begin, row_end) and the same image.
  auto rows_at = [&](int64_t row) {
    return (row + 1 < row_end && (row + 1) % OH != 0) ? 2 : 1;
  };
  // Row by row, each group over all channel tiles: the input is read in address order, and
  // the tiles of one group share its input pixels' cache lines.
  for (int64_t row = row_begin; row < row_end;) {
    const int nrows = rows_at(row);
    set_rows(row, nrows);
    for (int64_t ox = 0; ox < OW; ox += P)
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) run_group(nrows, group_start(ox), c0);
    row += nrows;
  }
}

}  // namespace mnv3ext::avx512
