// How close the AVX-512 NHWC depthwise group kernels (dwconv_nhwc.inc) come to the FMA ports'
// bound with every byte in L1, apart from the memory hierarchy: one group (R output rows x 7
// pixels of one 16-channel tile, hardswish) called over and over on the same 64-byte aligned
// rows. Bound = (FMAs + 5 hardswish ops per output vector) x the time of one FMA, measured in
// this process between the kernel runs. Prints, per kernel, ns per group and the bound's share of
// it, for C = 64 (pixels on cache-line boundaries) and C = 72 (every other pixel's tile straddles
// two lines, as in the 72/88/120/184/200-channel layers). No arguments. On a shared host run it
// several times: in its slow phases the kernels lose speed while the FMA loop does not.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kernels/kernels.h"
#include "kernels/simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {
constexpr int kNhwcMaxRows = 3;  // as in dwconv_nhwc_avx512.cpp
constexpr int kVectorRegisters = 32;
}  // namespace
#include "kernels/dwconv_nhwc.inc"
}  // namespace mnv3ext::avx512

using namespace mnv3ext;
using namespace mnv3ext::avx512;

namespace {

// ns per 512-bit FMA at full throughput: 12 independent chains in registers.
__attribute__((noinline)) double fma_ns() {
  // Distinct starting values: with equal ones the compiler merges the 12 identical chains into
  // one, and the loop measures one FMA's latency instead of the ports' throughput.
  __m512 a0 = _mm512_set1_ps(0.10f), a1 = _mm512_set1_ps(0.11f), a2 = _mm512_set1_ps(0.12f),
         a3 = _mm512_set1_ps(0.13f), a4 = _mm512_set1_ps(0.14f), a5 = _mm512_set1_ps(0.15f),
         a6 = _mm512_set1_ps(0.16f), a7 = _mm512_set1_ps(0.17f), a8 = _mm512_set1_ps(0.18f),
         a9 = _mm512_set1_ps(0.19f), a10 = _mm512_set1_ps(0.20f), a11 = _mm512_set1_ps(0.21f);
  const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
  const long n = 2000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i) {
    a0 = _mm512_fmadd_ps(a0, b, c); a1 = _mm512_fmadd_ps(a1, b, c);
    a2 = _mm512_fmadd_ps(a2, b, c); a3 = _mm512_fmadd_ps(a3, b, c);
    a4 = _mm512_fmadd_ps(a4, b, c); a5 = _mm512_fmadd_ps(a5, b, c);
    a6 = _mm512_fmadd_ps(a6, b, c); a7 = _mm512_fmadd_ps(a7, b, c);
    a8 = _mm512_fmadd_ps(a8, b, c); a9 = _mm512_fmadd_ps(a9, b, c);
    a10 = _mm512_fmadd_ps(a10, b, c); a11 = _mm512_fmadd_ps(a11, b, c);
  }
  const auto t1 = std::chrono::steady_clock::now();
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                    _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
      _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / (double(n) * 12);
}

struct Kernel {
  const char* name;
  GroupFn fn;
  int k, rows;
};

constexpr int kPixels = 7;
const Kernel kKernels[] = {
    {"3x3 s1, 1 row", nhwc_group<3, 3, 1, 1, kPixels, 1, Reads::kInterior>, 3, 1},
    {"3x3 s1, 2 rows", nhwc_group<3, 3, 1, 1, kPixels, 2, Reads::kInterior>, 3, 2},
    {"3x3 s1, 3 rows", nhwc_group<3, 3, 1, 1, kPixels, 3, Reads::kInterior>, 3, 3},
    {"5x5 s1, 1 row", nhwc_group<5, 5, 1, 1, kPixels, 1, Reads::kInterior>, 5, 1},
    {"5x5 s1, 2 rows", nhwc_group<5, 5, 1, 1, kPixels, 2, Reads::kInterior>, 5, 2},
};
constexpr int kNumKernels = sizeof(kKernels) / sizeof(kKernels[0]);

// Minimum ns per group call of each kernel on C-channel rows 28 pixels wide (interior groups at
// pixels 7 and 14, channel tiles 0 and 16: at most ~20 KiB of lines, well inside a 32 KiB L1),
// alternated with the FMA reference.
void run(int64_t channels, double* ns, double& fma) {
  const int64_t width = 28, padded = (channels + 15) / 16 * 16;
  const int64_t row_floats = width * channels, input_rows = 8;
  float* input = static_cast<float*>(std::aligned_alloc(64, input_rows * row_floats * 4));
  float* output = static_cast<float*>(std::aligned_alloc(64, kMaxRows * row_floats * 4));
  float* packed = static_cast<float*>(std::aligned_alloc(64, 26 * padded * 4));
  for (int64_t i = 0; i < input_rows * row_floats; ++i) input[i] = float(i % 13) * 0.1f - 0.6f;
  for (int64_t i = 0; i < 26 * padded; ++i) packed[i] = float(i % 7) * 0.05f;
  RowTile tile{};
  for (int i = 0; i < kMaxInputRows; ++i) tile.rows[i] = input + (i % input_rows) * row_floats;
  for (int r = 0; r < kMaxRows; ++r) tile.out[r] = output + r * row_floats;
  tile.packed = packed;
  tile.padded = padded;
  tile.channels = channels;
  tile.in_w = width;
  tile.pad_left = 2;
  tile.activation = Activation::kHardswish;
  fma = 1e9;
  for (int k = 0; k < kNumKernels; ++k) ns[k] = 1e9;
  for (int round = 0; round < 15; ++round) {
    fma = std::min(fma, fma_ns());
    for (int k = 0; k < kNumKernels; ++k) {
      const int calls = 100000;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < calls; ++i) kKernels[k].fn(tile, kPixels * (1 + (i & 1)), (i >> 1 & 1) * 16);
      const auto t1 = std::chrono::steady_clock::now();
      ns[k] = std::min(ns[k], std::chrono::duration<double, std::nano>(t1 - t0).count() / calls);
    }
  }
  std::free(input);
  std::free(output);
  std::free(packed);
}

}  // namespace

int main() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("no AVX-512 on this CPU\n");
    return 0;
  }
  std::printf("%-16s %8s %14s %8s %14s %8s\n", "group kernel", "bound", "C=64 ns/group", "share",
              "C=72 ns/group", "share");
  double aligned[kNumKernels], straddling[kNumKernels], fma_aligned, fma_straddling;
  run(64, aligned, fma_aligned);
  run(72, straddling, fma_straddling);
  const double fma = std::min(fma_aligned, fma_straddling);
  for (int k = 0; k < kNumKernels; ++k) {
    const Kernel& kn = kKernels[k];
    const double ops = kn.rows * kPixels * (kn.k * kn.k + 5);
    const double bound = ops * fma;
    std::printf("%-16s %6.1f ns %11.1f ns %7.0f%% %11.1f ns %7.0f%%\n", kn.name, bound, aligned[k],
                100 * bound / aligned[k], straddling[k], 100 * bound / straddling[k]);
  }
  std::printf("one 512-bit FMA: %.3f ns (%.1f G multiply-adds/s)\n", fma, 16 / fma);
}
