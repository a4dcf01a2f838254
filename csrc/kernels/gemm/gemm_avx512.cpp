// AVX-512 GEMM: 12 rows x 32 columns (2 panels) per microkernel, 24 zmm accumulators; the last
// three panels of an odd count in 8 x 48 tiles (24 accumulators too); narrow outputs (n <= 24,
// 33..40) in the k-pair tiles of gemm_narrow_avx512.inc.
#include <algorithm>

#include "kernels/simd_avx512.h"

namespace mnv3ext::avx512 {
namespace {
constexpr int kGemmMR = 12;
constexpr int kGemmOddMR = 8;
constexpr int kGemmOddNP = 3;
constexpr int kGemmNP = 2;
}  // namespace

#define MNV3EXT_GEMM_NARROW 1
#include "gemm.inc"
#include "gemm_narrow_avx512.inc"

const char* const gemm_tile_name = "gemm_12x32";

}  // namespace mnv3ext::avx512
