// Torch-free kernel interface: raw float32 pointers, int64 sizes.
// Every ISA file implements the same single-threaded range functions; the driver
// (driver.cpp) validates, partitions work over threads and calls the table chosen
// once at load (dispatch.cpp).
#pragma once

#include <cstdint>

namespace mnv3ext {

// Shared by the depthwise epilogue and the SE FC layers / gate.
enum class Activation : int {
  kNone = 0,
  kRelu = 1,
  kRelu6 = 2,
  kHardswish = 3,
  kHardsigmoid = 4,
  kSigmoid = 5,
};

// Packed depthwise weights are ISA-independent so a saved model loads on any CPU:
// (1 + kh*kw) rows of padded_channels(C) floats: row 0 = bias, row 1 + ky*kw + kx =
// tap (ky, kx) for every channel; padding lanes are zero. 16 covers AVX-512 lanes
// and is a multiple of the AVX2 (8) and NEON (4) widths.
constexpr int64_t kChannelAlign = 16;
inline int64_t padded_channels(int64_t channels) {
  return (channels + kChannelAlign - 1) / kChannelAlign * kChannelAlign;
}
inline int64_t packed_dwconv_floats(int64_t channels, int kernel_h, int kernel_w) {
  return (1 + int64_t(kernel_h) * kernel_w) * padded_channels(channels);
}

struct DwConvShape {
  int64_t batch, channels, in_h, in_w, out_h, out_w;
  int kernel_h, kernel_w;
  int stride_h, stride_w;
  int dilation_h, dilation_w;
  int pad_top, pad_left;  // bottom/right padding is implied by out_h/out_w
  Activation activation;   // kNone, kRelu, kRelu6 or kHardswish
  // NHWC rows only: just channels [channel_begin, channel_end) are computed and written (the
  // pixel stride stays `channels`), so threads can split a layer by channels; end < 0 = all.
  // channel_begin must be a multiple of kChannelAlign: the kernels read whole vectors of the
  // packed rows from there on, which end at a multiple of it.
  int64_t channel_begin = 0, channel_end = -1;
  int64_t channel_stop() const { return channel_end < 0 ? channels : channel_end; }
};

// Output rows [row_begin, row_end) of an NHWC conv; row index = n * out_h + oy.
using DwConvNhwcRowsFn = void (*)(const DwConvShape&, const float* input, const float* packed,
                                  float* output, int64_t row_begin, int64_t row_end);
// Planes [plane_begin, plane_end) of an NCHW conv; plane index = n * channels + c.
using DwConvNchwPlanesFn = void (*)(const DwConvShape&, const float* input, const float* packed,
                                    float* output, int64_t plane_begin, int64_t plane_end);
// sums[p] = sum of the hw floats of plane p, for planes [0, planes).
using PlaneSumFn = void (*)(const float* input, int64_t planes, int64_t hw, float* sums);
// sums[c] = sum over pixels of input[pixel * stride + c], for c in [0, count); pixels in order.
using PixelSumFn = void (*)(const float* input, int64_t pixels, int64_t stride, int64_t count,
                            float* sums);
// y[r] = b[r] + dot(W[r, :], x) for r in [0, rows); W row-major rows x cols; b may be null.
using MatVecFn = void (*)(const float* weight, const float* bias, const float* x, int64_t rows,
                          int64_t cols, float* y);
// output[p, i] = input[p, i] * gate[p] for planes [0, planes) of hw floats.
using ScalePlanesFn = void (*)(const float* input, const float* gate, float* output,
                               int64_t planes, int64_t hw);
// output[pixel, c] = input[pixel, c] * gate[c] for pixels [0, pixels), channels [0, channels).
using ScalePixelsFn = void (*)(const float* input, const float* gate, float* output,
                               int64_t pixels, int64_t channels);

// Pointwise (1x1) convolution as a GEMM on NHWC rows: C[m, n] = act(bias[n] + sum_k A'[m, k] *
// W[k, n]) (+ R[m, n]), A'[m, k] = A[m, k] * scale[m / scale_rows, k] when scale is given (the SE
// gate folded into the next 1x1). Weights are packed once, ISA-independently, in panels of
// kGemmPanel output channels: panel p = [bias (16) | K rows of 16 weights], padding lanes zero.
constexpr int64_t kGemmPanel = 16;
inline int64_t gemm_panels(int64_t n) { return (n + kGemmPanel - 1) / kGemmPanel; }
inline int64_t packed_gemm_floats(int64_t k, int64_t n) {
  return gemm_panels(n) * (1 + k) * kGemmPanel;
}

struct GemmArgs {
  int64_t m, k, n;
  const float* a;
  int64_t lda;             // A[i, kk] = a[i * lda + kk]
  const float* packed;     // packed_gemm_floats(k, n) floats
  float* c;
  int64_t ldc;             // C[i, j] = c[i * ldc + j]
  const float* residual;   // null, or R[i, j] = residual[i * ldr + j], added after the activation
  int64_t ldr;
  const float* scale;      // null, or (m / scale_rows + 1, k) row-major
  int64_t scale_rows;
  Activation activation;   // kNone, kRelu, kRelu6 or kHardswish
  // null, or A[i, kk] = a[i * lda + a_offsets[kk]] instead (a convolution's taps read in place);
  // not with scale.
  const int64_t* a_offsets = nullptr;
  // With scale: multiply the weights by it (a scaled copy of the packed weights per scale row)
  // instead of A's rows: fewer products when the weights are smaller than A's rows per scale
  // row. Rounds differently: A * (W * s) rather than (A * s) * W.
  bool scale_weights = false;
};

// Rows [row_begin, row_end) x panels [panel_begin, panel_end) of a GEMM. Every element is
// bias + its k products, one rounding per FMA, in an order fixed by the ISA, n and k alone (k
// order; AVX-512's narrow tiles sum even and odd k apart), whatever the tiling: results do not
// depend on how the caller splits rows and panels.
using GemmTilesFn = void (*)(const GemmArgs&, int64_t row_begin, int64_t row_end,
                             int64_t panel_begin, int64_t panel_end);

// A dense (groups = 1) convolution; bottom/right padding is implied by out_h/out_w.
struct ConvShape {
  int64_t batch, in_c, in_h, in_w, out_c, out_h, out_w;
  int kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  Activation activation;  // kNone, kRelu, kRelu6 or kHardswish
};

// A stem-shaped convolution read directly, without im2col or a GEMM: 3x3, stride 2, dilation 1,
// at most kStemMaxInC input and kGemmPanel output channels, input channel c of pixel (y, x) of
// image n at input[n * strides[0] + c * strides[1] + y * strides[2] + x] (unit x stride: NCHW
// rows). Output rows [row_begin, row_end) (row = n * out_h + oy), NHWC (N, out_h, out_w, out_c)
// contiguous. packed: pack_gemm_weights of the weight in (out_c, kh, kw, in_c) order. Null in an
// ISA without one (conv2d_gemm's GEMM path runs such convolutions there).
constexpr int64_t kStemMaxInC = 4;
using StemRowsFn = void (*)(const ConvShape& shape, const float* input, const int64_t strides[4],
                            const float* packed, float* output, int64_t row_begin, int64_t row_end);

struct KernelTable {
  const char* name;
  DwConvNhwcRowsFn dwconv_nhwc_rows;
  DwConvNchwPlanesFn dwconv_nchw_planes;
  PlaneSumFn plane_sum;
  PixelSumFn pixel_sum;
  MatVecFn matvec;
  ScalePlanesFn scale_planes;
  ScalePixelsFn scale_pixels;
  GemmTilesFn gemm_tiles;
  const char* gemm_tile_name;  // the main microkernel, e.g. "gemm_12x32" (rows x columns)
  StemRowsFn stem_rows;        // null: no direct stem kernel
};

// A per-thread buffer of at least `floats` floats, valid until the thread's next call.
// Lives in baseline code: ISA files must not instantiate STL containers themselves, or the
// linker may pick their AVX-512 copy of a shared template for baseline callers.
float* thread_scratch(int64_t floats);

// Each ISA implements these in its own translation units (dwconv_<isa>.cpp, se_<isa>.cpp),
// compiled with that ISA's flags; dispatch.cpp gathers them into KernelTables.
#define MNV3EXT_DECLARE_ISA_KERNELS(isa)                                                     \
  namespace isa {                                                                            \
  void dwconv_nhwc_rows(const DwConvShape&, const float*, const float*, float*, int64_t,     \
                        int64_t);                                                            \
  void dwconv_nchw_planes(const DwConvShape&, const float*, const float*, float*, int64_t,   \
                          int64_t);                                                          \
  void plane_sum(const float*, int64_t, int64_t, float*);                                    \
  void pixel_sum(const float*, int64_t, int64_t, int64_t, float*);                           \
  void matvec(const float*, const float*, const float*, int64_t, int64_t, float*);           \
  void scale_planes(const float*, const float*, float*, int64_t, int64_t);                   \
  void scale_pixels(const float*, const float*, float*, int64_t, int64_t);                   \
  void gemm_tiles(const GemmArgs&, int64_t, int64_t, int64_t, int64_t);                      \
  extern const char* const gemm_tile_name;                                                   \
  extern const StemRowsFn stem_rows;                                                         \
  }

MNV3EXT_DECLARE_ISA_KERNELS(scalar)
#if defined(__x86_64__) || defined(_M_X64)
MNV3EXT_DECLARE_ISA_KERNELS(avx2)
MNV3EXT_DECLARE_ISA_KERNELS(avx512)
#endif
#if defined(__aarch64__)
MNV3EXT_DECLARE_ISA_KERNELS(neon)
#endif

}  // namespace mnv3ext
