// Times the depthwise kernels directly (no Python, no dispatcher, one thread): for development
// of the kernels, beside the op-level benchmarks in bench/. Reads one layer per line on stdin:
//   name channels size kernel stride      (padding = kernel / 2, hardswish)
// Arguments: [repetitions] [isa|all] [nchw|nhwc|both] [warm|cold]. cold: before each timed call,
// an 8 MiB sweep evicts input and output from L2 (as the ops find them after other layers).
// Prints, per ISA and layout, the median microseconds and G multiply-adds per second.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/driver.h"

using namespace mnv3ext;

namespace {

double median_us(const std::vector<double>& v) {
  std::vector<double> s = v;
  std::nth_element(s.begin(), s.begin() + s.size() / 2, s.end());
  return s[s.size() / 2];
}

template <class F, class Before>
double time_us(F&& f, Before&& before, int reps) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    before();
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::micro>(b - a).count());
  }
  return median_us(t);
}

// A 64-byte aligned float buffer.
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n)
      : data_(static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64))),
        size_(n) {}
  ~AlignedFloats() { std::free(data_); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* data() { return data_; }
  float* begin() { return data_; }
  float* end() { return data_ + size_; }

 private:
  float* data_;
  int64_t size_;
};

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 200;
  std::vector<std::string> isas = available_isas();
  if (argc > 2 && std::string(argv[2]) != "all") isas = {argv[2]};
  const std::string layouts = argc > 3 ? argv[3] : "both";
  const bool cold = argc > 4 && std::string(argv[4]) == "cold";
  std::vector<float> sweep(cold ? (8 << 20) / sizeof(float) : 0);
  auto evict = [&] {
    for (size_t i = 0; i < sweep.size(); i += 16) sweep[i] += 1.0f;
  };
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream is(line);
    std::string name;
    int64_t c, size;
    int k, st;
    if (!(is >> name >> c >> size >> k >> st)) continue;
    const int p = k / 2;
    const DwConvShape s = make_dwconv_shape(1, c, size, size, k, k, st, st, 1, 1, p, p, p, p,
                                            Activation::kHardswish);
    // 64-byte aligned like torch's CPU allocations.
    AlignedFloats in(c * size * size), out(c * s.out_h * s.out_w);
    std::vector<float> w(c * k * k), b(c);
    for (auto& x : in) x = nd(rng);
    for (auto& x : w) x = nd(rng);
    for (auto& x : b) x = nd(rng);
    std::vector<float> packed(packed_dwconv_floats(c, k, k));
    pack_dwconv_weights(w.data(), b.data(), c, k, k, packed.data());
    const double macs = double(c) * s.out_h * s.out_w * k * k;
    for (const auto& isa : isas) {
      select_isa(isa);
      for (bool cl : {false, true}) {
        if (layouts != "both" && layouts != (cl ? "nhwc" : "nchw")) continue;
        const double us = time_us(
            [&] { dwconv2d(s, in.data(), packed.data(), out.data(), cl, 1); }, evict, reps);
        std::printf("%-28s %-7s %-4s %8.1f us %6.1f GMAC/s\n", name.c_str(), isa.c_str(),
                    cl ? "nhwc" : "nchw", us, macs / us / 1e3);
      }
    }
  }
}
