// Times the GEMM family and whole blocks directly (no Python, no dispatcher): for development of
// the microkernels, beside the op-level benchmarks in bench/.
//   gemm_bench [gemm|gemm-cold|se|blocks|stem] [repetitions]
// gemm: gemm_tiles on one thread over MobileNetV3's 1x1 shapes, with the rows of one band of a
//   block (data warm in L1/L2): the best and the median microseconds of `repetitions` calls and
//   the best's G multiply-adds per second (useful columns only).
// gemm-cold: the same with the weights and output out of the caches before each call (a 64 MiB
//   sweep, then the rows read again), as a model's layer finds them.
// se: the squeeze-excite gate (pool + two FCs) of Large's widest SE blocks, cold weights and warm.
// blocks: whole inverted-residual blocks of Large (ir1, ir12-14) on one thread, cold and warm.
// stem: conv2d_gemm of the 224x224 stem (3 -> 16, 3x3 stride 2, NCHW in, NHWC out) on 1 and 2
//   threads, median microseconds on a cold image (a 64 MiB sweep first, as a model's stem finds
//   it) and right after on a warm one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
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
      if (cold_weights) {  // the weights out of the caches, the rows warm: as in a model
        for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
        volatile float sink = 0;
        for (size_t i = 0; i < a.size(); i += 16) sink = sink + a[i];
      }
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
    std::vector<double> cold, warm;
    for (int r = 0; r < repetitions; ++r) {
      // Read and write every line (a memset of this size bypasses the caches: nothing evicted).
      for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
      auto t0 = std::chrono::steady_clock::now();
      conv2d_gemm(s, image.data(), strides, packed.data(), out.data(), threads);
      cold.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      conv2d_gemm(s, image.data(), strides, packed.data(), out.data(), threads);
      warm.push_back(seconds_since(t0));
    }
    std::sort(cold.begin(), cold.end());
    std::sort(warm.begin(), warm.end());
    std::printf("stem 224x224, %d thread(s): cold %.1f us, warm %.1f us (medians)\n", threads,
                cold[cold.size() / 2] * 1e6, warm[warm.size() / 2] * 1e6);
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
    std::vector<double> cold, warm;
    for (int r = 0; r < repetitions; ++r) {
      for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
      volatile float sink = 0;
      for (size_t i = 0; i < x.size(); i += 16) sink = sink + x[i];
      auto t0 = std::chrono::steady_clock::now();
      se_gates(se, x.data(), w1.data(), b1.data(), w2.data(), b2.data(), gates.data(), true, 1);
      cold.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      se_gates(se, x.data(), w1.data(), b1.data(), w2.data(), b2.data(), gates.data(), true, 1);
      warm.push_back(seconds_since(t0));
    }
    std::sort(cold.begin(), cold.end());
    std::sort(warm.begin(), warm.end());
    std::printf("se gates %s (C %lld, HW %lld, S %lld): cold weights %.1f us, warm %.1f us (medians)\n", sh.layer,
                (long long)sh.c, (long long)sh.hw, (long long)sh.s, cold[cold.size() / 2] * 1e6,
                warm[warm.size() / 2] * 1e6);
  }
}

// Large's blocks 12-15 and 1, whole, on 1 thread: cold weights (input warm) and warm.
void bench_blocks(int repetitions) {
  struct Named { BlockConfig c; int64_t hw; const char* layer; };
  const Activation HS = Activation::kHardswish, RE = Activation::kRelu, NO = Activation::kNone,
                   HSIG = Activation::kHardsigmoid;
  const Named blocks[] = {
      {{16, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, false, RE, RE, 0, RE, HSIG, true, NO}, 112, "large.ir1"},
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
    std::vector<double> cold, warm;
    for (int r = 0; r < repetitions; ++r) {
      for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
      volatile float sink = 0;
      for (size_t i = 0; i < x.size(); i += 16) sink = sink + x[i];
      for (size_t i = 0; i < out.size(); i += 16) out[i] = 0;
      auto t0 = std::chrono::steady_clock::now();
      inverted_residual(b, x.data(), packed.data(), out.data(), 1);
      cold.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      inverted_residual(b, x.data(), packed.data(), out.data(), 1);
      warm.push_back(seconds_since(t0));
    }
    std::sort(cold.begin(), cold.end());
    std::sort(warm.begin(), warm.end());
    std::printf("block %s (%.2f MB weights): cold weights %.1f us, warm %.1f us (medians)\n", nb.layer,
                double(packed.size()) * 4e-6, cold[cold.size() / 2] * 1e6, warm[warm.size() / 2] * 1e6);
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
