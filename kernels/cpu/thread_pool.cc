#include "kernels/cpu/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <cstdlib>

namespace glimpse::kernels::cpu {
namespace {
// Pauses between two reads of the clock while spinning (a pause takes 10-40 ns).
constexpr int kPausesPerClockRead = 64;

// Spins until done() holds or `spin` has passed; returns done().
template <typename Done>
bool SpinUntil(std::chrono::nanoseconds spin, Done&& done) {
  if (done()) return true;
  if (spin.count() <= 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + spin;
  while (true) {
    for (int i = 0; i < kPausesPerClockRead; ++i) {
      _mm_pause();
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int num_threads, std::chrono::microseconds spin)
    : num_threads_(num_threads < 1 ? 1 : num_threads), spin_(spin) {
  workers_.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Run(const std::function<void(int)>& fn) {
  if (num_threads_ == 1) {
    fn(0);
    return;
  }
  job_ = &fn;
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  fn(0);
  // Workers may have been descheduled (a shared machine, or tests running side by side):
  // after a short spin, give the core away rather than burn it.
  auto all_done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (SpinUntil(spin_, all_done)) return;
  while (!all_done()) sched_yield();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  while (true) {
    uint64_t current = seen;
    SpinUntil(spin_, [&] {
      current = generation_.load(std::memory_order_acquire);
      return current != seen;
    });
    while (current == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      current = generation_.load(std::memory_order_acquire);
    }
    seen = current;
    if (stop_.load(std::memory_order_relaxed)) return;
    (*job_)(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

int DefaultNumThreads() {
  if (const char* env = std::getenv("GLIMPSE_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace glimpse::kernels::cpu
