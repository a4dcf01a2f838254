// One core's memory bandwidth by access kind, at working-set sizes around the depthwise and SE
// layers: the ceilings the kernels are compared against. Per size it prints GB/s of
//   read    sum a buffer with 512-bit loads (what the SE kernels do to their FC weights);
//   write   fill a buffer with 512-bit stores (each line not in cache is read in first);
//   kernel  read one buffer and write another of the same size, as a depthwise layer does;
//   copy    std::memcpy of the same two buffers (glibc: `rep movsb`, which can write whole
//           lines without reading them in; what the op table's roofline copy does);
// each warm (repeated on hot buffers) and cold (after an 8 MiB sweep that evicts L2).
// Bytes counted: read = size, write = size, kernel and copy = 2 x size. Then the read rate of
// 10 MiB (a classifier's weights, from L3) and 64 MiB (from memory) on one thread and split over
// two (a worker that polls, so no thread start is timed): the ceiling of a memory-bound layer's
// 2-thread speed-up. x86 (AVX-512) only.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

float* aligned_floats(size_t n) {
  auto* p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
  std::fill(p, p + n, 1.0f);
  return p;
}

float read_all(const float* a, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

void write_all(float* a, size_t n, float v) {
  const __m512 x = _mm512_set1_ps(v);
  for (size_t i = 0; i + 16 <= n; i += 16) _mm512_store_ps(a + i, x);
}

void scale_into(const float* a, float* b, size_t n) {  // a depthwise layer's traffic pattern
  const __m512 k = _mm512_set1_ps(0.5f);
  for (size_t i = 0; i + 16 <= n; i += 16) _mm512_store_ps(b + i, _mm512_mul_ps(_mm512_load_ps(a + i), k));
}

template <class F>
double median_us(F&& f, bool cold, std::vector<float>& sweep, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    if (cold)
      for (size_t j = 0; j < sweep.size(); j += 16) sweep[j] += 1.0f;
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::micro>(b - a).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// One core reads [0, n/2) while a polling worker reads [n/2, n); microseconds per round.
double median_us_two_threads(const float* a, size_t n, int reps) {
  std::atomic<int> round{0}, done{0};
  std::atomic<bool> stop{false};
  volatile float worker_sink = 0;
  std::thread worker([&] {
    int seen = 0;
    while (!stop.load()) {
      if (round.load(std::memory_order_acquire) == seen) continue;
      ++seen;
      worker_sink = worker_sink + read_all(a + n / 2, n / 2);
      done.store(seen, std::memory_order_release);
    }
  });
  volatile float sink = 0;
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    round.store(i + 1, std::memory_order_release);
    sink = sink + read_all(a, n / 2);
    while (done.load(std::memory_order_acquire) != i + 1) {
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  stop = true;
  worker.join();
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 200;
  std::vector<float> sweep((8u << 20) / sizeof(float), 0.0f);
  volatile float sink = 0;
  std::printf("%-9s %-5s %8s %8s %8s %8s   (GB/s)\n", "size", "cache", "read", "write", "kernel", "copy");
  for (size_t kib : {128, 256, 512, 1024, 2048, 4096}) {
    const size_t n = kib * 1024 / sizeof(float);
    float* a = aligned_floats(n);
    float* b = aligned_floats(n);
    for (bool cold : {false, true}) {
      const double bytes = double(n) * sizeof(float);
      const double r = median_us([&] { sink = sink + read_all(a, n); }, cold, sweep, reps);
      const double w = median_us([&] { write_all(b, n, sink); }, cold, sweep, reps);
      const double k = median_us([&] { scale_into(a, b, n); }, cold, sweep, reps);
      const double c = median_us([&] { std::memcpy(b, a, n * sizeof(float)); }, cold, sweep, reps);
      std::printf("%5zu KiB %-5s %8.1f %8.1f %8.1f %8.1f\n", kib, cold ? "cold" : "warm",
                  bytes / r / 1e3, bytes / w / 1e3, 2 * bytes / k / 1e3, 2 * bytes / c / 1e3);
    }
    std::free(a);
    std::free(b);
  }
  std::printf("\n%-9s %10s %10s %8s   (read, GB/s)\n", "size", "1 thread", "2 threads", "ratio");
  for (size_t mib : {10, 64}) {
    const size_t n = mib << 18;
    float* a = aligned_floats(n);
    const double one = median_us([&] { sink = sink + read_all(a, n); }, false, sweep, reps);
    const double two = median_us_two_threads(a, n, reps);
    const double bytes = double(n) * sizeof(float);
    std::printf("%5zu MiB %10.1f %10.1f %8.2f\n", mib, bytes / one / 1e3, bytes / two / 1e3, one / two);
    std::free(a);
  }
}
