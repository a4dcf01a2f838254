// Public torch-free entry points of the GEMM family: 1x1 convolutions (pointwise), dense
// convolutions through an im2col band (the stem), fully-connected layers, the global average
// pool and the squeeze-excite gate they are fed with. Sizes are validated here; invalid
// arguments throw std::invalid_argument naming the argument.
#pragma once

#include <cstdint>

#include "kernels/kernels.h"

namespace mnv3ext {

// weight: (n, k) row-major (Conv2d's (Cout, Cin[, kh, kw]) flattened, or Linear's (out, in));
// bias: (n,) or null. packed: packed_gemm_floats(k, n) floats.
void pack_gemm_weights(const float* weight, const float* bias, int64_t k, int64_t n,
                       float* packed);

// Checks the sizes and strides of a GemmArgs (pointers are the caller's).
void check_gemm_args(const GemmArgs& args);

// Runs a checked GEMM on up to `threads` threads (rows or panels split; bit-identical for any
// thread count).
void gemm(const GemmArgs& args, int threads);

ConvShape make_conv_shape(int64_t batch, int64_t in_c, int64_t in_h, int64_t in_w, int64_t out_c,
                          int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h,
                          int dilation_w, int pad_top, int pad_left, int pad_bottom,
                          int pad_right, Activation activation);

// Dense (groups = 1) convolution: input element (n, c, y, x) at
// input[n * in_strides[0] + c * in_strides[1] + y * in_strides[2] + x * in_strides[3]] (any
// layout); output NHWC (N, out_h, out_w, out_c) contiguous. packed: pack_gemm_weights of the
// weight in (out_c, kh, kw, in_c) order (NHWC taps: k = (ky * kw + kx) * in_c + c).
void conv2d_gemm(const ConvShape& shape, const float* input, const int64_t in_strides[4],
                 const float* packed, float* output, int threads);

// output[n, c] = mean over the hw pixels of image n, channel c.
void global_avg_pool(int64_t batch, int64_t channels, int64_t hw, const float* input,
                     bool channels_last, float* output, int threads);

}  // namespace mnv3ext
