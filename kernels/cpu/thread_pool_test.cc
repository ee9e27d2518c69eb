#include "kernels/cpu/thread_pool.h"

#include <time.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::kernels::cpu {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

TEST(ThreadPoolTest, RunCallsEveryIndexOnceOnItsOwnThread) {
  for (microseconds spin : {microseconds(0), ThreadPool::kDefaultSpin}) {
    ThreadPool pool(4, spin);
    for (int run = 0; run < 50; ++run) {
      std::vector<std::atomic<int>> calls(4);
      std::mutex mu;
      std::set<std::thread::id> threads;
      pool.Run([&](int t) {
        calls[t].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
      });
      for (int t = 0; t < 4; ++t) EXPECT_EQ(calls[t].load(), 1) << "index " << t;
      EXPECT_EQ(threads.size(), 4u);
      EXPECT_TRUE(threads.count(std::this_thread::get_id())) << "the caller is thread 0";
    }
  }
}

TEST(ThreadPoolTest, ParallelForCoversTheRangeOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads, microseconds(0));
    for (int64_t n : {1, 2, 3, 7, 100}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](int64_t begin, int64_t end) {
        EXPECT_LT(begin, end);
        for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << n << " items, " << i;
    }
  }
}

// Without a spin every job finds the workers asleep (or on their way to sleep): a lost
// wake-up would hang here.
TEST(ThreadPoolTest, WorkersThatSleptWakeForTheNextJob) {
  ThreadPool pool(3, microseconds(0));
  std::atomic<int> total{0};
  for (int run = 0; run < 2000; ++run) {
    pool.Run([&](int) { total.fetch_add(1); });
    if (run % 100 == 0) std::this_thread::sleep_for(milliseconds(2));
  }
  EXPECT_EQ(total.load(), 3 * 2000);
}

// A worker spins at most about its pool's spin after a job, then sleeps: over an idle gap it
// uses little CPU. (Load on the machine can only lower what it uses.)
TEST(ThreadPoolTest, IdleWorkersStopSpinning) {
  constexpr auto kGap = milliseconds(200);
  for (microseconds spin : {microseconds(0), microseconds(20000)}) {
    ThreadPool pool(2, spin);
    double after_first = 0;
    double before_second = 0;
    pool.Run([&](int t) {
      if (t == 1) after_first = ThreadCpuMs();
    });
    std::this_thread::sleep_for(kGap);
    pool.Run([&](int t) {
      if (t == 1) before_second = ThreadCpuMs();
    });
    const double spun_ms = before_second - after_first;
    const double spin_ms = std::chrono::duration<double, std::milli>(spin).count();
    EXPECT_LT(spun_ms, spin_ms + 10.0) << "spin " << spin.count() << " us";
  }
}

TEST(ThreadPoolTest, DestroysWhileWorkersSleep) {
  auto pool = std::make_unique<ThreadPool>(4, microseconds(0));
  pool->Run([](int) {});
  std::this_thread::sleep_for(milliseconds(20));
  pool.reset();  // joins; a worker deaf to the stop would hang here
  SUCCEED();
}

}  // namespace
}  // namespace glimpse::kernels::cpu
