// Times the squeeze-excite C++ path directly (no Python, no dispatcher): the whole
// squeeze_excite() call per layout and each of its kernels alone, for development of the SE
// kernels. Reads one layer per line on stdin:
//   name channels size squeeze         (relu, hardsigmoid, biases; batch 1)
// e.g. python3 -c "from mnv3ext.shapes import ALL_SE as L; [print(l.name, l.channels, l.size,
// l.squeeze) for l in L]" | build/se/mnv3ext_se_bench
// Arguments: [repetitions] [isa|all] [threads] [warm|cold]. cold: before each timed call the
// caches are flushed by an 8 MiB sweep and the input re-read (weights cold, input warm). Prints, per ISA, median microseconds of:
//   nchw / nhwc  the whole call;  sum: plane_sum or pixel_sum;  fc1 / fc2: the matvecs;
//   scale: scale_planes or scale_pixels;  copy: memcpy of the input to the output;
//   roof: (input + output + weights + biases) bytes / the bandwidth model of the op table.
// Each timed call runs on the same (warm) buffers, as a model's steady state does for weights.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/driver.h"

using namespace mnv3ext;

namespace {

double median_us(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Before each timed call (when set): evict the caches, then re-read `hot`, so that the call
// finds its input in cache but the weights cold, as inside a model.
std::vector<float>* g_evict = nullptr;
const float* g_hot = nullptr;
int64_t g_hot_floats = 0;
volatile float g_sink;

void prepare_caches() {
  if (!g_evict) return;
  float acc = 0;
  for (float& x : *g_evict) acc += x, x = acc * 0.5f;
  for (int64_t i = 0; i < g_hot_floats; i += 16) acc += g_hot[i];
  g_sink = acc;
}

template <class F>
double time_us(F&& f, int reps) {
  for (int i = 0; i < 5; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    prepare_caches();
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::micro>(b - a).count());
  }
  return median_us(t);
}

// A 64-byte aligned float buffer, like torch's CPU allocations.
struct AlignedFloats {
  explicit AlignedFloats(int64_t n)
      : data(static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64))) {}
  ~AlignedFloats() { std::free(data); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* data;
};

// Copy bandwidth (GB/s) by working-set size: the model of the op table's roofline.
double bandwidth_gbs(double bytes) {
  const double mib = bytes / (1 << 20);
  if (mib <= 1.0) return 60.0;
  if (mib <= 2.5) return 30.0;
  return 21.0;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 300;
  std::vector<std::string> isas = available_isas();
  if (argc > 2 && std::string(argv[2]) != "all") isas = {argv[2]};
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  std::vector<float> evict;
  if (argc > 4 && std::string(argv[4]) == "cold") evict.assign(2 << 20, 1.0f), g_evict = &evict;
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  std::printf("%-26s %-7s %7s %7s | %6s %6s %6s %6s | %6s %6s\n", "layer", "isa", "nchw", "nhwc",
              "sum", "fc1", "fc2", "scale", "copy", "roof");
  std::string line;
  double total[2] = {0, 0}, total_roof = 0;
  while (std::getline(std::cin, line)) {
    std::istringstream is(line);
    std::string name;
    int64_t C, size, S;
    if (!(is >> name >> C >> size >> S)) continue;
    const int64_t HW = size * size;
    const SeShape s =
        make_se_shape(1, C, HW, S, Activation::kRelu, Activation::kHardsigmoid);
    AlignedFloats in(C * HW), out(C * HW), w1(S * C), b1(S), w2(C * S), b2(C), vec(C + S),
        y(C + S);
    for (int64_t i = 0; i < C * HW; ++i) in.data[i] = ud(rng) + 0.5f;
    for (int64_t i = 0; i < S * C; ++i) w1.data[i] = ud(rng), w2.data[i] = ud(rng);
    for (int64_t i = 0; i < S; ++i) b1.data[i] = ud(rng);
    for (int64_t i = 0; i < C; ++i) b2.data[i] = ud(rng);
    for (int64_t i = 0; i < C + S; ++i) vec.data[i] = ud(rng);
    const double bytes = 4.0 * (2 * C * HW + 2 * S * C + S + C);
    const double roof = bytes / bandwidth_gbs(bytes) / 1e3;
    g_hot = in.data, g_hot_floats = C * HW;
    for (const auto& isa : isas) {
      select_isa(isa);
      const KernelTable& k = active_kernels();
      double full[2];
      for (int cl = 0; cl < 2; ++cl)
        full[cl] = time_us(
            [&] {
              squeeze_excite(s, in.data, w1.data, b1.data, w2.data, b2.data, out.data, cl == 1,
                             threads);
            },
            reps);
      const double sum_nchw = time_us([&] { k.plane_sum(in.data, C, HW, y.data); }, reps);
      const double sum_nhwc = time_us([&] { k.pixel_sum(in.data, HW, C, C, y.data); }, reps);
      const double fc1 = time_us([&] { k.matvec(w1.data, b1.data, vec.data, S, C, y.data); }, reps);
      const double fc2 = time_us([&] { k.matvec(w2.data, b2.data, vec.data, C, S, y.data); }, reps);
      const double sc_nchw =
          time_us([&] { k.scale_planes(in.data, vec.data, out.data, C, HW); }, reps);
      const double sc_nhwc =
          time_us([&] { k.scale_pixels(in.data, vec.data, out.data, HW, C); }, reps);
      const double copy =
          time_us([&] { std::memcpy(out.data, in.data, sizeof(float) * C * HW); }, reps);
      std::printf("%-26s %-7s %7.1f %7.1f | %6.1f %6.1f %6.1f %6.1f | %6.1f %6.1f  (nchw)\n",
                  name.c_str(), isa.c_str(), full[0], full[1], sum_nchw, fc1, fc2, sc_nchw, copy,
                  roof);
      std::printf("%-26s %-7s %7s %7s | %6.1f %6.1f %6.1f %6.1f |                (nhwc)\n", "",
                  "", "", "", sum_nhwc, fc1, fc2, sc_nhwc);
      if (isa == isas.back() && name.rfind("large", 0) == 0)
        total[0] += full[0], total[1] += full[1], total_roof += roof;
    }
  }
  if (total_roof > 0)
    std::printf("large total (last ISA): nchw %.1f us, nhwc %.1f us, roofline %.1f us\n", total[0],
                total[1], total_roof);
}
