#include "scheduler/request_stream.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace glimpse::scheduler {
namespace {

RequestOutput Delta(int32_t token) {
  RequestOutput out;
  SequenceDelta d;
  d.token_ids = {token};
  out.deltas.push_back(d);
  return out;
}

TEST(RequestStreamTest, NextBlocksUntilTheEnginePushesAndKeepsOrder) {
  RequestStream stream("r");
  std::thread engine([&] {
    for (int32_t t = 0; t < 100; ++t) stream.Push(Delta(t));
    RequestOutput end;
    end.done = true;
    stream.Push(std::move(end));
  });
  for (int32_t t = 0; t < 100; ++t) {
    RequestOutput out = stream.Next();
    ASSERT_FALSE(out.done);
    ASSERT_EQ(out.deltas[0].token_ids[0], t);
  }
  EXPECT_TRUE(stream.Next().done);
  engine.join();
}

TEST(RequestStreamTest, TheFinalStatusRepeatsAndLaterPushesAreIgnored) {
  RequestStream stream("r");
  RequestOutput end;
  end.done = true;
  end.status = absl::DeadlineExceededError("late");
  stream.Push(std::move(end));
  stream.Push(Delta(5));  // After the end: a bug, ignored.
  for (int i = 0; i < 3; ++i) {
    RequestOutput out = stream.Next();
    EXPECT_TRUE(out.done);
    EXPECT_EQ(out.status.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_TRUE(out.deltas.empty());
  }
  EXPECT_FALSE(stream.TryNext().has_value());
}

TEST(RequestStreamTest, ListenerFiresOnEveryPushAndAtOnceIfOutputIsWaiting) {
  RequestStream stream("r");
  stream.Push(Delta(1));
  std::atomic<int> calls{0};
  stream.SetListener([&] { ++calls; });
  EXPECT_EQ(calls.load(), 1);  // Output was already waiting.
  stream.Push(Delta(2));
  stream.Push(Delta(3));
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(stream.TryNext()->deltas[0].token_ids[0], 1);
}

TEST(RequestStreamTest, CancelIsVisibleToTheEngine) {
  RequestStream stream("r");
  EXPECT_FALSE(stream.cancelled());
  stream.Cancel();
  EXPECT_TRUE(stream.cancelled());
}

}  // namespace
}  // namespace glimpse::scheduler
