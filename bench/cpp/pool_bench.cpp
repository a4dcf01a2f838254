// Fork-join cost of the worker pool (parallel_for in csrc/kernels/thread_pool.cpp), against the
// pool it replaced (a mutex + condition-variable hand-off, reproduced below as `legacy`), in
// one process, alternating the two in short blocks so both see the same machine state.
//
//   mnv3ext_pool_bench [threads=2] [rounds=20]      (MNV3EXT_SPIN_US sets the new pool's spin)
//
// Per pool, median (and 90th percentile) microseconds per parallel_for call of:
//   empty b2b   an empty body, calls back to back (a model's consecutive layers)
//   empty gap   an empty body, each call after the caller slept 1 ms (workers asleep)
//   busy gap    an empty body, each call after the caller computed for 1 ms (a torch op)
//   work N us   a body of N us of serial arithmetic split `threads` ways, back to back; the
//               serial time of the same work is printed beside it
//   worker %    chunks of the timed split calls run by a worker, per call, over (threads - 1):
//               100% = the workers ran their share; can exceed 100% (a polling worker may claim
//               chunk 0 before the caller does), ~0% = the caller ran everything (no free core)
// No assertions: the numbers vary with the host, compare the two columns of one run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/thread_pool.h"

namespace legacy {

// The pool as of the commit before the spinning pool (mutex + condition variables, fixed chunk
// per worker, caller waits for every worker), minus its fork check.
class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  bool try_run(int64_t tasks, int threads, const std::function<void(int64_t, int64_t)>& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    ensure_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      tasks_ = tasks;
      chunks_ = threads;
      pending_ = threads - 1;
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    body_ = nullptr;
    return true;
  }

 private:
  void run_chunk(int chunk) {
    const int64_t begin = tasks_ * chunk / chunks_, end = tasks_ * (chunk + 1) / chunks_;
    if (begin < end) (*body_)(begin, end);
  }

  void ensure_workers(int count) {
    while (int(workers_.size()) < count) {
      const int index = int(workers_.size()) + 1;
      workers_.emplace_back([this, index] { worker_loop(index); });
    }
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (index >= chunks_) continue;
      lock.unlock();
      run_chunk(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex busy_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t tasks_ = 0;
  int chunks_ = 1, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

void parallel_for(int64_t tasks, int threads, const std::function<void(int64_t, int64_t)>& body) {
  static ThreadPool pool;
  if (tasks <= 0) return;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, tasks)));
  if (threads == 1 || !pool.try_run(tasks, threads, body)) body(0, tasks);
}

}  // namespace legacy

namespace {

using Clock = std::chrono::steady_clock;
using ParallelFor = void (*)(int64_t, int, const std::function<void(int64_t, int64_t)>&);

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

struct Stats {
  std::vector<double> samples;
  double quantile(double q) {
    std::vector<double> v = samples;
    if (v.empty()) return 0;
    const size_t k = std::min(v.size() - 1, size_t(q * double(v.size())));
    std::nth_element(v.begin(), v.begin() + k, v.end());
    return v[k];
  }
};

volatile double g_sink;

// Serial arithmetic of a calibrated length (a dependent chain, so it cannot vectorise away).
double spin_work(int64_t iterations) {
  double x = 1.0;
  for (int64_t i = 0; i < iterations; ++i) x = x * 0.999999 + 1e-7;
  return x;
}

int64_t iterations_per_us() {
  const int64_t n = 2000000;
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    g_sink = spin_work(n);
    best = std::min(best, us_since(t0));
  }
  return std::max<int64_t>(1, int64_t(double(n) / best));
}

void busy_for_us(double us) {
  const auto t0 = Clock::now();
  double x = 0;
  while (us_since(t0) < us) x += spin_work(100);
  g_sink = x;
}

struct Case {
  const char* name;
  Stats stats[2];
  double serial_us = 0;  // for the work cases
};

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 20;
  const char* spin_env = std::getenv("MNV3EXT_SPIN_US");
  const int64_t per_us = iterations_per_us();
  std::printf("pool_bench: threads=%d rounds=%d MNV3EXT_SPIN_US=%s hardware_concurrency=%u\n",
              threads, rounds, spin_env ? spin_env : "(unset: default)",
              std::thread::hardware_concurrency());

  const ParallelFor pools[2] = {legacy::parallel_for, mnv3ext::parallel_for};
  const char* pool_names[2] = {"before (mutex+condvar)", "after (spin, then block)"};
  const std::function<void(int64_t, int64_t)> empty = [](int64_t, int64_t) {};
  std::atomic<int64_t> worker_chunks[2] = {{0}, {0}};
  int64_t split_chunks[2] = {0, 0};
  const std::thread::id main_id = std::this_thread::get_id();
  std::atomic<bool> counting{false};  // only the timed split calls' chunks

  const double work_us[] = {5, 10, 20, 40};
  constexpr int kWork = sizeof(work_us) / sizeof(work_us[0]);
  Case empty_b2b{"empty b2b"}, empty_gap{"empty gap 1ms sleep"}, busy_gap{"empty gap 1ms busy"};
  Case work[kWork] = {{"work 5 us"}, {"work 10 us"}, {"work 20 us"}, {"work 40 us"}};
  Stats serial[kWork];

  for (int p = 0; p < 2; ++p) pools[p](threads, threads, empty);  // start the workers
  for (int round = 0; round < rounds; ++round) {
    for (int p = 0; p < 2; ++p) {
      const ParallelFor run = pools[p];
      for (int i = 0; i < 50; ++i) run(threads, threads, empty);  // warm
      for (int i = 0; i < 1000; ++i) {
        const auto t0 = Clock::now();
        run(threads, threads, empty);
        empty_b2b.stats[p].samples.push_back(us_since(t0));
      }
      for (int i = 0; i < 10; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        auto t0 = Clock::now();
        run(threads, threads, empty);
        empty_gap.stats[p].samples.push_back(us_since(t0));
        busy_for_us(1000);
        t0 = Clock::now();
        run(threads, threads, empty);
        busy_gap.stats[p].samples.push_back(us_since(t0));
      }
      for (int w = 0; w < kWork; ++w) {
        const int64_t total = int64_t(work_us[w] * double(per_us));
        const std::function<void(int64_t, int64_t)> body = [&](int64_t begin, int64_t end) {
          if (counting && std::this_thread::get_id() != main_id) worker_chunks[p] += 1;
          g_sink = spin_work(total * (end - begin) / threads);
        };
        for (int i = 0; i < 5; ++i) run(threads, threads, body);  // warm
        counting = true;
        for (int i = 0; i < 100; ++i) {
          auto t0 = Clock::now();
          run(threads, threads, body);
          work[w].stats[p].samples.push_back(us_since(t0));
          split_chunks[p] += threads - 1;
          counting = false;
          if (p == 1) {
            t0 = Clock::now();
            body(0, threads);
            serial[w].samples.push_back(us_since(t0));
          }
          counting = true;
        }
        counting = false;
      }
    }
  }

  std::printf("%-22s %12s %12s %12s %12s %10s\n", "us per call", "before p50", "before p90",
              "after p50", "after p90", "serial p50");
  auto row = [&](Case& c, double serial_us) {
    std::printf("%-22s %12.2f %12.2f %12.2f %12.2f", c.name, c.stats[0].quantile(0.5),
                c.stats[0].quantile(0.9), c.stats[1].quantile(0.5), c.stats[1].quantile(0.9));
    if (serial_us > 0) std::printf(" %10.2f", serial_us);
    std::printf("\n");
  };
  row(empty_b2b, 0);
  row(empty_gap, 0);
  row(busy_gap, 0);
  for (int w = 0; w < kWork; ++w) row(work[w], serial[w].quantile(0.5));
  for (int p = 0; p < 2; ++p)
    std::printf("%s: workers ran %.1f%% of (threads - 1) chunks per split call\n", pool_names[p],
                100.0 * double(worker_chunks[p].load()) / double(std::max<int64_t>(1, split_chunks[p])));
  return 0;
}
