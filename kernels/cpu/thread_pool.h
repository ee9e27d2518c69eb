// A fixed pool of worker threads for data-parallel kernel work. The calling thread takes part
// as thread 0, so ThreadPool(2) starts one extra thread. Work is split statically (a thread's
// share depends only on the task count and the thread count), which keeps results
// independent of timing.
//
// Workers spin for a while after each job before they sleep: long enough for the next job of
// a burst (the CPU backend's kernel calls arrive microseconds apart during a forward pass),
// short enough that an idle server does not burn its cores. A pool whose jobs come once per
// GPU step (the engine's sampling pool) asks for a short spin: spinning through the step
// would take CPUs from the threads that have work.
//
// Thread-safety: Run/ParallelFor must be called from one thread at a time (the engine thread).
#ifndef GLIMPSE_KERNELS_CPU_THREAD_POOL_H_
#define GLIMPSE_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace glimpse::kernels::cpu {

class ThreadPool {
 public:
  // How long a worker spins after a job, by default: the 20000 pauses it was first tuned
  // with on the CPU backend take about this long on the build machine's EPYC.
  static constexpr std::chrono::microseconds kDefaultSpin{500};

  explicit ThreadPool(int num_threads, std::chrono::microseconds spin = kDefaultSpin);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(thread_index) once on each thread, 0 being the caller; returns when all finished.
  void Run(const std::function<void(int)>& fn);

  // Splits [0, n) into num_threads() contiguous ranges and calls fn(begin, end) for each
  // non-empty one.
  template <typename Fn>
  void ParallelFor(int64_t n, Fn&& fn) {
    if (n <= 0) return;
    if (num_threads_ == 1 || n == 1) {
      fn(int64_t{0}, n);
      return;
    }
    Run([&](int t) {
      const int64_t begin = n * t / num_threads_;
      const int64_t end = n * (t + 1) / num_threads_;
      if (begin < end) fn(begin, end);
    });
  }

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  const std::chrono::nanoseconds spin_;
  std::vector<std::thread> workers_;
  // Incremented (release) to publish a new job; workers wait for it to change.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int)>* job_ = nullptr;  // Published by generation_.
};

// Default worker count: GLIMPSE_NUM_THREADS if set, else the CPUs this process may use.
int DefaultNumThreads();

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_THREAD_POOL_H_
