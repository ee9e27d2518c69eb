#include "server/write_dispatcher.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

TEST(WriteDispatcherTest, RunsEveryPostedTaskOnItsThreadsNotThePoster) {
  for (const int threads : {1, 3}) {
    std::shared_ptr<WriteDispatcher> d = WriteDispatcher::Start(threads);
    EXPECT_EQ(d->num_threads(), threads);
    constexpr int kTasks = 5000;
    std::vector<std::atomic<int>> runs(kTasks);
    std::atomic<int> on_poster{0};
    const std::thread::id poster = std::this_thread::get_id();
    for (int i = 0; i < kTasks; ++i) {
      d->Post([&, i] {
        runs[i].fetch_add(1);
        if (std::this_thread::get_id() == poster) on_poster.fetch_add(1);
      });
    }
    d->Stop();  // runs what is still queued
    for (int i = 0; i < kTasks; ++i) ASSERT_EQ(runs[i].load(), 1) << "task " << i;
    EXPECT_EQ(on_poster.load(), 0);
    EXPECT_EQ(d->num_run(), static_cast<uint64_t>(kTasks));
  }
}

TEST(WriteDispatcherTest, PostingNeverWaitsForARunningTask) {
  std::shared_ptr<WriteDispatcher> d = WriteDispatcher::Start(1);
  std::atomic<bool> release{false};
  std::atomic<int> done{0};
  d->Post([&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    done.fetch_add(1);
  });
  // The one thread is busy: these queue behind it and Post returns at once.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) d->Post([&] { done.fetch_add(1); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(done.load(), 0);
  release.store(true);
  d->Stop();
  EXPECT_EQ(done.load(), 101);
}

TEST(WriteDispatcherTest, SeveralThreadsShareABigBacklog) {
  std::shared_ptr<WriteDispatcher> d = WriteDispatcher::Start(3);
  // The first task holds one thread until the backlog is queued; the backlog's tasks each
  // take a while, so one thread alone could not run them all before the others join in.
  std::atomic<bool> queued{false};
  d->Post([&] {
    while (!queued.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  std::mutex mu;
  std::vector<std::thread::id> ran_on;
  for (int i = 0; i < 300; ++i) {
    d->Post([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      std::lock_guard<std::mutex> lock(mu);
      ran_on.push_back(std::this_thread::get_id());
    });
  }
  queued.store(true);
  d->Stop();
  ASSERT_EQ(ran_on.size(), 300u);
  std::sort(ran_on.begin(), ran_on.end());
  const auto distinct = std::unique(ran_on.begin(), ran_on.end()) - ran_on.begin();
  EXPECT_GE(distinct, 2) << "one thread ran the whole backlog";
}

TEST(WriteDispatcherTest, AfterStopPostRunsTheTaskInline) {
  std::shared_ptr<WriteDispatcher> d = WriteDispatcher::Start(2);
  d->Stop();
  d->Stop();  // idempotent
  std::thread::id ran_on;
  d->Post([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(d->num_run(), 1u);
}

// A producer bumps a counter and signals; the task reads the counter, then stays busy a
// little, so that signals keep landing while it runs. Once the producer stops, some run must
// have read its last value: a signal during a run may not be lost.
TEST(CoalescedTaskTest, NoSignalIsLostAndRunsNeverOverlap) {
  for (const int threads : {1, 2}) {
    std::shared_ptr<WriteDispatcher> d = WriteDispatcher::Start(threads);
    std::atomic<int> produced{0};
    std::atomic<int> seen{0};
    std::atomic<int> running{0};
    std::atomic<int> overlaps{0};
    std::atomic<int> runs{0};
    std::shared_ptr<CoalescedTask> task = CoalescedTask::Create(d, [&] {
      if (running.fetch_add(1) != 0) overlaps.fetch_add(1);
      seen.store(produced.load());
      runs.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      running.fetch_sub(1);
    });
    for (int round = 0; round < 200; ++round) {
      const int signals = 1 + round % 7;
      for (int i = 0; i < signals; ++i) {
        produced.fetch_add(1);
        task->Signal();
        if (i % 2 == 1) std::this_thread::sleep_for(std::chrono::microseconds(20 * (round % 4)));
      }
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (seen.load() != produced.load() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      ASSERT_EQ(seen.load(), produced.load())
          << "round " << round << " (" << threads << " threads): the last signal ran nothing";
    }
    d->Stop();
    EXPECT_EQ(overlaps.load(), 0);
    EXPECT_LT(runs.load(), produced.load()) << "signals while a run was pending must coalesce";
  }
}

}  // namespace
}  // namespace glimpse::server
