#include "kernels/gemm/pointwise.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/require.h"
#include "kernels/thread_pool.h"

namespace mnv3ext {
namespace {

bool fits(std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t f : factors) {
    if (f < 0) return false;
    if (f != 0 && product > std::numeric_limits<int64_t>::max() / 4 / f) return false;
    product *= f;
  }
  return true;
}

// Rows are split in units that are a multiple of every ISA's tile height (12, 6, 4).
constexpr int64_t kRowUnit = 24;
// Below this many multiply-adds per thread, waking a worker costs more than it saves.
constexpr int64_t kMinMacsPerThread = 200000;

// Per calling thread, separate from thread_scratch() (which the GEMM tiles use for scaled rows).
float* im2col_buffer(int64_t floats) {
  thread_local std::vector<float> buffer;
  if (int64_t(buffer.size()) < floats) buffer.resize(floats);
  return buffer.data();
}

}  // namespace

void pack_gemm_weights(const float* weight, const float* bias, int64_t k, int64_t n,
                       float* packed) {
  const int64_t panel_stride = (1 + k) * kGemmPanel;
  std::fill(packed, packed + packed_gemm_floats(k, n), 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    float* panel = packed + (j / kGemmPanel) * panel_stride + j % kGemmPanel;
    panel[0] = bias ? bias[j] : 0.0f;
    for (int64_t kk = 0; kk < k; ++kk) panel[(1 + kk) * kGemmPanel] = weight[j * k + kk];
  }
}

void check_gemm_args(const GemmArgs& g) {
  require(g.m >= 0, "input: number of rows must be >= 0");
  require(g.k >= 1, "weight: input channels must be >= 1");
  require(g.n >= 1, "weight: output channels must be >= 1");
  require(fits({g.m, g.lda}) && fits({g.m, g.ldc}) && fits({gemm_panels(g.n), 1 + g.k, kGemmPanel}),
          "input: size overflows 64-bit indexing");
  require(g.lda >= g.k, "input: row stride smaller than its channels");
  require(g.ldc >= g.n, "output: row stride smaller than its channels");
  require(!g.residual || (g.ldr >= g.n && fits({g.m, g.ldr})), "residual: bad row stride");
  require(!g.scale || g.scale_rows >= 1, "input_scale: rows per scale row must be >= 1");
  require(!(g.scale && g.a_offsets), "input_scale: not with tap offsets");
  require(g.activation >= Activation::kNone && g.activation <= Activation::kHardswish,
          "activation: must be none, relu, relu6 or hardswish");
}

void gemm(const GemmArgs& g, int threads) {
  check_gemm_args(g);
  if (g.m == 0) return;
  const KernelTable& kernels = active_kernels();
  const int64_t panels = gemm_panels(g.n);
  const int64_t by_size = std::max<int64_t>(1, g.m * g.k * g.n / kMinMacsPerThread);
  const int64_t row_units = (g.m + kRowUnit - 1) / kRowUnit;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, by_size)));
  if (threads == 1) return kernels.gemm_tiles(g, 0, g.m, 0, panels);
  if (row_units >= 2 * threads || row_units >= panels) {
    parallel_for(row_units, threads, [&](int64_t u0, int64_t u1) {
      kernels.gemm_tiles(g, u0 * kRowUnit, std::min(g.m, u1 * kRowUnit), 0, panels);
    });
  } else {  // few rows (a classifier at batch 1, the 7x7 layers): split the columns
    parallel_for(panels, threads, [&](int64_t p0, int64_t p1) {
      kernels.gemm_tiles(g, 0, g.m, p0, p1);
    });
  }
}

ConvShape make_conv_shape(int64_t batch, int64_t in_c, int64_t in_h, int64_t in_w, int64_t out_c,
                          int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h,
                          int dilation_w, int pad_top, int pad_left, int pad_bottom,
                          int pad_right, Activation activation) {
  require(batch >= 0 && in_c >= 1 && in_h >= 1 && in_w >= 1,
          "input: sizes must be N >= 0 and C, H, W >= 1");
  require(out_c >= 1, "weight: output channels must be >= 1");
  require(kernel_h >= 1 && kernel_h <= 7 && kernel_w >= 1 && kernel_w <= 7,
          "weight: kernel size must be between 1 and 7");
  require(stride_h >= 1 && stride_w >= 1, "stride: values must be >= 1");
  require(dilation_h >= 1 && dilation_w >= 1, "dilation: values must be >= 1");
  require(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0,
          "padding: values must be >= 0");
  require(activation >= Activation::kNone && activation <= Activation::kHardswish,
          "activation: must be none, relu, relu6 or hardswish");
  require(in_h + pad_top + pad_bottom >= int64_t(dilation_h) * (kernel_h - 1) + 1 &&
              in_w + pad_left + pad_right >= int64_t(dilation_w) * (kernel_w - 1) + 1,
          "input: padded input is smaller than the dilated kernel (output would be empty)");
  const int64_t out_h = (in_h + pad_top + pad_bottom - int64_t(dilation_h) * (kernel_h - 1) - 1) / stride_h + 1;
  const int64_t out_w = (in_w + pad_left + pad_right - int64_t(dilation_w) * (kernel_w - 1) - 1) / stride_w + 1;
  require(fits({batch, in_c, in_h + pad_top + pad_bottom, in_w + pad_left + pad_right}),
          "input: size overflows 64-bit indexing");
  require(fits({batch, out_h, out_w, out_c}) && fits({out_w, in_c, kernel_h, kernel_w}),
          "output: size overflows 64-bit indexing");
  return ConvShape{batch, in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h,
                   stride_w, dilation_h, dilation_w, pad_top, pad_left, activation};
}

namespace {

// A short copy as a plain loop: GCC would turn a copy loop into a memcpy call, which costs more
// than copying the few floats of one tap.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
inline void copy_floats(const float* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
inline void zero_floats(int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.0f;
}

// One output row's im2col: col[ox, (ky * kw + kx) * C + c] = input(n, c, iy, ix), zero outside.
// NHWC input (channels contiguous, pixels dense): the kw taps of a kernel row are one run of
// kw * C floats for pixels away from the left/right edges; any other layout gathers element
// by element.
void im2col_row(const ConvShape& s, const float* image, int64_t sc, int64_t sh, int64_t sw,
                int64_t oy, int64_t ox_begin, int64_t ox_end, float* col) {
  const int64_t C = s.in_c, KW = s.kernel_w, k = C * s.kernel_h * KW;
  const bool nhwc = sc == 1 && sw == C && s.dilation_w == 1;
  for (int ky = 0; ky < s.kernel_h; ++ky) {
    const int64_t iy = oy * s.stride_h - s.pad_top + int64_t(ky) * s.dilation_h;
    float* dst = col + ky * KW * C;
    if (iy < 0 || iy >= s.in_h) {
      for (int64_t ox = ox_begin; ox < ox_end; ++ox) zero_floats(KW * C, dst + (ox - ox_begin) * k);
      continue;
    }
    const float* row = image + iy * sh;
    for (int64_t ox = ox_begin; ox < ox_end; ++ox, dst += k) {
      const int64_t ix0 = ox * s.stride_w - s.pad_left;
      if (nhwc && ix0 >= 0 && ix0 + KW <= s.in_w) {
        copy_floats(row + ix0 * C, KW * C, dst);
        continue;
      }
      for (int64_t kx = 0; kx < KW; ++kx) {
        const int64_t ix = ix0 + kx * s.dilation_w;
        float* d = dst + kx * C;
        if (ix < 0 || ix >= s.in_w) zero_floats(C, d);
        else for (int64_t c = 0; c < C; ++c) d[c] = row[c * sc + ix * sw];
      }
    }
  }
}

}  // namespace

void conv2d_gemm(const ConvShape& s, const float* input, const int64_t in_strides[4],
                 const float* packed, float* output, int threads) {
  const KernelTable& kernels = active_kernels();
  const int64_t C = s.in_c, k = C * s.kernel_h * s.kernel_w, rows = s.batch * s.out_h;
  if (rows == 0) return;
  const int64_t by_size = std::max<int64_t>(1, rows * s.out_w * k * s.out_c / kMinMacsPerThread);
  threads = int(std::max<int64_t>(1, std::min<int64_t>({threads, by_size, rows})));
  const int64_t sn = in_strides[0], sc = in_strides[1], sh = in_strides[2], sw = in_strides[3];
  // Windows entirely inside the image are read in place: A[ox, tap] = window start + offsets[tap]
  // (taps in NHWC order), no im2col. Output rows whose window leaves the image at the top or
  // bottom, and the pixels at the left and right edges, go through im2col.
  std::vector<int64_t> offsets(static_cast<size_t>(k));
  for (int ky = 0; ky < s.kernel_h; ++ky)
    for (int kx = 0; kx < s.kernel_w; ++kx)
      for (int64_t c = 0; c < C; ++c)
        offsets[size_t((ky * s.kernel_w + kx) * C + c)] =
            c * sc + int64_t(ky) * s.dilation_h * sh + int64_t(kx) * s.dilation_w * sw;
  const int64_t span_h = int64_t(s.kernel_h - 1) * s.dilation_h, span_w = int64_t(s.kernel_w - 1) * s.dilation_w;
  const int64_t ox_lo = std::min<int64_t>(s.out_w, (s.pad_left + s.stride_w - 1) / s.stride_w);
  const int64_t ox_hi = std::max(ox_lo, std::min(s.out_w, s.in_w - 1 - span_w + s.pad_left >= 0
                                                              ? (s.in_w - 1 - span_w + s.pad_left) / s.stride_w + 1
                                                              : int64_t(0)));
  const int64_t panels = gemm_panels(s.out_c);
  auto gemm_pixels = [&](const float* a, int64_t lda, const int64_t* koff, int64_t pixels, float* out) {
    if (pixels <= 0) return;
    GemmArgs g{pixels, k, s.out_c, a, lda, packed, out, s.out_c, nullptr, 0, nullptr, 1, s.activation};
    g.a_offsets = koff;
    kernels.gemm_tiles(g, 0, pixels, 0, panels);
  };
  // The input rows of the next kRowsPerRead output rows are read in one pass, line by line in
  // address order, before their tiles run. A model's stem finds its image out of cache on every
  // call, and the tiles' reads (channels x kernel rows of interleaved strided streams) otherwise
  // wait on memory latency a line at a time; one sequential pass lets the hardware prefetcher
  // stream them (a cold 224x224 stem at 1 thread: 130-143 -> 99-102 us, docs/performance.md).
  constexpr int64_t kRowsPerRead = 16;
  const int64_t row_span = (s.in_w - 1) * sw;  // floats from a row's first pixel to its last
  // A row's channels either lie within each pixel (one contiguous extent) or in separate planes
  // (one extent per channel); other stride orders are not read ahead.
  const bool interleaved = sw >= (C - 1) * sc + 1, planar = sc >= row_span + 1;
  const int64_t planes = interleaved ? 1 : C;
  const int64_t extent = interleaved ? row_span + (C - 1) * sc + 1 : row_span + 1;
  auto read_rows_of = [&](int64_t r0, int64_t r1) {  // output rows [r0, r1) of one image
    if (!(interleaved || planar) || r0 >= r1) return;
    const float* image = input + (r0 / s.out_h) * sn;
    const int64_t first = std::max<int64_t>(0, (r0 % s.out_h) * s.stride_h - s.pad_top);
    const int64_t last = std::min(s.in_h - 1, ((r1 - 1) % s.out_h) * s.stride_h - s.pad_top + span_h);
    float sums[4] = {0, 0, 0, 0};
    for (int64_t c = 0; c < planes; ++c)
      for (int64_t iy = first; iy <= last; ++iy) {
        const float* row = image + iy * sh + c * sc;
        for (int64_t i = 0; i < extent; i += 16) sums[(i >> 4) & 3] += row[i];
      }
    asm volatile("" : : "r"(sums) : "memory");  // the reads are the point, not the sums
  };
  // The ISA's direct stem kernel where it has one and the shape is the stem's.
  const bool stem = kernels.stem_rows && s.kernel_h == 3 && s.kernel_w == 3 && s.stride_h == 2 &&
                    s.stride_w == 2 && s.dilation_h == 1 && s.dilation_w == 1 && sw == 1 &&
                    C <= kStemMaxInC && s.out_c <= kGemmPanel;
  auto body = [&](int64_t r0, int64_t r1) {
    if (stem) {  // per image: its first rows' input read ahead, the kernel fetches the rest
      for (int64_t r = r0; r < r1;) {
        const int64_t end = std::min(r1, (r / s.out_h + 1) * s.out_h);
        read_rows_of(r, std::min(end, r + kRowsPerRead));
        kernels.stem_rows(s, input, in_strides, packed, output, r, end);
        r = end;
      }
      return;
    }
    float* col = im2col_buffer(s.out_w * k);
    int64_t read_until = r0;  // the input of output rows before this one has been read
    for (int64_t r = r0; r < r1; ++r) {
      if (r >= read_until) {
        read_until = std::min({r1, r + kRowsPerRead, (r / s.out_h + 1) * s.out_h});
        read_rows_of(r, read_until);
      }
      const int64_t n = r / s.out_h, oy = r % s.out_h;
      const float* image = input + n * sn;
      float* out = output + r * s.out_w * s.out_c;
      const int64_t iy0 = oy * s.stride_h - s.pad_top;
      if (iy0 < 0 || iy0 + span_h >= s.in_h || ox_lo >= ox_hi) {  // the whole row through im2col
        im2col_row(s, image, sc, sh, sw, oy, 0, s.out_w, col);
        gemm_pixels(col, k, nullptr, s.out_w, out);
        continue;
      }
      im2col_row(s, image, sc, sh, sw, oy, 0, ox_lo, col);
      gemm_pixels(col, k, nullptr, ox_lo, out);
      gemm_pixels(image + iy0 * sh + (ox_lo * s.stride_w - s.pad_left) * sw, s.stride_w * sw,
                  offsets.data(), ox_hi - ox_lo, out + ox_lo * s.out_c);
      im2col_row(s, image, sc, sh, sw, oy, ox_hi, s.out_w, col);
      gemm_pixels(col, k, nullptr, s.out_w - ox_hi, out + ox_hi * s.out_c);
    }
  };
  if (threads == 1) body(0, rows); else parallel_for(rows, threads, body);
}

void global_avg_pool(int64_t batch, int64_t channels, int64_t hw, const float* input,
                     bool channels_last, float* output, int threads) {
  require(batch >= 0 && channels >= 1 && hw >= 1, "input: sizes must be N >= 0 and C, H, W >= 1");
  require(fits({batch, channels, hw}), "input: size overflows 64-bit indexing");
  const KernelTable& kernels = active_kernels();
  const float inv = 1.0f / float(hw);
  auto body = [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* out = output + n * channels;
      if (channels_last) kernels.pixel_sum(input + n * hw * channels, hw, channels, channels, out);
      else kernels.plane_sum(input + n * channels * hw, channels, hw, out);
      for (int64_t c = 0; c < channels; ++c) out[c] *= inv;
    }
  };
  const int64_t by_size = std::max<int64_t>(1, batch * channels * hw / 65536);
  threads = int(std::max<int64_t>(1, std::min<int64_t>({threads, by_size, batch})));
  if (threads == 1) body(0, batch); else parallel_for(batch, threads, body);
}

}  // namespace mnv3ext
