// Public torch-free entry points: validate sizes, split work over threads, call the
// active ISA's kernels. Invalid arguments throw std::invalid_argument naming the argument.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace mnv3ext {

// Output size of one spatial dimension, or a negative/zero value when padding is too small.
int64_t conv_out_size(int64_t in, int kernel, int stride, int dilation, int pad_begin,
                      int pad_end);

// Fills a DwConvShape from its inputs and checks every field.
DwConvShape make_dwconv_shape(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                              int kernel_h, int kernel_w, int stride_h, int stride_w,
                              int dilation_h, int dilation_w, int pad_top, int pad_left,
                              int pad_bottom, int pad_right, Activation activation);

// weight: (C, kh, kw) contiguous as nn.Conv2d's (C, 1, kh, kw); bias: (C,) or null.
// packed: packed_dwconv_floats(C, kh, kw) floats.
void pack_dwconv_weights(const float* weight, const float* bias, int64_t channels, int kernel_h,
                         int kernel_w, float* packed);

void dwconv2d(const DwConvShape& shape, const float* input, const float* packed, float* output,
              bool channels_last, int threads);

struct SeShape {
  int64_t batch, channels, hw, squeeze;
  Activation activation;  // kRelu or kHardswish
  Activation gate;        // kHardsigmoid or kSigmoid
};

SeShape make_se_shape(int64_t batch, int64_t channels, int64_t hw, int64_t squeeze,
                      Activation activation, Activation gate);

// gates: (N, C) = gate(fc2(act(fc1(mean_hw(input))))), the squeeze-excite without the multiply
// (which the following 1x1 convolution applies to its input: gemm's scale).
void se_gates(const SeShape& shape, const float* input, const float* fc1_weight,
              const float* fc1_bias, const float* fc2_weight, const float* fc2_bias, float* gates,
              bool channels_last, int threads);

// se_gates from the per-channel sums over the pixels, (N, C) (turned into the means in place);
// hidden: S floats of scratch.
void se_gates_from_sums(const SeShape& shape, float* sums, float* hidden, const float* fc1_weight,
                        const float* fc1_bias, const float* fc2_weight, const float* fc2_bias,
                        float* gates, int threads);

// fc1: (S, C) + (S,) or null; fc2: (C, S) + (C,) or null; all row-major contiguous.
void squeeze_excite(const SeShape& shape, const float* input, const float* fc1_weight,
                    const float* fc1_bias, const float* fc2_weight, const float* fc2_bias,
                    float* output, bool channels_last, int threads);

}  // namespace mnv3ext
