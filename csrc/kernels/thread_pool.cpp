#include "thread_pool.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

namespace mnv3ext {
namespace {

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

  // Returns false (having done nothing) if another caller holds the pool.
  bool try_run(int64_t tasks, int threads,
               const std::function<void(int64_t, int64_t)>& body) {
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

  std::mutex busy_;   // held by the caller for a whole parallel_for
  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t tasks_ = 0;
  int chunks_ = 1, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

ThreadPool& pool() {
  static ThreadPool instance;
  return instance;
}

// A forked child (e.g. a DataLoader worker) inherits the pool object but not its threads.
const pid_t pool_owner = getpid();

}  // namespace

void parallel_for(int64_t tasks, int threads,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (tasks <= 0) return;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, tasks)));
  if (threads == 1 || getpid() != pool_owner || !pool().try_run(tasks, threads, body)) body(0, tasks);
}

}  // namespace mnv3ext
