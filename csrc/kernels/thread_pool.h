// A small persistent pool: torch-free and OpenMP-free, so the extension never loads a
// second OpenMP runtime beside torch's. Work is split into contiguous static chunks; each
// output element is computed by exactly one chunk with the same arithmetic, so results are
// bit-identical for any thread count.
//
// Fork-join cost: after a call the workers poll for the next one for MNV3EXT_SPIN_US
// microseconds (default 100, read once; 0 = block at once) before blocking on a condition
// variable, and the caller polls for the join as long before blocking, so back-to-back calls
// (a model's layers) hand off in about a microsecond without system calls. Chunks are claimed
// atomically by whichever thread comes first, the caller included: a worker that is asleep or
// descheduled delays a call by no more than its wake-up system call, never by its latency.
#pragma once

#include <cstdint>
#include <functional>

namespace mnv3ext {

// Runs body(begin, end) over [0, tasks) on up to `threads` threads (the caller included).
// Split calls run the chunks [tasks * i / n, tasks * (i + 1) / n) for i < n = min(threads,
// tasks), whichever thread runs each. Calls arriving while the pool is busy (other Python threads, or a body
// calling parallel_for) and calls in a forked child run serially in the caller. An exception
// thrown by body is rethrown in the caller after every chunk has finished.
void parallel_for(int64_t tasks, int threads,
                  const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace mnv3ext
