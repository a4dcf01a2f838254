// AVX2 + FMA GEMM: 6 rows x 16 columns (1 panel, 2 ymm) per microkernel, 12 ymm accumulators.
#include <algorithm>

#include "kernels/simd_avx2.h"

namespace mnv3ext::avx2 {
namespace {
constexpr int kGemmMR = 6;
constexpr int kGemmOddMR = 1;
constexpr int kGemmOddNP = 0;
constexpr int kGemmNP = 1;
}  // namespace

#include "gemm.inc"

const char* const gemm_tile_name = "gemm_6x16";
const StemRowsFn stem_rows = nullptr;  // conv2d_gemm's GEMM path runs the stem

}  // namespace mnv3ext::avx2
