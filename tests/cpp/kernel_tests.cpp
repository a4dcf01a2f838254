// C++ kernel test driver: every ISA this CPU runs (available_isas()), through the public
// driver (dwconv2d, squeeze_excite), NCHW and NHWC, over edge shapes, against float64
// references computed here and against the scalar path. Every buffer handed to the kernels is
// a heap array of exactly its size (new float[n]) so AddressSanitizer catches any access past
// its end. Prints `N passed, M failed` last and exits non-zero on any failure.
//
//   kernel_tests [--quick]      (--quick: fewer shapes, for slow emulators)
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/driver.h"

using namespace mnv3ext;

namespace {

int g_passed = 0, g_failed = 0;
constexpr int kMaxReportedFailures = 30;

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= kMaxReportedFailures) std::printf("FAIL %s\n", what.c_str());
}

// An exact-size heap buffer: no slack for an over-read to hide in.
struct Buffer {
  float* data = nullptr;
  int64_t size = 0;
  explicit Buffer(int64_t n) : data(new float[n > 0 ? n : 1]), size(n) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { delete[] data; }
  float& operator[](int64_t i) { return data[i]; }
};

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return uint32_t(state >> 11);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() % 1000003) / 1000003.0f; }
};

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kRelu6: return "relu6";
    case Activation::kHardswish: return "hardswish";
    case Activation::kHardsigmoid: return "hardsigmoid";
    case Activation::kSigmoid: return "sigmoid";
  }
  return "?";
}

// float64 activations with PyTorch's definitions (NaN propagates, hardswish divides by 6).
double ref_activation(Activation a, double x) {
  switch (a) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x < 0 ? 0 : x;
    case Activation::kRelu6: return x < 0 ? 0 : (x > 6 ? 6 : x);
    case Activation::kHardswish:
      return std::isnan(x) ? x : x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Activation::kHardsigmoid:
      return std::isnan(x) ? x : std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Activation::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
  }
  return x;
}

// got vs a float64 reference: NaN where the reference is NaN, the same infinity, else within
// rel * scale + abs.
bool close(float got, double ref, double scale, double rel, double abs_tol) {
  if (std::isnan(ref)) return std::isnan(got);
  if (std::isinf(ref)) return double(got) == ref;
  if (!std::isfinite(got)) return false;
  return std::fabs(double(got) - ref) <= rel * scale + abs_tol;
}

// Same NaN positions and within tolerance of each other (SIMD vs scalar path): both carry
// float32 rounding, hence twice the tolerance against float64.
bool close_to(float got, float want, double scale, double rel, double abs_tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  if (!std::isfinite(got)) return false;
  return std::fabs(double(got) - double(want)) <= 2 * (rel * scale + abs_tol);
}

// ------------------------------------------------------------------------------------------
// Depthwise conv

struct ConvCase {
  int64_t n, c, h, w;
  int kh, kw, sh, sw, dh, dw;
  int pt, pl, pb, pr;
  Activation act;
  int special;  // 0 random; 1 NaN/inf in the input; 2 a non-finite weight; 3 activation edges
};

std::string describe(const ConvCase& k) {
  char text[256];
  std::snprintf(text, sizeof text,
                "N=%lld C=%lld H=%lld W=%lld k=%dx%d s=%d,%d d=%d,%d pad=%d,%d,%d,%d act=%s special=%d",
                (long long)k.n, (long long)k.c, (long long)k.h, (long long)k.w, k.kh, k.kw, k.sh,
                k.sw, k.dh, k.dw, k.pt, k.pl, k.pb, k.pr, activation_name(k.act), k.special);
  return text;
}

// Makes the padded input at least as large as the dilated kernel by growing bottom/right.
void fix_padding(ConvCase& k) {
  while (k.h + k.pt + k.pb < int64_t(k.dh) * (k.kh - 1) + 1) ++k.pb;
  while (k.w + k.pl + k.pr < int64_t(k.dw) * (k.kw - 1) + 1) ++k.pr;
}

// The NHWC rows kernel on a channel range (what threads splitting a block by channels run;
// ranges start at multiples of kChannelAlign): the range's channels bit-identical to the whole
// layer's, every other output float untouched.
void check_channel_ranges(const DwConvShape& whole, const float* input, const float* packed,
                          const float* expected, const std::string& what) {
  const int64_t C = whole.channels, size = whole.batch * whole.out_h * whole.out_w * C;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t b = 0; b < C; b += kChannelAlign) {
    ranges.push_back({b, std::min(C, b + kChannelAlign)});
    ranges.push_back({b, C});
    if (b > 0) ranges.push_back({0, b});
  }
  if (C > 17) ranges.push_back({16, C - 1});  // an end inside a tile, not at C
  const uint32_t sentinel_bits = 0x7fc0beefu;  // a NaN no kernel produces
  float sentinel;
  std::memcpy(&sentinel, &sentinel_bits, sizeof sentinel);
  for (const auto& [c0, c1] : ranges) {
    DwConvShape part = whole;
    part.channel_begin = c0;
    part.channel_end = c1;
    Buffer out(size);
    std::fill(out.data, out.data + size, sentinel);
    active_kernels().dwconv_nhwc_rows(part, input, packed, out.data, 0, whole.batch * whole.out_h);
    int64_t bad = -1;
    for (int64_t i = 0; i < size && bad < 0; ++i) {
      const int64_t c = i % C;
      const bool inside = c >= c0 && c < c1;
      if (inside ? std::memcmp(&out[i], &expected[i], sizeof(float)) != 0
                 : std::memcmp(&out[i], &sentinel_bits, sizeof(float)) != 0)
        bad = i;
    }
    record(bad < 0, what + " [channels " + std::to_string(c0) + ".." + std::to_string(c1) +
                        (bad < 0 ? "" : ": float " + std::to_string(bad) + " wrong") + "]");
  }
}

void run_conv_case(const ConvCase& k, const std::vector<std::string>& isas, uint64_t seed) {
  const DwConvShape s = make_dwconv_shape(k.n, k.c, k.h, k.w, k.kh, k.kw, k.sh, k.sw, k.dh, k.dw,
                                          k.pt, k.pl, k.pb, k.pr, k.act);
  const int64_t C = k.c, taps = int64_t(k.kh) * k.kw;
  const int64_t in_size = k.n * C * k.h * k.w, out_size = k.n * C * s.out_h * s.out_w;
  Rng rng(seed);
  Buffer weight(C * taps), bias(C), input(in_size);
  for (int64_t i = 0; i < weight.size; ++i) weight[i] = rng.uniform(-1.0f, 1.0f);
  for (int64_t i = 0; i < C; ++i) bias[i] = rng.uniform(-1.0f, 1.0f);
  // Scaled so pre-activations straddle the relu6 / hardswish knees (-3, 0, 3, 6).
  const float range = 8.0f / std::sqrt(float(taps));
  for (int64_t i = 0; i < in_size; ++i) input[i] = rng.uniform(-range, range);
  if (k.special == 1) {
    input[rng.next() % in_size] = std::numeric_limits<float>::quiet_NaN();
    input[rng.next() % in_size] = std::numeric_limits<float>::infinity();
    input[rng.next() % in_size] = -std::numeric_limits<float>::infinity();
  } else if (k.special == 2) {
    weight[(rng.next() % C) * taps + rng.next() % taps] = std::numeric_limits<float>::infinity();
  } else if (k.special == 3) {
    // k = 1, weight 1, bias 0: the output is act(x) exactly, for every edge value.
    const float edges[] = {-std::numeric_limits<float>::infinity(), -7.0f, -6.0f, -3.0001f,
                           -3.0f, -2.9999f, -1.0f, -0.0f, 0.0f, 1e-30f, 0.5f, 2.9999f, 3.0f,
                           3.0001f, 5.9999f, 6.0f, 6.0001f, 1e30f,
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN()};
    const int64_t count = sizeof(edges) / sizeof(edges[0]);
    for (int64_t i = 0; i < weight.size; ++i) weight[i] = 1.0f;
    for (int64_t i = 0; i < C; ++i) bias[i] = 0.0f;
    for (int64_t i = 0; i < in_size; ++i) input[i] = edges[i % count];
  }

  // The NCHW input and its NHWC copy.
  Buffer input_nhwc(in_size);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < k.h; ++y)
        for (int64_t x = 0; x < k.w; ++x)
          input_nhwc[((n * k.h + y) * k.w + x) * C + c] = input[((n * C + c) * k.h + y) * k.w + x];

  // float64 reference (NCHW order) and the magnitude sum that bounds float32 rounding.
  // A non-finite weight on a padding tap: the scalar path skips the tap, PyTorch (and a kernel
  // reading a zero-padded copy) computes inf * 0 = NaN. Either is accepted there.
  std::vector<double> ref(out_size), mag(out_size);
  std::vector<char> either(out_size, 0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oy = 0; oy < s.out_h; ++oy)
        for (int64_t ox = 0; ox < s.out_w; ++ox) {
          const int64_t o = ((n * C + c) * s.out_h + oy) * s.out_w + ox;
          double acc = bias[c], m = std::fabs(double(bias[c]));
          for (int ky = 0; ky < k.kh; ++ky) {
            const int64_t iy = oy * k.sh - k.pt + int64_t(ky) * k.dh;
            for (int kx = 0; kx < k.kw; ++kx) {
              const int64_t ix = ox * k.sw - k.pl + int64_t(kx) * k.dw;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) {
                if (!std::isfinite(weight[c * taps + ky * k.kw + kx])) either[o] = 1;
                continue;
              }
              const double p = double(weight[c * taps + ky * k.kw + kx]) *
                               double(input[((n * C + c) * k.h + iy) * k.w + ix]);
              acc += p;
              m += std::fabs(p);
            }
          }
          ref[o] = ref_activation(k.act, acc);
          mag[o] = m;
        }

  Buffer packed(packed_dwconv_floats(C, k.kh, k.kw));
  pack_dwconv_weights(weight.data, bias.data, C, k.kh, k.kw, packed.data);

  std::vector<float> scalar_out[2];  // per layout, from the first ISA (scalar)
  for (const std::string& isa : isas) {
    select_isa(isa);
    for (int layout = 0; layout < 2; ++layout) {
      const bool channels_last = layout == 1;
      Buffer out1(out_size), out2(out_size);
      dwconv2d(s, channels_last ? input_nhwc.data : input.data, packed.data, out1.data,
               channels_last, 1);
      dwconv2d(s, channels_last ? input_nhwc.data : input.data, packed.data, out2.data,
               channels_last, 2);
      const std::string what = isa + (channels_last ? " dwconv NHWC " : " dwconv NCHW ") +
                               describe(k);
      // Back to NCHW order for comparison.
      std::vector<float> got(out_size);
      for (int64_t n = 0; n < k.n; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < s.out_h * s.out_w; ++i)
            got[(n * C + c) * s.out_h * s.out_w + i] =
                channels_last ? out1[(n * s.out_h * s.out_w + i) * C + c]
                              : out1[(n * C + c) * s.out_h * s.out_w + i];
      int64_t bad = -1;
      for (int64_t i = 0; i < out_size && bad < 0; ++i)
        if (!close(got[i], ref[i], mag[i], 1e-5, 1e-6) && !(either[i] && std::isnan(got[i])))
          bad = i;
      if (bad >= 0) {
        char detail[160];
        std::snprintf(detail, sizeof detail, " [vs float64: index %lld got %.9g want %.9g]",
                      (long long)bad, double(got[bad]), ref[bad]);
        record(false, what + detail);
      } else {
        record(true, what);
      }
      record(std::memcmp(out1.data, out2.data, sizeof(float) * out_size) == 0,
             what + " [threads=2 differs from threads=1]");
      if (channels_last) check_channel_ranges(s, input_nhwc.data, packed.data, out1.data, what);
      if (scalar_out[layout].empty()) {
        scalar_out[layout] = got;
      } else {
        bool same = true;
        for (int64_t i = 0; i < out_size && same; ++i)
          same = either[i] || close_to(got[i], scalar_out[layout][i], mag[i], 1e-5, 1e-6);
        record(same, what + " [vs scalar path]");
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Squeeze-excite

struct SeCase {
  int64_t n, c, h, w, squeeze;
  Activation act, gate;
  bool biases;
  bool nan;
};

// `floats` floats at a 64-byte boundary plus `shift` floats, in an allocation that ends right
// after them.
struct AlignedEnd {
  void* block = nullptr;
  float* at = nullptr;
  AlignedEnd(int64_t shift, int64_t floats) {
    if (posix_memalign(&block, 64, size_t(shift + std::max<int64_t>(floats, 1)) * sizeof(float)) != 0)
      std::abort();
    at = static_cast<float*>(block) + shift;
  }
  AlignedEnd(const AlignedEnd&) = delete;
  AlignedEnd& operator=(const AlignedEnd&) = delete;
  ~AlignedEnd() { std::free(block); }
};

std::string describe(const SeCase& k) {
  char text[200];
  std::snprintf(text, sizeof text, "N=%lld C=%lld H=%lld W=%lld S=%lld act=%s gate=%s bias=%d nan=%d",
                (long long)k.n, (long long)k.c, (long long)k.h, (long long)k.w,
                (long long)k.squeeze, activation_name(k.act), activation_name(k.gate),
                int(k.biases), int(k.nan));
  return text;
}

void run_se_case(const SeCase& k, const std::vector<std::string>& isas, uint64_t seed) {
  const SeShape s = make_se_shape(k.n, k.c, k.h * k.w, k.squeeze, k.act, k.gate);
  const int64_t C = k.c, S = k.squeeze, HW = k.h * k.w, size = k.n * C * HW;
  Rng rng(seed);
  Buffer input(size), fc1(S * C), b1(S), fc2(C * S), b2(C);
  for (int64_t i = 0; i < size; ++i) input[i] = rng.uniform(-1.0f, 2.0f);
  const float r1 = 3.0f / std::sqrt(float(C)), r2 = 3.0f / std::sqrt(float(S));
  for (int64_t i = 0; i < fc1.size; ++i) fc1[i] = rng.uniform(-r1, r1);
  for (int64_t i = 0; i < fc2.size; ++i) fc2[i] = rng.uniform(-r2, r2);
  for (int64_t i = 0; i < S; ++i) b1[i] = rng.uniform(-0.5f, 0.5f);
  for (int64_t i = 0; i < C; ++i) b2[i] = rng.uniform(-0.5f, 0.5f);
  if (k.nan) input[rng.next() % size] = std::numeric_limits<float>::quiet_NaN();
  const float* bias1 = k.biases ? b1.data : nullptr;
  const float* bias2 = k.biases ? b2.data : nullptr;
  // Each FC matrix at a 64-byte boundary plus 0, 8 or 3 floats (by seed), ending exactly where
  // its allocation ends: the AVX-512 matvec reads rows of 8 (mod 16) floats from 32-byte
  // aligned weights by whole cache lines, and ASan must see any line past the last row.
  const int64_t shift = seed % 3 == 0 ? 0 : (seed % 3 == 1 ? 8 : 3);
  AlignedEnd fc1_store(shift, S * C), fc2_store(shift, C * S);
  float* const fc1_at = fc1_store.at;
  float* const fc2_at = fc2_store.at;
  std::memcpy(fc1_at, fc1.data, sizeof(float) * S * C);
  std::memcpy(fc2_at, fc2.data, sizeof(float) * S * C);

  Buffer input_nhwc(size);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) input_nhwc[(n * HW + i) * C + c] = input[(n * C + c) * HW + i];

  // float64 reference, NCHW order.
  std::vector<double> ref(size);
  for (int64_t n = 0; n < k.n; ++n) {
    std::vector<double> mean(C), hidden(S);
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < HW; ++i) acc += input[(n * C + c) * HW + i];
      mean[c] = acc / double(HW);
    }
    for (int64_t j = 0; j < S; ++j) {
      double acc = bias1 ? bias1[j] : 0.0;
      for (int64_t c = 0; c < C; ++c) acc += double(fc1[j * C + c]) * mean[c];
      hidden[j] = ref_activation(k.act, acc);
    }
    for (int64_t c = 0; c < C; ++c) {
      double acc = bias2 ? bias2[c] : 0.0;
      for (int64_t j = 0; j < S; ++j) acc += double(fc2[c * S + j]) * hidden[j];
      const double g = ref_activation(k.gate, acc);
      for (int64_t i = 0; i < HW; ++i)
        ref[(n * C + c) * HW + i] = double(input[(n * C + c) * HW + i]) * g;
    }
  }

  std::vector<float> scalar_out[2];
  for (const std::string& isa : isas) {
    select_isa(isa);
    for (int layout = 0; layout < 2; ++layout) {
      const bool channels_last = layout == 1;
      Buffer out1(size), out2(size);
      const float* in = channels_last ? input_nhwc.data : input.data;
      squeeze_excite(s, in, fc1_at, bias1, fc2_at, bias2, out1.data, channels_last, 1);
      squeeze_excite(s, in, fc1_at, bias1, fc2_at, bias2, out2.data, channels_last, 2);
      const std::string what = isa + (channels_last ? " SE NHWC " : " SE NCHW ") + describe(k);
      std::vector<float> got(size);
      for (int64_t n = 0; n < k.n; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < HW; ++i)
            got[(n * C + c) * HW + i] =
                channels_last ? out1[(n * HW + i) * C + c] : out1[(n * C + c) * HW + i];
      int64_t bad = -1;
      for (int64_t i = 0; i < size && bad < 0; ++i) {
        const double x = std::fabs(double(input[i]));
        if (!close(got[i], ref[i], x, 1e-4, 1e-6)) bad = i;
      }
      if (bad >= 0) {
        char detail[160];
        std::snprintf(detail, sizeof detail, " [vs float64: index %lld got %.9g want %.9g]",
                      (long long)bad, double(got[bad]), ref[bad]);
        record(false, what + detail);
      } else {
        record(true, what);
      }
      record(std::memcmp(out1.data, out2.data, sizeof(float) * size) == 0,
             what + " [threads=2 differs from threads=1]");
      if (scalar_out[layout].empty()) {
        scalar_out[layout] = got;
      } else {
        bool same = true;
        for (int64_t i = 0; i < size && same; ++i)
          same = close_to(got[i], scalar_out[layout][i], std::fabs(double(input[i])), 1e-4, 1e-6);
        record(same, what + " [vs scalar path]");
      }
    }
  }
}

// ------------------------------------------------------------------------------------------

const int64_t kChannels[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 72, 101};
const int64_t kSizes[] = {1, 2, 3, 7, 13};
const Activation kConvActs[] = {Activation::kNone, Activation::kRelu, Activation::kRelu6,
                                Activation::kHardswish};

std::vector<ConvCase> conv_cases(bool quick) {
  std::vector<ConvCase> cases;
  int index = 0;
  // Every channel count x kernel x stride x dilation; spatial size, padding, activation,
  // batch and specials rotate so that each of them meets every kernel and stride.
  for (int64_t c : kChannels)
    for (int k : {1, 3, 5, 7})
      for (int stride : {1, 2, 3})
        for (int dilation : {1, 2}) {
          ++index;
          if (quick && index % 3 != 0 && c != 17 && c != 72) continue;
          ConvCase cc{};
          cc.n = 1 + index % 2;
          cc.c = c;
          cc.h = kSizes[index % 5];
          cc.w = kSizes[(index / 5 + index) % 5];
          cc.kh = cc.kw = k;
          cc.sh = cc.sw = stride;
          cc.dh = cc.dw = dilation;
          const int same = dilation * (k - 1) / 2;
          switch (index % 4) {
            case 0: break;                                                   // no padding
            case 1: cc.pt = cc.pl = cc.pb = cc.pr = same; break;             // symmetric
            case 2: cc.pt = same; cc.pl = same / 2; cc.pb = same / 2 + 1; cc.pr = same; break;
            case 3: cc.pt = cc.pl = cc.pb = cc.pr = dilation * (k - 1); break;  // full
          }
          cc.act = kConvActs[(index / 4) % 4];
          cc.special = index % 11 == 0 ? 1 : (index % 13 == 0 ? 2 : 0);
          fix_padding(cc);
          cases.push_back(cc);
        }
  // Every H x W (square and not) with the specialised 3x3 / 5x5 kernels, stride 1 and 2.
  for (int64_t h : kSizes)
    for (int64_t w : kSizes)
      for (int k : {3, 5})
        for (int stride : {1, 2}) {
          ++index;
          if (quick && index % 2) continue;
          ConvCase cc{};
          cc.n = 1 + index % 2;
          cc.c = kChannels[index % 13];
          cc.h = h;
          cc.w = w;
          cc.kh = cc.kw = k;
          cc.sh = cc.sw = stride;
          cc.dh = cc.dw = 1;
          cc.pt = cc.pl = (k - 1) / 2;
          cc.pb = cc.pr = (index % 3 == 0) ? 0 : (k - 1) / 2;  // asymmetric, as TF "SAME" s2
          cc.act = kConvActs[index % 4];
          fix_padding(cc);
          cases.push_back(cc);
        }
  // Mixed kernel, stride and dilation per axis.
  const int mixed[][6] = {{1, 3, 1, 2, 1, 1}, {3, 1, 2, 1, 1, 2}, {5, 3, 1, 2, 2, 1},
                          {3, 5, 2, 3, 1, 1}, {7, 1, 1, 1, 1, 1}, {3, 7, 3, 1, 2, 1}};
  for (const auto& m : mixed)
    for (int64_t c : {int64_t(5), int64_t(16), int64_t(33)}) {
      ++index;
      ConvCase cc{};
      cc.n = 1;
      cc.c = c;
      cc.h = 13;
      cc.w = 7;
      cc.kh = m[0], cc.kw = m[1], cc.sh = m[2], cc.sw = m[3], cc.dh = m[4], cc.dw = m[5];
      cc.pt = cc.dh * (cc.kh - 1) / 2;
      cc.pl = cc.dw * (cc.kw - 1);
      cc.pb = 0;
      cc.pr = 1;
      cc.act = kConvActs[index % 4];
      fix_padding(cc);
      cases.push_back(cc);
    }
  // Activation edge values (-inf, -3, 0, 3, 6, inf, NaN...) through every activation.
  for (Activation act : kConvActs)
    cases.push_back(ConvCase{1, 17, 3, 7, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, act, 3});
  // Larger MobileNetV3-like layers, big enough for the thread pool to split them.
  cases.push_back(ConvCase{2, 72, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kRelu, 0});
  cases.push_back(ConvCase{1, 72, 28, 28, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, Activation::kRelu, 0});
  cases.push_back(ConvCase{2, 40, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, Activation::kHardswish, 0});
  // Interior pixel groups of the dilated NHWC kernels, odd row counts (single-row steps at
  // image ends) and rows that are neither multiples of 7 nor of 8.
  cases.push_back(ConvCase{2, 33, 29, 31, 5, 5, 1, 1, 2, 2, 4, 4, 4, 4, Activation::kHardswish, 0});
  cases.push_back(ConvCase{3, 17, 23, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kRelu6, 0});
  cases.push_back(ConvCase{1, 24, 19, 61, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, Activation::kNone, 0});
  // AVX-512 NCHW strip kernels: several strips of rows (balanced sizes), several 16-column
  // blocks with a tail, rows aligned or not, asymmetric / zero / full padding; channel-
  // interleaved 6..8-wide outputs with a partial group of planes.
  cases.push_back(ConvCase{1, 5, 60, 45, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, Activation::kHardswish, 0});
  cases.push_back(ConvCase{1, 3, 20, 37, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, Activation::kRelu, 0});
  cases.push_back(ConvCase{1, 3, 31, 33, 3, 3, 1, 1, 1, 1, 2, 2, 2, 2, Activation::kNone, 1});
  cases.push_back(ConvCase{1, 5, 61, 50, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, Activation::kRelu6, 0});
  cases.push_back(ConvCase{1, 2, 34, 112, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kHardswish, 2});
  cases.push_back(ConvCase{1, 3, 47, 70, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, Activation::kRelu, 0});
  cases.push_back(ConvCase{1, 3, 33, 40, 5, 5, 1, 1, 1, 1, 2, 2, 1, 1, Activation::kNone, 0});
  cases.push_back(ConvCase{1, 20, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, Activation::kRelu6, 0});
  cases.push_back(ConvCase{1, 20, 12, 12, 5, 5, 2, 2, 1, 1, 2, 2, 1, 1, Activation::kHardswish, 0});
  cases.push_back(ConvCase{2, 37, 14, 14, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, Activation::kHardswish, 0});
  cases.push_back(ConvCase{1, 33, 7, 7, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, Activation::kRelu, 1});
  if (!quick) {
    cases.push_back(ConvCase{1, 120, 28, 28, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, Activation::kRelu, 0});
    cases.push_back(ConvCase{1, 16, 56, 56, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, Activation::kRelu6, 0});
    cases.push_back(ConvCase{2, 101, 13, 13, 7, 7, 2, 2, 2, 2, 6, 6, 6, 6, Activation::kHardswish, 0});
  }
  return cases;
}

std::vector<SeCase> se_cases(bool quick) {
  std::vector<SeCase> cases;
  int index = 0;
  for (int64_t c : kChannels) {
    const int64_t squeezes[] = {1, std::max<int64_t>(1, c / 4), 8};
    for (int64_t s : squeezes) {
      ++index;
      if (quick && index % 2 && c != 17) continue;
      SeCase sc{};
      sc.n = 1 + index % 2;
      sc.c = c;
      sc.h = kSizes[index % 5];
      sc.w = kSizes[(index / 5 + index + 1) % 5];
      sc.squeeze = s;
      sc.act = index % 2 ? Activation::kRelu : Activation::kHardswish;
      sc.gate = (index / 2) % 2 ? Activation::kHardsigmoid : Activation::kSigmoid;
      sc.biases = index % 3 != 0;
      sc.nan = index % 7 == 0;
      cases.push_back(sc);
    }
  }
  // FC rows of 8 (mod 16) floats, 3+ lines long, with a lone row in the last group of 16 (fc1
  // 17 x 40, fc2 33 x 40), three times so each weight alignment (shift 0, 8, 3 by seed) meets
  // them.
  for (int i = 0; i < 3; ++i) {
    cases.push_back(SeCase{1, 40, 5, 3, 17, Activation::kRelu, Activation::kHardsigmoid, true, false});
    cases.push_back(SeCase{1, 33, 3, 5, 40, Activation::kHardswish, Activation::kSigmoid, false, false});
  }
  // MobileNetV3-like, large enough to be split over threads.
  cases.push_back(SeCase{2, 72, 28, 28, 24, Activation::kRelu, Activation::kHardsigmoid, true, false});
  cases.push_back(SeCase{1, 120, 28, 28, 32, Activation::kRelu, Activation::kHardsigmoid, true, false});
  if (!quick)
    cases.push_back(SeCase{2, 672, 7, 7, 168, Activation::kHardswish, Activation::kSigmoid, true, false});
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const std::vector<std::string> isas = available_isas();
  std::printf("ISAs:");
  for (const auto& isa : isas) std::printf(" %s", isa.c_str());
  std::printf("%s\n", quick ? " (quick)" : "");
  if (isas.empty() || isas.front() != "scalar") {
    std::printf("FAIL the scalar path must be available first\n0 passed, 1 failed\n");
    return 1;
  }
#if defined(__aarch64__)
  // Advanced SIMD is mandatory on AArch64: a build without the NEON table tests nothing new.
  if (isas.back() != "neon") {
    std::printf("FAIL the NEON kernels are not available\n0 passed, 1 failed\n");
    return 1;
  }
#endif
  uint64_t seed = 1;
  try {
    for (const ConvCase& cc : conv_cases(quick)) run_conv_case(cc, isas, seed++);
    for (const SeCase& sc : se_cases(quick)) run_se_case(sc, isas, seed++);
  } catch (const std::exception& e) {
    record(false, std::string("exception: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
