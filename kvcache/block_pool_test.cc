#include "kvcache/block_pool.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

using ::testing::ElementsAre;

BlockHash Hash(uint64_t i) { return BlockHash{i, ~i}; }

// Allocates one block, publishes `hash` on it and releases it: a cached free block.
int32_t MakeCachedFree(BlockPool& pool, const BlockHash& hash) {
  const int32_t b = (*pool.Allocate(1))[0];
  EXPECT_TRUE(pool.Publish(b, hash));
  pool.Release(b);
  return b;
}

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
  EXPECT_TRUE(pool.CheckInvariants().ok());
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

TEST(BlockPoolTest, ReleasedCachedBlockStaysFindableAndCountsAsFree) {
  BlockPool pool(3);
  const int32_t b = MakeCachedFree(pool, Hash(1));
  EXPECT_EQ(pool.FindCached(Hash(1)), b);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.num_cached_free(), 1);
  EXPECT_EQ(pool.evictions(), 0);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolTest, AllocationUsesPlainFreeBlocksBeforeEvictingCachedOnes) {
  BlockPool pool(3);
  const int32_t cached = MakeCachedFree(pool, Hash(1));
  auto two = pool.Allocate(2);
  ASSERT_TRUE(two.has_value());
  EXPECT_THAT(*two, ::testing::Not(::testing::Contains(cached)));
  EXPECT_EQ(pool.FindCached(Hash(1)), cached);
  // The last free block is the cached one: taking it evicts the prefix.
  EXPECT_THAT(*pool.Allocate(1), ElementsAre(cached));
  EXPECT_EQ(pool.FindCached(Hash(1)), std::nullopt);
  EXPECT_EQ(pool.hash(cached), nullptr);
  EXPECT_EQ(pool.evictions(), 1);
  EXPECT_EQ(pool.num_cached_free(), 0);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolTest, CachedBlocksAreEvictedLeastRecentlyReleasedFirst) {
  BlockPool pool(3);
  auto blocks = *pool.Allocate(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.Publish(blocks[i], Hash(i)));
  pool.Release(blocks[1]);
  pool.Release(blocks[0]);
  pool.Release(blocks[2]);
  EXPECT_THAT(pool.FreeListForTesting(), ElementsAre(blocks[1], blocks[0], blocks[2]));
  EXPECT_THAT(*pool.Allocate(1), ElementsAre(blocks[1]));
  EXPECT_EQ(pool.FindCached(Hash(1)), std::nullopt);
  EXPECT_EQ(pool.FindCached(Hash(0)), blocks[0]);
  EXPECT_EQ(pool.FindCached(Hash(2)), blocks[2]);
}

TEST(BlockPoolTest, ReleaseAllFreesTheTailFirstSoItIsEvictedFirst) {
  BlockPool pool(3);
  auto chain = *pool.Allocate(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.Publish(chain[i], Hash(i)));
  pool.ReleaseAll(chain);
  EXPECT_THAT(pool.FreeListForTesting(), ElementsAre(chain[2], chain[1], chain[0]));
}

TEST(BlockPoolTest, AddRefRevivesACachedFreeBlockSoAllocationCannotEvictIt) {
  BlockPool pool(2);
  const int32_t cached = MakeCachedFree(pool, Hash(5));
  pool.AddRef(cached);
  EXPECT_EQ(pool.ref_count(cached), 1);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(pool.num_cached_free(), 0);
  auto other = pool.Allocate(1);
  ASSERT_TRUE(other.has_value());
  EXPECT_NE((*other)[0], cached);
  EXPECT_FALSE(pool.Allocate(1).has_value());
  EXPECT_EQ(pool.FindCached(Hash(5)), cached);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolTest, PublishingASecondBlockWithTheSameHashKeepsTheFirst) {
  BlockPool pool(2);
  auto blocks = *pool.Allocate(2);
  EXPECT_TRUE(pool.Publish(blocks[0], Hash(9)));
  EXPECT_FALSE(pool.Publish(blocks[1], Hash(9)));
  EXPECT_TRUE(pool.Publish(blocks[0], Hash(9)));  // idempotent
  EXPECT_EQ(pool.FindCached(Hash(9)), blocks[0]);
  EXPECT_EQ(pool.hash(blocks[1]), nullptr);
  // The unpublished duplicate is plain free when released: reused before the cached block.
  pool.Release(blocks[0]);
  pool.Release(blocks[1]);
  EXPECT_THAT(pool.FreeListForTesting(), ElementsAre(blocks[1], blocks[0]));
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

TEST(BlockPoolDeathTest, ReleasingAFreeBlockIsABug) {
  BlockPool pool(2);
  EXPECT_DEATH(pool.Release(0), "CHECK failed");
}

TEST(BlockPoolDeathTest, ABlockHashIsWriteOnce) {
  BlockPool pool(1);
  const int32_t b = (*pool.Allocate(1))[0];
  ASSERT_TRUE(pool.Publish(b, Hash(1)));
  EXPECT_DEATH(pool.Publish(b, Hash(2)), "CHECK failed");
}

TEST(BlockPoolDeathTest, APlainFreeBlockCannotBeRevived) {
  BlockPool pool(1);
  EXPECT_DEATH(pool.AddRef(0), "CHECK failed");
}

}  // namespace
}  // namespace glimpse::kvcache
