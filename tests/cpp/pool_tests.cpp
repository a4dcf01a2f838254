// Tests of parallel_for (csrc/kernels/thread_pool.cpp): every task runs exactly once, split
// calls use exactly the static chunks [tasks * i / n, tasks * (i + 1) / n), for many (tasks,
// threads) pairs; back to back, after the workers went to sleep, from several std::threads at
// once, nested, with a throwing body, and in a forked child (which must run serially and exit
// cleanly). No timing assertions. Prints `N passed, M failed` last; non-zero exit on failure.
// ctest runs it with the default spin and with MNV3EXT_SPIN_US=0 (workers block at once).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/thread_pool.h"

using mnv3ext::parallel_for;

namespace {

std::atomic<int> g_passed{0}, g_failed{0};
std::mutex g_print;

void record(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
    return;
  }
  if (++g_failed <= 30) {
    std::lock_guard<std::mutex> lock(g_print);
    std::printf("FAIL %s\n", what.c_str());
  }
}

std::string label(int64_t tasks, int threads, const char* how) {
  return std::string(how) + " tasks=" + std::to_string(tasks) + " threads=" + std::to_string(threads);
}

// One parallel_for; checks coverage and the chunking. `may_be_serial`: the call may lose the
// pool to another caller (or run nested / in a forked child) and then runs as one chunk.
void check_call(int64_t tasks, int threads, bool may_be_serial, const char* how,
                bool want_serial = false) {
  std::unique_ptr<std::atomic<int>[]> hits(new std::atomic<int>[size_t(std::max<int64_t>(tasks, 1))]);
  for (int64_t i = 0; i < tasks; ++i) hits[i].store(0);
  std::mutex ranges_mutex;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::atomic<int> off_caller{0};
  const std::thread::id caller = std::this_thread::get_id();
  parallel_for(tasks, threads, [&](int64_t begin, int64_t end) {
    if (std::this_thread::get_id() != caller) ++off_caller;
    for (int64_t i = begin; i < end; ++i)
      if (i >= 0 && i < tasks) hits[i].fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(ranges_mutex);
    ranges.emplace_back(begin, end);
  });
  bool once = true;
  for (int64_t i = 0; i < tasks; ++i) once = once && hits[i].load() == 1;
  record(once, label(tasks, threads, how) + ": every task exactly once");

  std::sort(ranges.begin(), ranges.end());
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>({threads, tasks, 1024}));
  std::vector<std::pair<int64_t, int64_t>> chunks;
  for (int64_t i = 0; i < n && tasks > 0; ++i) {
    const int64_t begin = tasks * i / n, end = tasks * (i + 1) / n;
    if (begin < end) chunks.emplace_back(begin, end);
  }
  const std::vector<std::pair<int64_t, int64_t>> whole =
      tasks > 0 ? std::vector<std::pair<int64_t, int64_t>>{{0, tasks}}
                : std::vector<std::pair<int64_t, int64_t>>{};
  bool chunked = ranges == chunks || ((may_be_serial || want_serial) && ranges == whole);
  if (want_serial) chunked = chunked && off_caller.load() == 0;
  record(chunked, label(tasks, threads, how) + ": static chunks (" + std::to_string(ranges.size()) +
                      " ranges)");
}

const int64_t kTasks[] = {0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 100, 255, 1000, 4097, 100000};
const int kThreads[] = {1, 2, 3, 4, 5, 8, 16, 64};

void test_single_caller() {
  for (int64_t tasks : kTasks)
    for (int threads : kThreads) check_call(tasks, threads, false, "single");
  // Back to back (workers spinning), then after gaps long enough for them to block.
  for (int i = 0; i < 300; ++i) check_call(64, 2 + i % 3, false, "back-to-back");
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(i % 2 ? 2 : 0) +
                                std::chrono::microseconds(137 * i));
    check_call(1000, 2 + i % 4, false, "after a gap");
  }
}

void test_concurrent_callers() {
  constexpr int kCallers = 4;
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([c] {
      for (int round = 0; round < 150; ++round) {
        const int64_t tasks = kTasks[(c * 7 + round) % (sizeof(kTasks) / sizeof(kTasks[0]))] % 5000;
        const int threads = kThreads[(c + round) % (sizeof(kThreads) / sizeof(kThreads[0]))];
        check_call(tasks, threads, true, "concurrent");
        if (round % 37 == c) std::this_thread::sleep_for(std::chrono::microseconds(300));
      }
    });
  }
  for (auto& t : callers) t.join();
}

void test_nested() {
  std::atomic<int64_t> inner_total{0};
  std::atomic<int> inner_off_thread{0};
  parallel_for(8, 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const std::thread::id outer = std::this_thread::get_id();
      parallel_for(100, 4, [&](int64_t b, int64_t e) {
        if (std::this_thread::get_id() != outer) ++inner_off_thread;
        inner_total += e - b;
      });
    }
  });
  record(inner_total.load() == 800, "nested: every inner task once");
  record(inner_off_thread.load() == 0, "nested: inner calls run serially in their thread");
  check_call(1000, 4, false, "after nested");
}

void test_exception() {
  std::atomic<int64_t> ran{0};
  bool caught = false;
  try {
    parallel_for(4000, 4, [&](int64_t begin, int64_t end) {
      ran += end - begin;
      if (begin <= 3000 && 3000 < end) throw std::runtime_error("chunk failed");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "chunk failed";
  }
  record(caught, "exception: rethrown in the caller");
  record(ran.load() == 4000, "exception: the other chunks still ran");
  check_call(1000, 4, false, "after exception");
}

void test_fork() {
  check_call(1000, 4, false, "before fork");  // the workers exist and have just run
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    // The child has the pool object but not its threads: calls must run serially here and
    // the process must exit normally (no static destructor joining absent threads).
    const int before = g_failed.load();
    for (int threads : {2, 4, 16}) check_call(1000, threads, false, "in forked child", true);
    check_call(0, 4, false, "in forked child", true);
    std::fflush(stdout);
    std::exit(g_failed.load() == before ? 0 : 1);
  }
  int status = 0;
  const bool waited = child > 0 && waitpid(child, &status, 0) == child;
  record(waited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
         "fork: the child's calls covered every task serially and it exited cleanly");
  check_call(1000, 4, false, "parent after fork");
}

// Names each part before it runs (unbuffered), so a hang under ctest's timeout shows where.
void part(const char* name, void (*run)()) {
  std::printf("-- %s\n", name);
  std::fflush(stdout);
  run();
}

void test_clamped_then_narrow() {
  // Wider than the pool may grow (1024 threads): clamped; then narrow calls on a pool of many
  // workers (only as many are woken as there are chunks).
  check_call(100000, 2000, false, "clamped");
  for (int i = 0; i < 50; ++i) check_call(1000, 2 + i % 2, false, "narrow on a wide pool");
}

}  // namespace

int main() {
  const char* spin = std::getenv("MNV3EXT_SPIN_US");
  std::printf("pool_tests (MNV3EXT_SPIN_US=%s)\n", spin ? spin : "default");
  part("single caller", test_single_caller);
  part("concurrent callers", test_concurrent_callers);
  part("nested", test_nested);
  part("exception", test_exception);
  part("fork", test_fork);
  part("single caller again", test_single_caller);
  part("clamped, then narrow", test_clamped_then_narrow);
  std::printf("%d passed, %d failed\n", g_passed.load(), g_failed.load());
  return g_failed.load() == 0 ? 0 : 1;
}
