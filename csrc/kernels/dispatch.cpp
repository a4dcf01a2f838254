#include "dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace mnv3ext {
namespace {

#define MNV3EXT_TABLE(isa)                                                                  \
  KernelTable {                                                                             \
    #isa, isa::dwconv_nhwc_rows, isa::dwconv_nchw_planes, isa::plane_sum, isa::pixel_sum,  \
        isa::matvec, isa::scale_planes, isa::scale_pixels, isa::gemm_tiles,                 \
        isa::gemm_tile_name, isa::stem_rows                                                 \
  }

const KernelTable kScalar = MNV3EXT_TABLE(scalar);
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable kAvx2 = MNV3EXT_TABLE(avx2);
const KernelTable kAvx512 = MNV3EXT_TABLE(avx512);
#endif
#if defined(__aarch64__)
const KernelTable kNeon = MNV3EXT_TABLE(neon);
#endif

// Every compiled table with whether this CPU can run it, slowest first.
std::vector<std::pair<const KernelTable*, bool>> compiled_tables() {
  std::vector<std::pair<const KernelTable*, bool>> tables{{&kScalar, true}};
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  tables.push_back({&kAvx2, avx2});
  tables.push_back({&kAvx512, avx512});
#endif
#if defined(__aarch64__)
  tables.push_back({&kNeon, true});  // Advanced SIMD is mandatory in Armv8-A
#endif
  return tables;
}

const KernelTable& table_named(const std::string& name) {
  std::string known;
  for (const auto& [table, supported] : compiled_tables()) {
    if (name == table->name) {
      if (!supported)
        throw std::invalid_argument("MNV3EXT_ISA: this CPU does not support '" + name + "'");
      return *table;
    }
    known += (known.empty() ? "" : ", ") + std::string(table->name);
  }
  throw std::invalid_argument("MNV3EXT_ISA: unknown or not compiled ISA '" + name +
                              "' (this build has: " + known + ")");
}

std::atomic<const KernelTable*> active{nullptr};

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const auto& [table, supported] : compiled_tables())
    if (supported) names.push_back(table->name);
  return names;
}

std::string best_isa() { return available_isas().back(); }

const KernelTable& active_kernels() {
  const KernelTable* table = active.load(std::memory_order_acquire);
  if (table) return *table;
  const char* forced = std::getenv("MNV3EXT_ISA");
  const KernelTable& chosen =
      table_named(forced && *forced ? std::string(forced) : best_isa());
  active.store(&chosen, std::memory_order_release);
  return chosen;
}

void select_isa(const std::string& name) {
  active.store(&table_named(name), std::memory_order_release);
}

}  // namespace mnv3ext
