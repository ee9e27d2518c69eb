#include "kvcache/block_pool.h"

#include <set>

#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

TEST(BlockPoolTest, AllocateReturnsDistinctBlocksUntilExhausted) {
  BlockPool pool(5);
  auto a = pool.Allocate(3);
  ASSERT_TRUE(a.has_value());
  auto b = pool.Allocate(2);
  ASSERT_TRUE(b.has_value());
  std::set<int32_t> all(a->begin(), a->end());
  all.insert(b->begin(), b->end());
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ(pool.num_free(), 0);
}

TEST(BlockPoolTest, AllocateReturnsNulloptWhenPoolExhaustedAndChangesNothing) {
  BlockPool pool(4);
  ASSERT_TRUE(pool.Allocate(3).has_value());
  EXPECT_FALSE(pool.Allocate(2).has_value());
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_TRUE(pool.Allocate(1).has_value());
}

TEST(BlockPoolTest, SharedBlockIsFreedOnlyAfterLastRelease) {
  BlockPool pool(2);
  auto a = pool.Allocate(1);
  const int32_t block = (*a)[0];
  pool.AddRef(block);
  EXPECT_EQ(pool.ref_count(block), 2);
  pool.Release(block);
  EXPECT_EQ(pool.num_free(), 1);
  pool.Release(block);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolDeathTest, ReleasingAFreeBlockIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.Release(0), "CHECK failed");
}

}  // namespace
}  // namespace glimpse::kvcache
