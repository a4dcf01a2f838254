#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#include <unistd.h>
#endif
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define MNV3EXT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define MNV3EXT_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define MNV3EXT_CPU_RELAX() ((void)0)
#endif

namespace mnv3ext {
namespace {

using Clock = std::chrono::steady_clock;

// How long a worker keeps polling for the next call after its last one, and the caller polls
// for the join, before blocking in the kernel. MNV3EXT_SPIN_US (read once), 0 = never spin.
int spin_microseconds_from_env() {
  const char* text = std::getenv("MNV3EXT_SPIN_US");
  if (!text || !*text) return 100;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || value < 0) return 100;
  return int(std::min<long>(value, 1000000));
}

// The CPU the calling thread runs on, -1 where unknown.
int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

// Polls `done()` for up to `spin` (pure cpu-relax for the first few microseconds, then giving
// the CPU away between polls so a spinning thread cannot starve another one on a shared
// core), calling `between()` after every batch of polls. Returns whether done() became true.
template <class Done, class Between>
bool spin_until(Done done, Clock::duration spin, Between between) {
  if (spin <= Clock::duration::zero()) return done();
  constexpr auto kPureSpin = std::chrono::microseconds(2);
  const Clock::time_point start = Clock::now();
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      MNV3EXT_CPU_RELAX();
    }
    const Clock::duration elapsed = Clock::now() - start;
    if (elapsed >= spin) return done();
    between();
    if (elapsed >= kPureSpin) std::this_thread::yield();
  }
}

// Between a seq_cst store and a seq_cst load of another atomic, which C++ already orders.
// qemu-user on x86 hosts does not: it lets an aarch64 store-release pass a later
// load-acquire, so a worker's "done" and the caller's "waiting" could both go unseen and the
// caller sleep forever. A full fence (dmb ish on aarch64), once per call, holds everywhere.
inline void store_load_fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// One fork-join at a time (the caller holds busy_). A call is published as one 64-bit state
// word: generation (32 bits) | chunk count (16) | next unclaimed chunk (16). Every thread,
// the caller included, claims chunks by compare-and-swap on that word, so a claim can never
// land in a call other than the one whose fields it then reads, and a worker that wakes late
// finds its call's chunks already claimed by the caller instead of making the caller wait.
// Chunk boundaries depend only on (tasks, chunks), never on which thread runs a chunk.
class ThreadPool {
 public:
  static constexpr int kMaxThreads = 1024;

  ThreadPool() : spin_(std::chrono::microseconds(spin_microseconds_from_env())) {}

  // Never destroyed (see pool()): workers block or spin until the process exits.
  ~ThreadPool() = delete;

  // Returns false (having done nothing) if another caller holds the pool.
  bool try_run(int64_t tasks, int threads, const std::function<void(int64_t, int64_t)>& body) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    ensure_workers(threads - 1);
    caller_cpu_.store(current_cpu(), std::memory_order_relaxed);
    body_ = &body;
    tasks_ = tasks;
    error_ = nullptr;
    pending_.store(threads, std::memory_order_relaxed);
    const uint64_t generation = (state_.load(std::memory_order_relaxed) >> 32) + 1;
    // seq_cst store, then seq_cst load of sleepers_: a worker either sees this generation
    // before it blocks or is counted in sleepers_ (it increments that before its last check).
    state_.store(generation << 32 | uint64_t(threads) << 16, std::memory_order_seq_cst);
    store_load_fence();
    const int sleeping = sleepers_.load(std::memory_order_seq_cst);
    if (sleeping > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      if (threads - 1 >= sleeping) {
        wake_.notify_all();
      } else {  // a pool grown by a wider call: wake only as many as there are chunks
        for (int i = 1; i < threads; ++i) wake_.notify_one();
      }
    }
    run_chunks(generation);
    join();
    body_ = nullptr;
    std::exception_ptr error = error_;
    error_ = nullptr;
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
    return true;
  }

 private:
  // Claims and runs chunks of call `generation` until none is left.
  void run_chunks(uint64_t generation) {
    uint64_t state = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((state >> 32) != (generation & 0xffffffffu)) return;
      const int64_t chunks = int64_t(state >> 16 & 0xffff), chunk = int64_t(state & 0xffff);
      if (chunk >= chunks) return;
      if (!state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      // The claimed chunk is not done, so the caller is still in this call: body_ and tasks_
      // are this call's.
      const int64_t begin = tasks_ * chunk / chunks, end = tasks_ * (chunk + 1) / chunks;
      try {
        if (begin < end) (*body_)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          caller_waiting_.load(std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        done_.notify_one();
      }
      state = state_.load(std::memory_order_acquire);
    }
  }

  void join() {
    auto finished = [&] { return pending_.load(std::memory_order_seq_cst) == 0; };
    if (spin_until(finished, spin_, [] {})) return;
    std::unique_lock<std::mutex> lock(mutex_);
    caller_waiting_.store(true, std::memory_order_seq_cst);
    store_load_fence();
    done_.wait(lock, finished);
    caller_waiting_.store(false, std::memory_order_relaxed);
  }

  // Called before the call is published: new workers start out waiting for it.
  void ensure_workers(int count) {
    const uint64_t current = state_.load(std::memory_order_relaxed) >> 32;
    while (int(workers_.size()) < count)
      workers_.emplace_back([this, current] { worker_loop(current); });
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      auto posted = [&] { return (state_.load(std::memory_order_seq_cst) >> 32) != seen; };
      if (!spin_until(posted, spin_, [&] { move_off_caller_cpu(); })) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, posted);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = state_.load(std::memory_order_acquire) >> 32;
      run_chunks(seen);
    }
  }

  // A worker that finds itself spinning on the CPU of the last caller only takes turns with it,
  // and the caller runs nearly every chunk itself. Measured on a 2-vCPU KVM guest after the VM
  // had idled for tens of milliseconds: wake-ups put the worker on the caller's vCPU (likely
  // because the halted other vCPU does not count as idle to the guest scheduler), and as a
  // spinning thread never blocks, it stayed there: 2-thread calls ran at 1-thread speed.
  // Blocking and waking again landed on the same vCPU. So the worker moves itself: its
  // affinity becomes the main thread's CPUs minus the caller's (applied by the kernel at once),
  // and it moves again only if it meets the caller again.
  void move_off_caller_cpu() const {
#if defined(__linux__)
    const int caller = caller_cpu_.load(std::memory_order_relaxed);
    if (caller < 0 || caller >= CPU_SETSIZE || current_cpu() != caller) return;
    cpu_set_t target;
    if (sched_getaffinity(getpid(), sizeof(target), &target) != 0) return;
    CPU_CLR(caller, &target);
    if (CPU_COUNT(&target) == 0) return;  // nowhere else to go
    sched_setaffinity(0, sizeof(target), &target);
#endif
  }

  const Clock::duration spin_;
  std::atomic<int> caller_cpu_{-1};  // the CPU of the last call's caller
  std::atomic<bool> busy_{false};  // held by the caller for a whole parallel_for
  alignas(64) std::atomic<uint64_t> state_{0};
  alignas(64) std::atomic<int> pending_{0};  // chunks not yet finished
  std::atomic<bool> caller_waiting_{false};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;  // for the two condition variables and error_
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t tasks_ = 0;
  std::exception_ptr error_;
};

// Intentionally leaked: a static destructor would have to stop and join the workers at exit,
// and in a forked child (which inherits the object but not its threads) it could not.
ThreadPool& pool() {
  static ThreadPool* const instance = new ThreadPool;
  return *instance;
}

// A forked child (e.g. a DataLoader worker) inherits the pool object but not its threads: it
// runs everything serially. Set by a fork handler rather than comparing getpid() per call
// (glibc no longer caches it: a system call each time).
std::atomic<bool> in_forked_child{false};
const int fork_handler_registered =
    pthread_atfork(nullptr, nullptr, [] { in_forked_child.store(true, std::memory_order_relaxed); });

}  // namespace

void parallel_for(int64_t tasks, int threads,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (tasks <= 0) return;
  threads = int(std::max<int64_t>(1, std::min<int64_t>({threads, tasks, ThreadPool::kMaxThreads})));
  if (threads == 1 || in_forked_child.load(std::memory_order_relaxed) ||
      !pool().try_run(tasks, threads, body))
    body(0, tasks);
}

}  // namespace mnv3ext
