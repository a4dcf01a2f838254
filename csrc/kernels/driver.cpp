#include "driver.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "activation.h"
#include "dispatch.h"
#include "require.h"
#include "thread_pool.h"

namespace mnv3ext {
namespace {

// Split a call only if each thread gets at least this many floats touched (input + output):
// about 2-3 us of depthwise work on one core. A hand-off to a polling worker costs ~0.1 us,
// but waking a blocked one costs the caller a system call (2-4 us on a VM), and the caller
// takes back any chunk no worker has claimed, so a split call never waits for a worker to wake:
// at this size a split never loses more than that system call. Smaller calls (tiny images,
// tests) stay on the calling thread.
constexpr int64_t kMinFloatsPerThread = 16384;

int threads_for(int64_t floats, int threads, int64_t tasks) {
  const int64_t by_size = std::max<int64_t>(1, floats / kMinFloatsPerThread);
  return int(std::max<int64_t>(1, std::min<int64_t>({threads, by_size, tasks})));
}

// Guards products of sizes against int64 overflow before anything is indexed.
int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t product = 1;
  for (int64_t f : factors) {
    require(f >= 0, std::string(what) + ": negative size");
    require(f == 0 || product <= std::numeric_limits<int64_t>::max() / 4 / f,
            std::string(what) + ": size overflows 64-bit indexing");
    product *= f;
  }
  return product;
}

}  // namespace

float* thread_scratch(int64_t floats) {
  // Cache-line aligned: a 64-byte vector load that straddles two lines costs two loads, which
  // halves the throughput of kernels that feed every FMA from this buffer.
  constexpr int64_t kAlignFloats = 16;
  thread_local std::vector<float> buffer;
  if (int64_t(buffer.size()) < floats + kAlignFloats) buffer.resize(floats + kAlignFloats);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - address % 64) % 64) / sizeof(float);
}

int64_t conv_out_size(int64_t in, int kernel, int stride, int dilation, int pad_begin,
                      int pad_end) {
  return (in + pad_begin + pad_end - int64_t(dilation) * (kernel - 1) - 1) / stride + 1;
}

DwConvShape make_dwconv_shape(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                              int kernel_h, int kernel_w, int stride_h, int stride_w,
                              int dilation_h, int dilation_w, int pad_top, int pad_left,
                              int pad_bottom, int pad_right, Activation activation) {
  require(batch >= 0 && channels >= 1 && in_h >= 1 && in_w >= 1,
          "input: sizes must be N >= 0 and C, H, W >= 1");
  require(kernel_h >= 1 && kernel_h <= 7 && kernel_w >= 1 && kernel_w <= 7,
          "weight: kernel size must be between 1 and 7");
  require(stride_h >= 1 && stride_w >= 1, "stride: values must be >= 1");
  require(dilation_h >= 1 && dilation_w >= 1, "dilation: values must be >= 1");
  require(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0,
          "padding: values must be >= 0");
  require(activation >= Activation::kNone && activation <= Activation::kHardswish,
          "activation: must be none, relu, relu6 or hardswish");
  const int64_t out_h = conv_out_size(in_h, kernel_h, stride_h, dilation_h, pad_top, pad_bottom);
  const int64_t out_w = conv_out_size(in_w, kernel_w, stride_w, dilation_w, pad_left, pad_right);
  require(in_h + pad_top + pad_bottom >= int64_t(dilation_h) * (kernel_h - 1) + 1 &&
              in_w + pad_left + pad_right >= int64_t(dilation_w) * (kernel_w - 1) + 1,
          "input: padded input is smaller than the dilated kernel (output would be empty)");
  checked_product({batch, channels, in_h, in_w}, "input");
  checked_product({batch, channels, in_h + pad_top + pad_bottom, in_w + pad_left + pad_right},
                  "padding");
  checked_product({batch, channels, out_h, out_w}, "output");
  return DwConvShape{batch,    channels, in_h,       in_w,       out_h,   out_w,
                     kernel_h, kernel_w, stride_h,   stride_w,   dilation_h, dilation_w,
                     pad_top,  pad_left, activation};
}

void pack_dwconv_weights(const float* weight, const float* bias, int64_t channels, int kernel_h,
                         int kernel_w, float* packed) {
  const int64_t padded = padded_channels(channels), taps = int64_t(kernel_h) * kernel_w;
  std::fill(packed, packed + packed_dwconv_floats(channels, kernel_h, kernel_w), 0.0f);
  for (int64_t c = 0; c < channels; ++c) {
    packed[c] = bias ? bias[c] : 0.0f;
    for (int64_t t = 0; t < taps; ++t) packed[(1 + t) * padded + c] = weight[c * taps + t];
  }
}

void dwconv2d(const DwConvShape& s, const float* input, const float* packed, float* output,
              bool channels_last, int threads) {
  const KernelTable& kernels = active_kernels();
  const int64_t floats = s.batch * s.channels * (s.in_h * s.in_w + s.out_h * s.out_w);
  if (channels_last) {
    const int64_t rows = s.batch * s.out_h;
    parallel_for(rows, threads_for(floats, threads, rows), [&](int64_t begin, int64_t end) {
      kernels.dwconv_nhwc_rows(s, input, packed, output, begin, end);
    });
  } else {
    const int64_t planes = s.batch * s.channels;
    parallel_for(planes, threads_for(floats, threads, planes), [&](int64_t begin, int64_t end) {
      kernels.dwconv_nchw_planes(s, input, packed, output, begin, end);
    });
  }
}

SeShape make_se_shape(int64_t batch, int64_t channels, int64_t hw, int64_t squeeze,
                      Activation activation, Activation gate) {
  require(batch >= 0 && channels >= 1 && hw >= 1, "input: sizes must be N >= 0 and C, H, W >= 1");
  require(squeeze >= 1, "fc1_weight: squeeze channels must be >= 1");
  require(activation == Activation::kRelu || activation == Activation::kHardswish,
          "activation: must be relu or hardswish");
  require(gate == Activation::kHardsigmoid || gate == Activation::kSigmoid,
          "gate: must be hardsigmoid or sigmoid");
  checked_product({batch, channels, hw}, "input");
  checked_product({channels, squeeze}, "fc1_weight");
  return SeShape{batch, channels, hw, squeeze, activation, gate};
}

namespace {

// Fixed work unit of the SE phases: 16 planes, channels or FC rows. Kernel calls always start
// on a block boundary, so a kernel that groups rows by any divisor of 16 groups them the
// same way for every thread count.
constexpr int64_t kSeBlock = 16;
// The FC layers only use the pool when each thread gets at least this many weights (64 KiB,
// ~1-2 us from L2). They run between the sum and scale phases, right after a split, so the
// workers are still polling and the hand-off costs ~0.1 us.
constexpr int64_t kMinFcWeightsPerThread = 16384;

// Per calling thread; separate from thread_scratch() so ISA kernels may use that freely.
float* se_buffer(int64_t floats) {
  thread_local std::vector<float> buffer;
  if (int64_t(buffer.size()) < floats) buffer.resize(floats);
  return buffer.data();
}

void activate(Activation activation, float* values, int64_t count) {
  // One loop per activation so each can be vectorised.
  switch (activation) {
    case Activation::kRelu:
      for (int64_t i = 0; i < count; ++i) values[i] = apply_activation(Activation::kRelu, values[i]);
      break;
    case Activation::kHardswish:
      for (int64_t i = 0; i < count; ++i)
        values[i] = apply_activation(Activation::kHardswish, values[i]);
      break;
    case Activation::kHardsigmoid:
      for (int64_t i = 0; i < count; ++i)
        values[i] = apply_activation(Activation::kHardsigmoid, values[i]);
      break;
    default:
      for (int64_t i = 0; i < count; ++i) values[i] = apply_activation(activation, values[i]);
      break;
  }
}

// y[r] = act(b[r] + W[r, :] . x) for r in [0, rows), rows split over threads in whole blocks.
void se_fc(const KernelTable& kernels, const float* weight, const float* bias, const float* x,
           int64_t rows, int64_t cols, Activation activation, float* y, int threads) {
  const int64_t blocks = (rows + kSeBlock - 1) / kSeBlock;
  const int64_t by_size = std::max<int64_t>(1, rows * cols / kMinFcWeightsPerThread);
  const int fc_threads = int(std::max<int64_t>(1, std::min<int64_t>({threads, by_size, blocks})));
  auto body = [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * kSeBlock, r1 = std::min(rows, b1 * kSeBlock);
    kernels.matvec(weight + r0 * cols, bias ? bias + r0 : nullptr, x, r1 - r0, cols, y + r0);
    activate(activation, y + r0, r1 - r0);
  };
  if (fc_threads == 1)
    body(0, blocks);
  else
    parallel_for(blocks, fc_threads, body);
}

}  // namespace

void se_gates(const SeShape& s, const float* input, const float* fc1_weight,
              const float* fc1_bias, const float* fc2_weight, const float* fc2_bias,
              float* gates, bool channels_last, int threads) {
  const KernelTable& kernels = active_kernels();
  const int64_t N = s.batch, C = s.channels, HW = s.hw, S = s.squeeze;
  if (N == 0) return;
  float* const pooled = se_buffer(N * C + S);
  float* const hidden = pooled + N * C;
  const int64_t floats = N * C * HW;

  // 1. Per-channel sums, partitioned by channel so each sum has one fixed order.
  if (channels_last) {
    const int64_t per_image = (C + kSeBlock - 1) / kSeBlock, blocks = N * per_image;
    auto body = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1;) {  // one call per image's run of channel blocks
        const int64_t n = b / per_image, end = std::min(b1, (n + 1) * per_image);
        const int64_t c0 = (b - n * per_image) * kSeBlock;
        const int64_t c1 = std::min(C, (end - n * per_image) * kSeBlock);
        kernels.pixel_sum(input + n * HW * C + c0, HW, C, c1 - c0, pooled + n * C + c0);
        b = end;
      }
    };
    const int t = threads_for(floats, threads, blocks);
    if (t == 1) body(0, blocks); else parallel_for(blocks, t, body);
  } else {
    const int64_t planes = N * C, blocks = (planes + kSeBlock - 1) / kSeBlock;
    auto body = [&](int64_t b0, int64_t b1) {
      const int64_t p0 = b0 * kSeBlock, p1 = std::min(planes, b1 * kSeBlock);
      kernels.plane_sum(input + p0 * HW, p1 - p0, HW, pooled + p0);
    };
    const int t = threads_for(floats, threads, blocks);
    if (t == 1) body(0, blocks); else parallel_for(blocks, t, body);
  }

  se_gates_from_sums(s, pooled, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gates, threads);
}

void se_gates_from_sums(const SeShape& s, float* sums, float* hidden, const float* fc1_weight,
                        const float* fc1_bias, const float* fc2_weight, const float* fc2_bias,
                        float* gates, int threads) {
  // The two small FC layers per image (rows split over threads only when they are large).
  const KernelTable& kernels = active_kernels();
  const int64_t C = s.channels, S = s.squeeze;
  const float inv_hw = 1.0f / float(s.hw);
  for (int64_t n = 0; n < s.batch; ++n) {
    float* mean = sums + n * C;
    for (int64_t c = 0; c < C; ++c) mean[c] *= inv_hw;
    se_fc(kernels, fc1_weight, fc1_bias, mean, S, C, s.activation, hidden, threads);
    se_fc(kernels, fc2_weight, fc2_bias, hidden, C, S, s.gate, gates + n * C, threads);
  }
}

void squeeze_excite(const SeShape& s, const float* input, const float* fc1_weight,
                    const float* fc1_bias, const float* fc2_weight, const float* fc2_bias,
                    float* output, bool channels_last, int threads) {
  const KernelTable& kernels = active_kernels();
  const int64_t N = s.batch, C = s.channels, HW = s.hw;
  if (N == 0) return;
  // Its own buffer: se_gates uses se_buffer for the pooled means.
  thread_local std::vector<float> gate_buffer;
  if (int64_t(gate_buffer.size()) < N * C) gate_buffer.resize(N * C);
  float* const gates = gate_buffer.data();
  se_gates(s, input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gates, channels_last, threads);
  const int64_t floats = N * C * HW;

  // 3. Scale the input by its gate.
  if (channels_last) {
    const int64_t pixels = N * HW;
    auto body = [&](int64_t p0, int64_t p1) {
      // Split at image boundaries: each image has its own gate vector.
      for (int64_t p = p0; p < p1;) {
        const int64_t n = p / HW, end = std::min(p1, (n + 1) * HW);
        kernels.scale_pixels(input + p * C, gates + n * C, output + p * C, end - p, C);
        p = end;
      }
    };
    const int t = threads_for(floats, threads, pixels);
    if (t == 1) body(0, pixels); else parallel_for(pixels, t, body);
  } else {
    const int64_t planes = N * C;
    auto body = [&](int64_t p0, int64_t p1) {
      kernels.scale_planes(input + p0 * HW, gates + p0, output + p0 * HW, p1 - p0, HW);
    };
    const int t = threads_for(floats, threads, planes);
    if (t == 1) body(0, planes); else parallel_for(planes, t, body);
  }
}

}  // namespace mnv3ext
