// A chain of layers run in one call, each reading the previous one's output: the stem, blocks,
// 1x1 convolutions, the global pool and fully-connected layers of a MobileNetV3 as one op. Per
// layer the same kernels run as for the single ops (identical results); what goes is the cost
// between them: one call from Python instead of one per layer, and the intermediates live in a
// per-thread pair of buffers reused across calls (warm in cache, no allocator).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/block/inverted_residual.h"
#include "kernels/gemm/pointwise.h"
#include "kernels/kernels.h"

namespace mnv3ext {

struct SequenceStep {
  enum class Kind { kConv, kBlock, kGemm, kPool };
  Kind kind;
  ConvShape conv;             // kConv: reads its input through conv_strides, writes NHWC
  int64_t conv_strides[4];
  BlockShape block;           // kBlock: NHWC in and out
  GemmArgs gemm;              // kGemm: rows x k -> rows x n (1x1 conv on NHWC pixels, linear); sizes only
  int64_t pool_batch, pool_channels, pool_hw;  // kPool: -> (N, C)
  bool pool_channels_last;    // kPool: NHWC input (NCHW: the first step, or one channel or pixel)
  int64_t out_floats;         // output size
  bool has_weight;            // takes the next of the call's weights
};

SequenceStep conv_step(const ConvShape& shape, const int64_t in_strides[4]);
SequenceStep block_step(const BlockShape& shape);
SequenceStep gemm_step(int64_t rows, int64_t k, int64_t n, Activation activation);
SequenceStep pool_step(int64_t batch, int64_t channels, int64_t hw, bool channels_last);

// Checks that each step reads what the one before writes (sizes only); throws
// std::invalid_argument naming the step.
void check_sequence(const std::vector<SequenceStep>& steps);

// weights: one packed weight per step with has_weight, in order. output: the last step's
// out_floats. Intermediates go to the calling thread's buffers. step_ns: null, or one slot per
// step that receives the step's wall time in nanoseconds (in-model per-layer times).
void run_sequence(const std::vector<SequenceStep>& steps, const float* input,
                  const float* const* weights, float* output, int threads,
                  int64_t* step_ns = nullptr);

}  // namespace mnv3ext
