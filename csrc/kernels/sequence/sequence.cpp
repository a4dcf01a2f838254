#include "kernels/sequence/sequence.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/require.h"

namespace mnv3ext {
namespace {

int64_t in_floats(const SequenceStep& s) {
  switch (s.kind) {
    case SequenceStep::Kind::kConv: return s.conv.batch * s.conv.in_c * s.conv.in_h * s.conv.in_w;
    case SequenceStep::Kind::kBlock: return s.block.batch * s.block.in_h * s.block.in_w * s.block.config.in_c;
    case SequenceStep::Kind::kGemm: return s.gemm.m * s.gemm.k;
    case SequenceStep::Kind::kPool: return s.pool_batch * s.pool_hw * s.pool_channels;
  }
  return -1;
}

// 64-byte aligned, grown on demand, kept for the thread's life: the next call finds it warm.
float* aligned_buffer(std::vector<float>& v, int64_t floats) {
  if (int64_t(v.size()) < floats + 16) v.resize(floats + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

}  // namespace

SequenceStep conv_step(const ConvShape& shape, const int64_t in_strides[4]) {
  SequenceStep s{};
  s.kind = SequenceStep::Kind::kConv;
  s.conv = shape;
  for (int i = 0; i < 4; ++i) s.conv_strides[i] = in_strides[i];
  s.out_floats = shape.batch * shape.out_h * shape.out_w * shape.out_c;
  s.has_weight = true;
  return s;
}

SequenceStep block_step(const BlockShape& shape) {
  SequenceStep s{};
  s.kind = SequenceStep::Kind::kBlock;
  s.block = shape;
  s.out_floats = shape.batch * shape.out_h * shape.out_w * shape.config.out_c;
  s.has_weight = true;
  return s;
}

SequenceStep gemm_step(int64_t rows, int64_t k, int64_t n, Activation activation) {
  SequenceStep s{};
  s.kind = SequenceStep::Kind::kGemm;
  s.gemm = GemmArgs{rows, k, n, nullptr, k, nullptr, nullptr, n, nullptr, n, nullptr, 1, activation};
  check_gemm_args(s.gemm);
  s.out_floats = rows * n;
  s.has_weight = true;
  return s;
}

SequenceStep pool_step(int64_t batch, int64_t channels, int64_t hw, bool channels_last) {
  require(batch >= 0 && channels >= 1 && hw >= 1, "pool: sizes must be N >= 0 and C, H, W >= 1");
  SequenceStep s{};
  s.kind = SequenceStep::Kind::kPool;
  s.pool_batch = batch;
  s.pool_channels = channels;
  s.pool_hw = hw;
  s.pool_channels_last = channels_last;
  s.out_floats = batch * channels;
  s.has_weight = false;
  return s;
}

void check_sequence(const std::vector<SequenceStep>& steps) {
  require(!steps.empty(), "steps: expected at least one step");
  for (size_t i = 1; i < steps.size(); ++i) {
    const SequenceStep& s = steps[i];
    const std::string where = "steps[" + std::to_string(i) + "]: ";
    if (in_floats(s) != steps[i - 1].out_floats)
      throw std::invalid_argument(where + "reads " + std::to_string(in_floats(s)) +
                                  " floats, the step before writes " +
                                  std::to_string(steps[i - 1].out_floats));
    if (s.kind == SequenceStep::Kind::kConv) {  // every step after the first reads dense NHWC
      const ConvShape& c = s.conv;
      const int64_t nhwc[4] = {c.in_h * c.in_w * c.in_c, 1, c.in_w * c.in_c, c.in_c};
      for (int d = 0; d < 4; ++d)
        if (s.conv_strides[d] != nhwc[d])
          throw std::invalid_argument(where + "a convolution after the first step must read NHWC");
    }
    if (s.kind == SequenceStep::Kind::kPool && !s.pool_channels_last && s.pool_channels != 1 &&
        s.pool_hw != 1)
      throw std::invalid_argument(where + "a pool after the first step must read NHWC");
  }
}

void run_sequence(const std::vector<SequenceStep>& steps, const float* input,
                  const float* const* weights, float* output, int threads, int64_t* step_ns) {
  thread_local std::vector<float> ping, pong;
  int64_t largest = 0;
  for (size_t i = 0; i + 1 < steps.size(); ++i) largest = std::max(largest, steps[i].out_floats);
  float* buffers[2] = {aligned_buffer(ping, largest), aligned_buffer(pong, largest)};
  const float* in = input;
  for (size_t i = 0; i < steps.size(); ++i) {
    const SequenceStep& s = steps[i];
    float* out = i + 1 == steps.size() ? output : buffers[i % 2];
    const float* w = s.has_weight ? *weights++ : nullptr;
    const auto start = step_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    switch (s.kind) {
      case SequenceStep::Kind::kConv: conv2d_gemm(s.conv, in, s.conv_strides, w, out, threads); break;
      case SequenceStep::Kind::kBlock: inverted_residual(s.block, in, w, out, threads); break;
      case SequenceStep::Kind::kGemm: {
        GemmArgs g = s.gemm;
        g.a = in;
        g.packed = w;
        g.c = out;
        gemm(g, threads);
        break;
      }
      case SequenceStep::Kind::kPool:
        global_avg_pool(s.pool_batch, s.pool_channels, s.pool_hw, in, s.pool_channels_last, out,
                        threads);
        break;
    }
    if (step_ns)
      step_ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now() - start).count();
    in = out;
  }
}

}  // namespace mnv3ext
