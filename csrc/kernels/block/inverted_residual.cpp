#include "kernels/block/inverted_residual.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/require.h"
#include "kernels/gemm/pointwise.h"
#include "kernels/thread_pool.h"

namespace mnv3ext {
namespace {

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

bool gemm_activation(Activation a) { return a >= Activation::kNone && a <= Activation::kHardswish; }

// The band buffers of one thread stay within this many bytes (L2 holds them); a whole image
// goes in one band when it needs at most kWholeImageBytes: every band reads all the block's
// weights again, which costs more than a buffer partly spilled to L3 on the small-image blocks.
constexpr int64_t kBandBytes = 384 * 1024;
constexpr int64_t kWholeImageBytes = 768 * 1024;
// Below this many multiply-adds per thread, waking a worker costs more than it saves.
constexpr int64_t kMinMacsPerThread = 400000;
// A squeeze-excite block split over threads by channels needs this many 16-channel tiles per
// thread: with fewer, each thread's narrower expand GEMM costs more than the fork-joins saved.
constexpr int64_t kMinChannelTilesPerThread = 16;
static_assert(kGemmPanel % kChannelAlign == 0, "a channel tile must start where the depthwise kernels can");

struct Scratch {
  std::vector<float> expanded, depthwise;
};

Scratch& thread_buffers() {
  thread_local Scratch scratch;
  return scratch;
}

float* grow(std::vector<float>& v, int64_t floats) {
  if (int64_t(v.size()) < floats) v.resize(floats);
  return v.data();
}

struct Geometry {
  const BlockShape& b;
  int64_t in_rows_per_band(int64_t out_rows) const {
    return (out_rows - 1) * b.config.stride + int64_t(b.config.kernel_h - 1) * b.config.dilation + 1;
  }
  // Bytes of one band's buffers: expanded input rows, and the depthwise rows unless they go
  // to the SE's whole-image buffer.
  int64_t band_bytes(int64_t rows) const {
    const BlockConfig& c = b.config;
    const int64_t in_rows = std::min(b.in_h, in_rows_per_band(rows));
    return (c.has_expand ? in_rows * b.in_w * c.exp_c * 4 : 0) +
           (c.se_squeeze ? 0 : rows * b.out_w * c.exp_c * 4);
  }
  // Output rows per band.
  int64_t band_rows() const {
    if (band_bytes(b.out_h) <= kWholeImageBytes) return b.out_h;
    int64_t rows = 1;
    while (rows < b.out_h && band_bytes(rows + 1) <= kBandBytes) ++rows;
    return rows;
  }
};

// The 1x1 expand (+ bias + activation) of input pixels [pixel, pixel + pixels) of `image`
// (NHWC) into `out` (pixels x exp_c): the output channels of panels [panel_begin, panel_end).
void expand_panels(const BlockShape& b, const BlockLayout& lay, const float* image, const float* packed,
                   int64_t pixel, int64_t pixels, float* out, int64_t panel_begin, int64_t panel_end) {
  const BlockConfig& c = b.config;
  const GemmArgs g{pixels, c.in_c, c.exp_c, image + pixel * c.in_c, c.in_c, packed + lay.expand,
                   out, c.exp_c, nullptr, 0, nullptr, 1, c.expand_act};
  active_kernels().gemm_tiles(g, 0, g.m, panel_begin, panel_end);
}

// ... all output channels.
void expand_pixels(const BlockShape& b, const BlockLayout& lay, const float* image, const float* packed,
                   int64_t pixel, int64_t pixels, float* out) {
  expand_panels(b, lay, image, packed, pixel, pixels, out, 0, gemm_panels(b.config.exp_c));
}

// Threads worth waking for `tasks` tasks of `macs` multiply-adds in all: at most `threads`, at
// most one per task, and none with fewer than kMinMacsPerThread.
int threads_for_work(int threads, int64_t tasks, int64_t macs) {
  return int(std::max<int64_t>(1, std::min<int64_t>({threads, tasks, macs / kMinMacsPerThread})));
}

// Output rows [row_begin, row_end) of image n (no SE: all three layers; with SE: expand +
// depthwise into dw_image, the image's whole depthwise output).
void run_rows(const BlockShape& b, const BlockLayout& lay, const float* input, const float* packed,
              float* output, int64_t n, int64_t row_begin, int64_t row_end, float* dw_image) {
  const KernelTable& kernels = active_kernels();
  const BlockConfig& c = b.config;
  const int64_t H = b.in_h, W = b.in_w, OW = b.out_w, E = c.exp_c;
  const int64_t band = Geometry{b}.band_rows();
  Scratch& scratch = thread_buffers();
  const int64_t max_in_rows = std::min(H, Geometry{b}.in_rows_per_band(band));
  float* expanded = c.has_expand ? grow(scratch.expanded, max_in_rows * W * E) : nullptr;
  float* dw_band = dw_image ? nullptr : grow(scratch.depthwise, band * OW * E);
  const float* image = input + n * H * W * c.in_c;
  int64_t have_lo = 0, have_hi = -1;  // expanded rows [have_lo, have_hi] are in `expanded`
  for (int64_t oy0 = row_begin; oy0 < row_end; oy0 += band) {
    const int64_t oy1 = std::min(row_end, oy0 + band);
    const int64_t first = oy0 * c.stride - c.pad_top;
    const int64_t last = (oy1 - 1) * c.stride - c.pad_top + int64_t(c.kernel_h - 1) * c.dilation;
    const int64_t lo = std::max<int64_t>(0, first), hi = std::min(H - 1, last);
    const float* dw_in;
    if (c.has_expand) {
      int64_t next = lo;  // first row still to compute
      if (hi >= lo && have_hi >= lo && have_lo <= lo) {  // rows of the previous band: move them up
        const int64_t keep = std::min(have_hi, hi) - lo + 1;
        std::memmove(expanded, expanded + (lo - have_lo) * W * E, size_t(keep * W * E) * sizeof(float));
        next = lo + keep;
      }
      if (next <= hi)
        expand_pixels(b, lay, image, packed, next * W, (hi - next + 1) * W, expanded + (next - lo) * W * E);
      have_lo = lo;
      have_hi = hi;
      dw_in = expanded;
    } else {
      dw_in = image + std::min(lo, H - 1) * W * E;
    }
    // The depthwise conv of output rows [oy0, oy1) on input rows [lo, hi]: a local image whose
    // top padding places output row 0 at oy0.
    DwConvShape s{1, E, std::max<int64_t>(0, hi - lo + 1), W, oy1 - oy0, OW, c.kernel_h, c.kernel_w,
                  c.stride, c.stride, c.dilation, c.dilation, int(lo - first), c.pad_left, c.dw_act};
    float* dw_out = dw_image ? dw_image + oy0 * OW * E : dw_band;
    kernels.dwconv_nhwc_rows(s, dw_in, packed + lay.dw, dw_out, 0, oy1 - oy0);
    if (dw_image) continue;
    const int64_t pixels = (oy1 - oy0) * OW;
    const int64_t out_offset = (n * b.out_h + oy0) * OW;
    const GemmArgs g{pixels, E, c.out_c, dw_out, E, packed + lay.project,
                     output + out_offset * c.out_c, c.out_c,
                     c.has_residual ? input + out_offset * c.in_c : nullptr, c.in_c, nullptr, 1,
                     c.project_act};
    kernels.gemm_tiles(g, 0, pixels, 0, gemm_panels(c.out_c));
  }
}

}  // namespace

void check_block_config(const BlockConfig& c) {
  require(c.in_c >= 1 && c.exp_c >= 1 && c.out_c >= 1, "config: channel counts must be >= 1");
  require(c.has_expand || c.exp_c == c.in_c, "config: without expand, expanded channels must equal input channels");
  require(c.kernel_h >= 1 && c.kernel_h <= 7 && c.kernel_w >= 1 && c.kernel_w <= 7,
          "config: kernel size must be between 1 and 7");
  require(c.stride >= 1 && c.stride <= 8, "config: stride must be between 1 and 8");
  require(c.dilation >= 1 && c.dilation <= 8, "config: dilation must be between 1 and 8");
  require(c.pad_top >= 0 && c.pad_left >= 0 && c.pad_bottom >= 0 && c.pad_right >= 0,
          "config: padding must be >= 0");
  require(!c.has_expand || gemm_activation(c.expand_act), "config: unsupported expand activation");
  require(gemm_activation(c.dw_act), "config: unsupported depthwise activation");
  require(gemm_activation(c.project_act), "config: unsupported project activation");
  require(c.se_squeeze >= 0, "config: squeeze channels must be >= 0");
  require(c.se_squeeze == 0 || ((c.se_act == Activation::kRelu || c.se_act == Activation::kHardswish) &&
                                (c.se_gate == Activation::kHardsigmoid || c.se_gate == Activation::kSigmoid)),
          "config: unsupported squeeze-excite activation or gate");
  require(!c.has_residual || (c.stride == 1 && c.in_c == c.out_c),
          "config: a residual needs stride 1 and as many output as input channels");
  const int64_t big = int64_t(1) << 40;
  require(c.in_c < big && c.exp_c < big && c.out_c < big && c.se_squeeze < big,
          "config: channel counts too large");
}

BlockLayout block_layout(const BlockConfig& c) {
  BlockLayout l{};
  int64_t at = 0;
  l.expand = at;
  if (c.has_expand) at += packed_gemm_floats(c.in_c, c.exp_c);
  l.dw = at;
  at += packed_dwconv_floats(c.exp_c, c.kernel_h, c.kernel_w);
  const int64_t S = c.se_squeeze, E = c.exp_c;
  l.se_fc1 = at;
  if (S) at += round16(S * E);
  l.se_b1 = at;
  if (S) at += round16(S);
  l.se_fc2 = at;
  if (S) at += round16(E * S);
  l.se_b2 = at;
  if (S) at += round16(E);
  l.project = at;
  at += packed_gemm_floats(c.exp_c, c.out_c);
  l.total = at;
  return l;
}

BlockShape make_block_shape(const BlockConfig& c, int64_t batch, int64_t in_h, int64_t in_w) {
  check_block_config(c);
  require(batch >= 0 && in_h >= 1 && in_w >= 1, "input: sizes must be N >= 0 and H, W >= 1");
  const int64_t span_h = int64_t(c.dilation) * (c.kernel_h - 1) + 1, span_w = int64_t(c.dilation) * (c.kernel_w - 1) + 1;
  require(in_h + c.pad_top + c.pad_bottom >= span_h && in_w + c.pad_left + c.pad_right >= span_w,
          "input: padded input is smaller than the dilated kernel (output would be empty)");
  const int64_t out_h = (in_h + c.pad_top + c.pad_bottom - span_h) / c.stride + 1;
  const int64_t out_w = (in_w + c.pad_left + c.pad_right - span_w) / c.stride + 1;
  require(!c.has_residual || (out_h == in_h && out_w == in_w),
          "config: a residual needs the output size to equal the input size");
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8;
  const int64_t widest = std::max({c.in_c, c.exp_c, c.out_c});
  require(in_h < limit / std::max<int64_t>(1, in_w) &&
              in_h * in_w < limit / widest / std::max<int64_t>(1, batch),
          "input: size overflows 64-bit indexing");
  return BlockShape{c, batch, in_h, in_w, out_h, out_w};
}

void inverted_residual(const BlockShape& b, const float* input, const float* packed, float* output,
                       int threads) {
  const BlockConfig& c = b.config;
  if (b.batch == 0) return;
  const BlockLayout lay = block_layout(c);
  const int64_t OH = b.out_h, OW = b.out_w;
  const int64_t macs_per_row = OW * c.exp_c * (c.out_c + int64_t(c.kernel_h) * c.kernel_w) +
                               (c.has_expand ? b.in_w * c.stride * c.in_c * c.exp_c : 0);
  const auto threads_for = [&](int64_t rows) { return threads_for_work(threads, rows, rows * macs_per_row); };
  if (c.se_squeeze == 0) {
    // Rows of all images, split in contiguous ranges; bands never cross an image.
    const int64_t rows = b.batch * OH;
    auto body = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1;) {
        const int64_t n = r / OH, end = std::min(r1, (n + 1) * OH);
        run_rows(b, lay, input, packed, output, n, r - n * OH, end - n * OH, nullptr);
        r = end;
      }
    };
    const int t = threads_for(rows);
    if (t == 1) body(0, rows); else parallel_for(rows, t, body);
    return;
  }
  // Squeeze-excite: per image, the depthwise output in the calling thread's buffer (shared by
  // the workers of this call), the gate, then the projection with the gate as input scale.
  thread_local std::vector<float> dw_image_buffer, gate_buffer, expanded_buffer, sums_buffer;
  float* dw_image = grow(dw_image_buffer, OH * OW * c.exp_c);
  float* gates = grow(gate_buffer, c.exp_c);
  const SeShape se{1, c.exp_c, OH * OW, c.se_squeeze, c.se_act, c.se_gate};
  const int64_t H = b.in_h, W = b.in_w, E = c.exp_c, channel_tiles = gemm_panels(E);
  const int t = threads_for(OH);
  // How the threads share an image's expand + depthwise pass:
  // - bands of rows (run_rows), the way for large images;
  // - when the whole image is one band anyway, bands would each expand their kernel-height
  //   halo again (a 7x7 image in two bands with a 5x5 kernel: 11 expanded rows for 7), so:
  //   - with many channels, by channel tiles: each thread expands its channels of every pixel,
  //     runs their depthwise conv and sums them for the gate; nothing crosses between the
  //     threads before the projection, in one fork-join instead of three;
  //   - otherwise the expand split by pixels into a shared buffer, then the depthwise rows.
  //     (With fewer channel tiles per thread, the split by channels' narrower expand GEMMs cost
  //     more than the fork-joins saved; a depthwise pass alone split by channels after the
  //     pixel-split expand read half its input from the other core and was slower.)
  const bool one_band = c.has_expand && t > 1 && Geometry{b}.band_rows() == OH;
  const bool by_channels = one_band && channel_tiles >= kMinChannelTilesPerThread * t;
  const bool expand_first = one_band && !by_channels;
  float* expanded = one_band ? grow(expanded_buffer, H * W * E) : nullptr;
  float* sums = by_channels ? grow(sums_buffer, E + c.se_squeeze) : nullptr;  // + fc1 outputs
  const int expand_threads = threads_for_work(threads, H * W, H * W * c.in_c * E);
  const DwConvShape whole{1, E, H, W, OH, OW, c.kernel_h, c.kernel_w, c.stride, c.stride,
                          c.dilation, c.dilation, c.pad_top, c.pad_left, c.dw_act};
  for (int64_t n = 0; n < b.batch; ++n) {
    const float* image = input + n * H * W * c.in_c;
    if (by_channels) {
      parallel_for(channel_tiles, t, [&](int64_t t0, int64_t t1) {
        const KernelTable& kernels = active_kernels();
        expand_panels(b, lay, image, packed, 0, H * W, expanded, t0, t1);
        DwConvShape part = whole;
        part.channel_begin = t0 * kGemmPanel;
        part.channel_end = std::min(E, t1 * kGemmPanel);
        kernels.dwconv_nhwc_rows(part, expanded, packed + lay.dw, dw_image, 0, OH);
        kernels.pixel_sum(dw_image + part.channel_begin, OH * OW, E, part.channel_end - part.channel_begin,
                          sums + part.channel_begin);
      });
      se_gates_from_sums(se, sums, sums + E, packed + lay.se_fc1, packed + lay.se_b1, packed + lay.se_fc2,
                         packed + lay.se_b2, gates, threads);
    } else {
      if (expand_first) {
        auto expand = [&](int64_t p0, int64_t p1) {
          expand_pixels(b, lay, image, packed, p0, p1 - p0, expanded + p0 * E);
        };
        if (expand_threads == 1) expand(0, H * W); else parallel_for(H * W, expand_threads, expand);
        parallel_for(OH, t, [&](int64_t r0, int64_t r1) {
          active_kernels().dwconv_nhwc_rows(whole, expanded, packed + lay.dw, dw_image, r0, r1);
        });
      } else {
        auto body = [&](int64_t r0, int64_t r1) { run_rows(b, lay, input, packed, output, n, r0, r1, dw_image); };
        if (t == 1) body(0, OH); else parallel_for(OH, t, body);
      }
      se_gates(se, dw_image, packed + lay.se_fc1, packed + lay.se_b1, packed + lay.se_fc2, packed + lay.se_b2,
               gates, true, threads);
    }
    const int64_t pixels = OH * OW;
    GemmArgs g{pixels, c.exp_c, c.out_c, dw_image, c.exp_c, packed + lay.project,
               output + n * pixels * c.out_c, c.out_c,
               c.has_residual ? input + n * pixels * c.in_c : nullptr, c.in_c, gates, pixels,
               c.project_act};
    // The gate goes into whichever is smaller: the image's depthwise output or the weights.
    g.scale_weights = gemm_panels(c.out_c) * kGemmPanel < pixels;
    gemm(g, threads);
  }
}

}  // namespace mnv3ext
