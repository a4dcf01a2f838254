// Portable GEMM: 4 rows x 16 columns per tile, the same element order as the SIMD kernels
// (bias, then k products in k order).
#include <algorithm>

#include "kernels/activation.h"
#include "kernels/kernels.h"

namespace mnv3ext::scalar {

const char* const gemm_tile_name = "gemm_4x16";
const StemRowsFn stem_rows = nullptr;  // conv2d_gemm's GEMM path runs the stem

namespace {

constexpr int64_t kRows = 4;

void tile(const GemmArgs& g, const float* a, int64_t lda, int64_t row, int64_t rows, int64_t p) {
  const float* w = g.packed + p * (1 + g.k) * kGemmPanel;
  const int64_t cols = std::min<int64_t>(kGemmPanel, g.n - p * kGemmPanel);
  float acc[kRows][kGemmPanel];
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < kGemmPanel; ++j) acc[i][j] = w[j];
  for (int64_t kk = 0; kk < g.k; ++kk) {
    const float* wk = w + (1 + kk) * kGemmPanel;
    for (int64_t i = 0; i < rows; ++i) {
      const float ai = a[i * lda + (g.a_offsets ? g.a_offsets[kk] : kk)];
      for (int64_t j = 0; j < kGemmPanel; ++j) acc[i][j] += ai * wk[j];
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    float* c = g.c + (row + i) * g.ldc + p * kGemmPanel;
    const float* r = g.residual ? g.residual + (row + i) * g.ldr + p * kGemmPanel : nullptr;
    for (int64_t j = 0; j < cols; ++j) {
      const float x = apply_activation(g.activation, acc[i][j]);
      c[j] = r ? x + r[j] : x;
    }
  }
}

}  // namespace

void gemm_tiles(const GemmArgs& g, int64_t row_begin, int64_t row_end, int64_t panel_begin,
                int64_t panel_end) {
  const float* a = g.a + row_begin * g.lda;
  int64_t lda = g.lda;
  if (g.scale) {  // the gate applied once per row
    float* scaled = thread_scratch((row_end - row_begin) * g.k);
    for (int64_t i = 0; i < row_end - row_begin; ++i) {
      const float* s = g.scale + ((row_begin + i) / g.scale_rows) * g.k;
      for (int64_t kk = 0; kk < g.k; ++kk) scaled[i * g.k + kk] = a[i * g.lda + kk] * s[kk];
    }
    a = scaled;
    lda = g.k;
  }
  for (int64_t row = row_begin; row < row_end; row += kRows)
    for (int64_t p = panel_begin; p < panel_end; ++p)
      tile(g, a + (row - row_begin) * lda, lda, row, std::min(kRows, row_end - row), p);
}

}  // namespace mnv3ext::scalar
