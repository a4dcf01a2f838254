// Peak multiply-add rate of one core with register operands only (12 independent FMA chains,
// best of 40 short stretches),
// for AVX2 (8 lanes) and AVX-512 (16 lanes): the compute ceiling the depthwise kernels are
// compared against (their inputs add at least one load per several FMAs). x86 only.
#include <immintrin.h>

#include <chrono>
#include <cstdio>

namespace {

template <typename V, V (*Fma)(V, V, V), V (*Set1)(float), float (*Sum)(V)>
double macs_per_second(int lanes) {
  // Distinct starting values: with equal ones the compiler merges the 12 identical chains into
  // one, and the loop measures one FMA's latency instead of the ports' throughput.
  V a0 = Set1(0.10f), a1 = Set1(0.11f), a2 = Set1(0.12f), a3 = Set1(0.13f), a4 = Set1(0.14f),
    a5 = Set1(0.15f), a6 = Set1(0.16f), a7 = Set1(0.17f), a8 = Set1(0.18f), a9 = Set1(0.19f),
    a10 = Set1(0.20f), a11 = Set1(0.21f);
  const V b = Set1(0.9999f), c = Set1(0.0001f);
  // The best of many short timed stretches: on a shared machine a long single run measures the
  // other tenants too; a stretch that ran undisturbed shows the ports' rate.
  const long iterations = 2000000;
  double best = 1e300;
  for (int rep = 0; rep < 40; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) {
      a0 = Fma(a0, b, c); a1 = Fma(a1, b, c); a2 = Fma(a2, b, c); a3 = Fma(a3, b, c);
      a4 = Fma(a4, b, c); a5 = Fma(a5, b, c); a6 = Fma(a6, b, c); a7 = Fma(a7, b, c);
      a8 = Fma(a8, b, c); a9 = Fma(a9, b, c); a10 = Fma(a10, b, c); a11 = Fma(a11, b, c);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (seconds < best) best = seconds;
  }
  volatile float sink = Sum(a0) + Sum(a1) + Sum(a2) + Sum(a3) + Sum(a4) + Sum(a5) + Sum(a6) +
                        Sum(a7) + Sum(a8) + Sum(a9) + Sum(a10) + Sum(a11);
  (void)sink;
  return double(iterations) * 12 * lanes / best;
}

__m256 fma256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
__m256 set256(float x) { return _mm256_set1_ps(x); }
float sum256(__m256 v) {
  float f[8];
  _mm256_storeu_ps(f, v);
  return f[0] + f[7];
}
__m512 fma512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m512 set512(float x) { return _mm512_set1_ps(x); }
float sum512(__m512 v) { return _mm512_reduce_add_ps(v); }

}  // namespace

int main() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    std::printf("avx2   FMA peak: %6.1f G multiply-adds/s\n",
                macs_per_second<__m256, fma256, set256, sum256>(8) / 1e9);
  if (__builtin_cpu_supports("avx512f"))
    std::printf("avx512 FMA peak: %6.1f G multiply-adds/s\n",
                macs_per_second<__m512, fma512, set512, sum512>(16) / 1e9);
}
