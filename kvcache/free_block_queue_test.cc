#include "kvcache/free_block_queue.h"

#include <algorithm>
#include <deque>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

using ::testing::ElementsAre;

TEST(FreeBlockQueueTest, PopFrontReturnsBlocksInPushBackOrder) {
  FreeBlockQueue q(4);
  q.PushBack(2);
  q.PushBack(0);
  q.PushBack(3);
  EXPECT_EQ(q.size(), 3);
  EXPECT_EQ(q.PopFront(), 2);
  EXPECT_EQ(q.PopFront(), 0);
  EXPECT_EQ(q.PopFront(), 3);
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.CheckInvariants().ok());
}

TEST(FreeBlockQueueTest, PushFrontIsReusedFirst) {
  FreeBlockQueue q(4);
  q.PushBack(1);
  q.PushBack(2);
  q.PushFront(3);
  EXPECT_THAT(q.ToVector(), ElementsAre(3, 1, 2));
}

TEST(FreeBlockQueueTest, RemoveFromTheMiddleKeepsTheRestInOrder) {
  FreeBlockQueue q(5);
  for (int32_t b : {4, 0, 2, 1}) q.PushBack(b);
  q.Remove(0);
  EXPECT_FALSE(q.Contains(0));
  EXPECT_TRUE(q.Contains(2));
  EXPECT_THAT(q.ToVector(), ElementsAre(4, 2, 1));
  q.Remove(1);  // the back
  q.Remove(4);  // the front
  EXPECT_THAT(q.ToVector(), ElementsAre(2));
  EXPECT_TRUE(q.CheckInvariants().ok());
}

TEST(FreeBlockQueueTest, MatchesADequeUnderRandomOperations) {
  constexpr int32_t kBlocks = 64;
  FreeBlockQueue q(kBlocks);
  std::deque<int32_t> model;
  std::mt19937 rng(7);
  for (int step = 0; step < 5000; ++step) {
    const int32_t b = static_cast<int32_t>(rng() % kBlocks);
    const bool present = std::find(model.begin(), model.end(), b) != model.end();
    ASSERT_EQ(q.Contains(b), present);
    switch (rng() % 4) {
      case 0:
        if (!present) q.PushBack(b), model.push_back(b);
        break;
      case 1:
        if (!present) q.PushFront(b), model.push_front(b);
        break;
      case 2:
        if (present) q.Remove(b), model.erase(std::find(model.begin(), model.end(), b));
        break;
      default:  // a random number, not one of our enums
        if (!model.empty()) {
          ASSERT_EQ(q.PopFront(), model.front());
          model.pop_front();
        }
    }
    ASSERT_EQ(q.ToVector(), std::vector<int32_t>(model.begin(), model.end()));
    ASSERT_TRUE(q.CheckInvariants().ok());
  }
}

TEST(FreeBlockQueueDeathTest, PushingABlockTwiceIsABug) {
  FreeBlockQueue q(2);
  q.PushBack(1);
  EXPECT_DEATH(q.PushFront(1), "CHECK failed");
}

}  // namespace
}  // namespace glimpse::kvcache
