// A small persistent pool: torch-free and OpenMP-free, so the extension never loads a
// second OpenMP runtime beside torch's. Work is split into contiguous static chunks; each
// output element is computed by exactly one chunk with the same arithmetic, so results are
// bit-identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace mnv3ext {

// Runs body(begin, end) over [0, tasks) on up to `threads` threads (the caller included).
// Calls arriving while the pool is busy (other Python threads) run serially in the caller.
void parallel_for(int64_t tasks, int threads,
                  const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace mnv3ext
