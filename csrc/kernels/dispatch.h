// Run-time ISA selection: chosen once at load from CPU features, or forced with the
// environment variable MNV3EXT_ISA=scalar|avx2|avx512|neon.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace mnv3ext {

// ISAs compiled in and supported by this CPU, slowest first.
std::vector<std::string> available_isas();
// The best available ISA, ignoring MNV3EXT_ISA.
std::string best_isa();
// The table in use. The first call selects it (MNV3EXT_ISA or best_isa()) and throws
// std::invalid_argument for an unknown or unsupported MNV3EXT_ISA.
const KernelTable& active_kernels();
// Switches the table in use (tests, benchmarks); throws std::invalid_argument if unavailable.
void select_isa(const std::string& name);

}  // namespace mnv3ext
