// Times the GEMM family and whole blocks directly (no Python, no dispatcher): for development of
// the microkernels, beside the op-level benchmarks in bench/.
//   gemm_bench [gemm|gemm-cold|se|blocks|stem] [repetitions]
// gemm: gemm_tiles on one thread over MobileNetV3's 1x1 shapes, with the rows of one band of a
//   block (data warm in L1/L2): the best and the median microseconds of `repetitions` calls and
//   the best's G multiply-adds per second (useful columns only).
// gemm-cold: the same with the weights and output out of the caches before each call (a 64 MiB
//   sweep, then the rows read again), as a model's layer finds them.
// se: the squeeze-excite gate (pool + two FCs) of Large's widest SE blocks, cold weights and warm.
// blocks: whole inverted-residual blocks of Large (ir1-ir3, ir12-14) on one thread, cold and warm.
// stem: conv2d_gemm of the 224x224 stem (3 -> 16, 3x3 stride 2, NCHW in, NHWC out) on 1 and 2
//   threads, median microseconds on a cold image (a 64 MiB sweep first, as a model's stem finds
//   it) and right after on a warm one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <utility>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/block/inverted_residual.h"
#include "kernels/driver.h"
#include "kernels/gemm/pointwise.h"

using namespace mnv3ext;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<float> random_floats(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

using Buffers = std::initializer_list<const std::vector<float>*>;

// Reads and writes every line of `sweep` (a memset of this size bypasses the caches: nothing
// would be evicted), then reads every line of `keep`: the data a layer finds warm in a model.
void evict_caches(std::vector<char>& sweep, Buffers keep = {}) {
  for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
  volatile float sink = 0;
  for (const std::vector<float>* v : keep)
    for (size_t i = 0; i < v->size(); i += 16) sink = sink + (*v)[i];
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median seconds of `call` right after evict_caches(sweep, keep), and right after that call.
template <class Call>
std::pair<double, double> cold_and_warm(int repetitions, std::vector<char>& sweep, Buffers keep, Call call) {
  std::vector<double> cold, warm;
  for (int r = 0; r < repetitions; ++r) {
    evict_caches(sweep, keep);
    auto t0 = std::chrono::steady_clock::now();
    call();
    cold.push_back(seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    call();
    warm.push_back(seconds_since(t0));
  }
  return {median(cold), median(warm)};
}

void bench_gemm(int repetitions, bool cold_weights) {
  std::vector<char> sweep(cold_weights ? (64 << 20) : 0);
  struct Shape { int64_t m, k, n; const char* layer; };
  const Shape shapes[] = {
      {1344, 16, 64, "large.expand2 (a band of 12 rows)"}, {1344, 24, 72, "large.expand3"},
      {336, 64, 24, "large.project2"},   {672, 72, 24, "large.project3"},
      {784, 72, 40, "large.project4"},   {784, 120, 40, "large.project5"},
      {784, 40, 120, "large.expand5"},   {196, 80, 240, "large.project7 / expand8"},
      {196, 112, 672, "large.expand12"}, {196, 672, 112, "large.project12"},
      {49, 160, 960, "large.expand14"},  {49, 960, 160, "large.project14"},
      {1344, 16, 16, "large.project1"},  {1, 960, 1280, "large.classifier0 (batch 1)"},
      {1, 1280, 1000, "large.classifier3 (batch 1)"}, {1344, 256, 32, "k 256, 2 panels"},
      {1344, 256, 48, "k 256, 3 panels"}};
  std::mt19937 rng(1);
  std::printf("%s\n%-34s %6s %5s %5s %10s %10s %8s\n", active_kernels().gemm_tile_name, "layer", "m", "k",
              "n", "best us", "median us", "GMAC/s");
  for (const Shape& s : shapes) {
    const std::vector<float> a = random_floats(size_t(s.m * s.k), rng);
    const std::vector<float> w = random_floats(size_t(s.k * s.n), rng);
    const std::vector<float> bias = random_floats(size_t(s.n), rng);
    std::vector<float> packed(size_t(packed_gemm_floats(s.k, s.n))), c(size_t(s.m * s.n));
    pack_gemm_weights(w.data(), bias.data(), s.k, s.n, packed.data());
    const GemmArgs g{s.m, s.k, s.n, a.data(), s.k, packed.data(), c.data(), s.n,
                     nullptr, 0, nullptr, 1, Activation::kHardswish};
    std::vector<double> t(static_cast<size_t>(repetitions));
    for (double& x : t) {
      if (cold_weights) evict_caches(sweep, {&a});  // the weights out of the caches, the rows warm
      const auto t0 = std::chrono::steady_clock::now();
      active_kernels().gemm_tiles(g, 0, s.m, 0, gemm_panels(s.n));
      x = seconds_since(t0);
    }
    std::sort(t.begin(), t.end());
    std::printf("%-34s %6lld %5lld %5lld %10.1f %10.1f %8.1f\n", s.layer, (long long)s.m, (long long)s.k,
                (long long)s.n, t[0] * 1e6, t[t.size() / 2] * 1e6, double(s.m) * s.k * s.n / t[0] / 1e9);
  }
}

void bench_stem(int repetitions) {
  const ConvShape s = make_conv_shape(1, 3, 224, 224, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, Activation::kHardswish);
  std::mt19937 rng(2);
  const std::vector<float> image = random_floats(3 * 224 * 224, rng);
  const std::vector<float> w = random_floats(16 * 27, rng), bias = random_floats(16, rng);
  std::vector<float> packed(size_t(packed_gemm_floats(27, 16))), out(16 * 112 * 112);
  pack_gemm_weights(w.data(), bias.data(), 27, 16, packed.data());
  const int64_t strides[4] = {3 * 224 * 224, 224 * 224, 224, 1};
  std::vector<char> sweep(64 << 20);
  for (int threads : {1, 2}) {
    const auto [cold, warm] = cold_and_warm(repetitions, sweep, {}, [&] {
      conv2d_gemm(s, image.data(), strides, packed.data(), out.data(), threads);
    });
    std::printf("stem 224x224, %d thread(s): cold %.1f us, warm %.1f us (medians)\n", threads, cold * 1e6,
                warm * 1e6);
  }
}

void bench_se(int repetitions) {
  struct Shape { int64_t c, hw, s; const char* layer; };
  const Shape shapes[] = {{480, 196, 120, "large.ir11"}, {672, 196, 168, "large.ir12"}, {960, 49, 240, "large.ir14"}};
  std::mt19937 rng(3);
  std::vector<char> sweep(64 << 20);
  for (const Shape& sh : shapes) {
    const std::vector<float> x = random_floats(size_t(sh.c * sh.hw), rng), w1 = random_floats(size_t(sh.c * sh.s), rng),
                             b1 = random_floats(size_t(sh.s), rng), w2 = random_floats(size_t(sh.c * sh.s), rng),
                             b2 = random_floats(size_t(sh.c), rng);
    std::vector<float> gates(size_t(sh.c));
    const SeShape se{1, sh.c, sh.hw, sh.s, Activation::kRelu, Activation::kHardsigmoid};
    const auto [cold, warm] = cold_and_warm(repetitions, sweep, {&x}, [&] {
      se_gates(se, x.data(), w1.data(), b1.data(), w2.data(), b2.data(), gates.data(), true, 1);
    });
    std::printf("se gates %s (C %lld, HW %lld, S %lld): cold weights %.1f us, warm %.1f us (medians)\n", sh.layer,
                (long long)sh.c, (long long)sh.hw, (long long)sh.s, cold * 1e6, warm * 1e6);
  }
}

// Large's blocks 1-3 and 12-14, whole, on 1 thread: cold weights (input and output warm) and warm.
void bench_blocks(int repetitions) {
  struct Named { BlockConfig c; int64_t hw; const char* layer; };
  const Activation HS = Activation::kHardswish, RE = Activation::kRelu, NO = Activation::kNone,
                   HSIG = Activation::kHardsigmoid;
  const Named blocks[] = {
      {{16, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, false, RE, RE, 0, RE, HSIG, true, NO}, 112, "large.ir1"},
      {{16, 64, 24, 3, 3, 2, 1, 1, 1, 1, 1, true, RE, RE, 0, RE, HSIG, false, NO}, 112, "large.ir2"},
      {{24, 72, 24, 3, 3, 1, 1, 1, 1, 1, 1, true, RE, RE, 0, RE, HSIG, true, NO}, 56, "large.ir3"},
      {{112, 672, 112, 3, 3, 1, 1, 1, 1, 1, 1, true, HS, HS, 168, RE, HSIG, true, NO}, 14, "large.ir12"},
      {{112, 672, 160, 5, 5, 2, 1, 2, 2, 2, 2, true, HS, HS, 168, RE, HSIG, false, NO}, 14, "large.ir13"},
      {{160, 960, 160, 5, 5, 1, 1, 2, 2, 2, 2, true, HS, HS, 240, RE, HSIG, true, NO}, 7, "large.ir14"}};
  std::mt19937 rng(4);
  std::vector<char> sweep(64 << 20);
  for (const Named& nb : blocks) {
    const BlockShape b = make_block_shape(nb.c, 1, nb.hw, nb.hw);
    std::vector<float> packed = random_floats(size_t(block_layout(nb.c).total), rng);
    for (float& w : packed) w *= 0.1f;
    const std::vector<float> x = random_floats(size_t(nb.hw * nb.hw * nb.c.in_c), rng);
    std::vector<float> out(size_t(b.out_h * b.out_w * nb.c.out_c));
    const auto [cold, warm] = cold_and_warm(repetitions, sweep, {&x, &out}, [&] {
      inverted_residual(b, x.data(), packed.data(), out.data(), 1);
    });
    std::printf("block %s (%.2f MB weights): cold weights %.1f us, warm %.1f us (medians)\n", nb.layer,
                double(packed.size()) * 4e-6, cold * 1e6, warm * 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool stem = argc > 1 && std::strcmp(argv[1], "stem") == 0;
  const bool cold = argc > 1 && std::strcmp(argv[1], "gemm-cold") == 0;
  const int repetitions = argc > 2 ? std::max(1, std::atoi(argv[2])) : (stem || cold ? 100 : 2000);
  if (argc > 1 && std::strcmp(argv[1], "se") == 0) bench_se(repetitions);
  else if (argc > 1 && std::strcmp(argv[1], "blocks") == 0) bench_blocks(repetitions);
  else if (stem) bench_stem(repetitions);
  else bench_gemm(repetitions, cold);
  return 0;
}
