#include "kvcache/kv_cache_manager.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

constexpr int32_t kBlockSize = 4;

KvCacheManager MakeManager(int32_t num_blocks, int32_t num_host_blocks = 0) {
  return KvCacheManager(KvCacheManagerOptions{
      .num_blocks = num_blocks, .block_size = kBlockSize, .num_host_blocks = num_host_blocks});
}

std::vector<int32_t> Tokens(int32_t n, int32_t start = 100) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = start + i;
  return v;
}

// Admits `key` with `prompt` the way the scheduler does (lookup, allocate the whole prompt,
// "compute" it and commit it); returns the hit it used.
PrefixHit AdmitAndPrefill(KvCacheManager& m, RequestKey key, const std::vector<int32_t>& prompt,
                          std::string_view salt = "") {
  PrefixHit hit = m.FindCachedPrefix(prompt, salt);
  const int32_t n = static_cast<int32_t>(prompt.size());
  EXPECT_TRUE(m.Allocate(key, hit.num_tokens, n, &hit).has_value());
  m.CommitFullBlocks(key, prompt, n, salt);
  EXPECT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
  return hit;
}

TEST(KvCacheManagerTest, AllocateReturnsNulloptWhenPoolExhausted) {
  KvCacheManager m = MakeManager(4);
  ASSERT_TRUE(m.Allocate(1, 0, 12).has_value());  // 3 blocks
  const std::vector<int32_t> table = m.BlockTable(1);
  EXPECT_EQ(m.NumBlocksToAllocate(2, 0, 8), 2);
  EXPECT_FALSE(m.CanAllocate(2));
  EXPECT_FALSE(m.Allocate(2, 0, 8).has_value());
  EXPECT_FALSE(m.Contains(2)) << "a failed allocation must not create the request";
  EXPECT_FALSE(m.Allocate(1, 12, 20).has_value()) << "growing by 2 blocks with 1 free";
  EXPECT_EQ(m.BlockTable(1), table);
  EXPECT_EQ(m.num_free_blocks(), 1);
  EXPECT_TRUE(m.Allocate(1, 12, 16).has_value());
  EXPECT_EQ(m.num_free_blocks(), 0);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, AllocateGrowsTheTableForChunksDecodesAndLookahead) {
  KvCacheManager m = MakeManager(8);
  ASSERT_TRUE(m.Allocate(1, 0, 5).has_value());  // first prefill chunk
  EXPECT_EQ(m.BlockTable(1).size(), 2u);
  ASSERT_TRUE(m.Allocate(1, 5, 7).has_value());  // rest of the prompt: same blocks
  EXPECT_EQ(m.BlockTable(1).size(), 2u);
  ASSERT_TRUE(m.Allocate(1, 7, 8 + 3).has_value());  // decode + 3 lookahead slots
  EXPECT_EQ(m.BlockTable(1).size(), 3u);
  ASSERT_TRUE(m.Allocate(1, 8, 9).has_value());  // never shrinks
  EXPECT_EQ(m.BlockTable(1).size(), 3u);
  EXPECT_EQ(m.num_used_blocks(), 3);
  EXPECT_DOUBLE_EQ(m.usage_ratio(), 3.0 / 8.0);
}

TEST(KvCacheManagerTest, SharedPrefixIsServedFromCache) {
  KvCacheManager m = MakeManager(16);
  std::vector<int32_t> a = Tokens(10);
  AdmitAndPrefill(m, 1, a);
  std::vector<int32_t> b = Tokens(8);  // same first two blocks, different rest
  b.insert(b.end(), {7, 7, 7, 7, 7});
  const PrefixHit hit = m.FindCachedPrefix(b, "");
  EXPECT_EQ(hit.num_tokens, 8);
  EXPECT_EQ(hit.num_prompt_tokens, 13);
  EXPECT_THAT(hit.blocks, ElementsAre(m.BlockTable(1)[0], m.BlockTable(1)[1]));
  ASSERT_TRUE(m.Allocate(2, hit.num_tokens, 13, &hit).has_value());
  EXPECT_EQ(m.BlockTable(2).size(), 4u);
  EXPECT_EQ(m.BlockTable(2)[0], m.BlockTable(1)[0]);
  EXPECT_EQ(m.BlockTable(2)[1], m.BlockTable(1)[1]);
  EXPECT_NE(m.BlockTable(2)[2], m.BlockTable(1)[2]);
  EXPECT_EQ(m.pool().ref_count(m.BlockTable(1)[0]), 2);
  EXPECT_EQ(m.NumCommittedBlocks(2), 2);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, DifferentSaltGivesNoHit) {
  KvCacheManager m = MakeManager(16);
  AdmitAndPrefill(m, 1, Tokens(12), "tenant-a");
  EXPECT_EQ(m.FindCachedPrefix(Tokens(12), "tenant-a").num_tokens, 8);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(12), "tenant-b").num_tokens, 0);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(12), "").num_tokens, 0);
}

TEST(KvCacheManagerTest, ATokenDifferingInAnEarlyBlockBreaksTheWholeChain) {
  KvCacheManager m = MakeManager(16);
  AdmitAndPrefill(m, 1, Tokens(13));
  std::vector<int32_t> b = Tokens(13);
  b[1] = 0;  // block 0 differs; blocks 1 and 2 have the same tokens as before
  EXPECT_EQ(m.FindCachedPrefix(b, "").num_tokens, 0);
  std::vector<int32_t> c = Tokens(13);
  c[5] = 0;  // block 1 differs
  EXPECT_EQ(m.FindCachedPrefix(c, "").num_tokens, 4);
}

TEST(KvCacheManagerTest, AChainMemoFindsWhatAFreshLookupFindsAndHashesEachBlockOnce) {
  KvCacheManager m = MakeManager(16);
  AdmitAndPrefill(m, 1, Tokens(21));        // 5 committed blocks
  std::vector<int32_t> prompt = Tokens(9);  // 2 lookup blocks, both cached
  std::vector<BlockHash> chain;
  const int64_t before = m.num_lookup_hashes();
  for (int round = 0; round < 3; ++round) {
    const PrefixHit with_memo = m.FindCachedPrefix(prompt, "", &chain);
    const PrefixHit fresh = m.FindCachedPrefix(prompt, "");
    EXPECT_EQ(with_memo.blocks, fresh.blocks) << round;
    EXPECT_EQ(with_memo.hashes, fresh.hashes) << round;
    EXPECT_EQ(with_memo.num_tokens, fresh.num_tokens) << round;
  }
  // Three memo lookups hashed the 2 blocks once; the three fresh ones 2 each.
  EXPECT_EQ(m.num_lookup_hashes() - before, 2 + 3 * 2);
  EXPECT_EQ(m.FindCachedPrefix(prompt, "", &chain).num_tokens, 8);

  // The prompt grows (a recomputed sequence's generated tokens): only the new blocks are
  // hashed, up to the first miss.
  prompt = Tokens(26);  // lookup blocks 0..5: 0..4 cached, 5 not
  const int64_t grown = m.num_lookup_hashes();
  EXPECT_EQ(m.FindCachedPrefix(prompt, "", &chain).num_tokens, 20);
  EXPECT_EQ(m.num_lookup_hashes() - grown, 4);  // blocks 2, 3, 4 and the missing 5
  EXPECT_EQ(chain.size(), 6u);
}

TEST(KvCacheManagerTest, TheLastPromptTokenIsNeverCached) {
  KvCacheManager m = MakeManager(16);
  AdmitAndPrefill(m, 1, Tokens(8));  // two full blocks, both published
  EXPECT_EQ(m.NumCommittedBlocks(1), 2);
  // The identical prompt must still compute its last token, hence its whole last block.
  EXPECT_EQ(m.FindCachedPrefix(Tokens(8), "").num_tokens, 4);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(9), "").num_tokens, 8);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(1), "").num_tokens, 0);
  EXPECT_EQ(m.FindCachedPrefix({}, "").num_tokens, 0);
}

TEST(KvCacheManagerTest, OnlyComputedTokensAreCommitted) {
  KvCacheManager m = MakeManager(16);
  const std::vector<int32_t> prompt = Tokens(12);
  ASSERT_TRUE(m.Allocate(1, 0, 12).has_value());
  m.CommitFullBlocks(1, prompt, 7, "");  // a chunk of 7 computed: one full block
  EXPECT_EQ(m.NumCommittedBlocks(1), 1);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(13), "").num_tokens, 4);
  // Tokens past token_ids (e.g. unverified draft slots) are never committed either.
  m.CommitFullBlocks(1, std::span(prompt).first(9), 12, "");
  EXPECT_EQ(m.NumCommittedBlocks(1), 2);
}

TEST(KvCacheManagerTest, FreedPrefixIsReusedUntilEvictedByPressure) {
  KvCacheManager m = MakeManager(4);
  AdmitAndPrefill(m, 1, Tokens(9));  // 3 blocks, 2 published
  const std::vector<int32_t> first = m.BlockTable(1);
  m.Free(1);
  EXPECT_EQ(m.num_free_blocks(), 4);
  EXPECT_EQ(m.num_cached_free_blocks(), 2);
  EXPECT_DOUBLE_EQ(m.usage_ratio(), 0.0);

  const PrefixHit again = AdmitAndPrefill(m, 2, Tokens(9));
  EXPECT_THAT(again.blocks, ElementsAre(first[0], first[1]));
  EXPECT_EQ(m.num_evictions(), 0);
  m.Free(2);

  // A request that needs every block evicts the cached prefix.
  ASSERT_TRUE(m.Allocate(3, 0, 16).has_value());
  EXPECT_EQ(m.num_evictions(), 2);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(9), "").num_tokens, 0);
  m.Free(3);
  EXPECT_EQ(m.num_cached_free_blocks(), 0);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, EvictionTakesTheLeastRecentlyFreedPrefixTailFirst) {
  KvCacheManager m = MakeManager(6);
  AdmitAndPrefill(m, 1, Tokens(9, 100));  // blocks p0 p1 (+ partial)
  AdmitAndPrefill(m, 2, Tokens(9, 500));  // blocks q0 q1 (+ partial)
  m.Free(1);
  m.Free(2);
  // Free list: the 2 partial blocks (plain), then p1 p0 q1 q0.
  ASSERT_TRUE(m.Allocate(3, 0, 12).has_value());  // 3 blocks: 2 plain + evicts p1
  EXPECT_EQ(m.num_evictions(), 1);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(9, 100), "").num_tokens, 4);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(9, 500), "").num_tokens, 8);
}

TEST(KvCacheManagerTest, AHitRevivesCachedBlocksBeforeFreshOnesCanEvictThem) {
  KvCacheManager m = MakeManager(5);
  AdmitAndPrefill(m, 1, Tokens(9, 100));  // p0 p1 cached + a plain block
  AdmitAndPrefill(m, 2, Tokens(5, 500));  // q0 cached + a plain block
  m.Free(1);
  m.Free(2);
  ASSERT_TRUE(m.Allocate(3, 0, 8).has_value());  // takes both plain blocks
  // Free list now: p1 p0 q0 — the hit's blocks are first in line for eviction.
  const PrefixHit hit = m.FindCachedPrefix(Tokens(9, 100), "");
  ASSERT_EQ(hit.blocks.size(), 2u);
  EXPECT_EQ(m.NumBlocksToAllocate(4, 8, 9, &hit), 3) << "2 revived + 1 fresh";
  ASSERT_TRUE(m.Allocate(4, 8, 9, &hit).has_value());
  EXPECT_THAT(std::span(m.BlockTable(4)).first(2), ElementsAreArray(hit.blocks));
  EXPECT_EQ(m.num_evictions(), 1);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(5, 500), "").num_tokens, 0) << "q0 was the one evicted";
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, RefCountsFollowTwoRequestsSharingAPrefixFreedInEitherOrder) {
  for (bool first_frees_first : {true, false}) {
    SCOPED_TRACE(first_frees_first);
    KvCacheManager m = MakeManager(8);
    AdmitAndPrefill(m, 1, Tokens(10));
    AdmitAndPrefill(m, 2, Tokens(11));
    const int32_t shared0 = m.BlockTable(1)[0], shared1 = m.BlockTable(1)[1];
    EXPECT_EQ(m.pool().ref_count(shared0), 2);
    EXPECT_EQ(m.num_used_blocks(), 4);
    m.Free(first_frees_first ? 1 : 2);
    EXPECT_EQ(m.pool().ref_count(shared0), 1);
    EXPECT_EQ(m.pool().ref_count(shared1), 1);
    EXPECT_EQ(m.num_used_blocks(), 3);
    EXPECT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
    m.Free(first_frees_first ? 2 : 1);
    EXPECT_EQ(m.pool().ref_count(shared0), 0);
    EXPECT_EQ(m.num_used_blocks(), 0);
    EXPECT_EQ(m.num_cached_free_blocks(), 2);
    EXPECT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
  }
}

TEST(KvCacheManagerTest, DuplicateContentCommittedTwiceKeepsOnePublishedBlock) {
  KvCacheManager m = MakeManager(8);
  // Both admitted before either committed: no hits, two copies of the same KV.
  ASSERT_TRUE(m.Allocate(1, 0, 5).has_value());
  ASSERT_TRUE(m.Allocate(2, 0, 5).has_value());
  m.CommitFullBlocks(1, Tokens(5), 5, "");
  m.CommitFullBlocks(2, Tokens(5), 5, "");
  const int32_t kept = m.BlockTable(1)[0], duplicate = m.BlockTable(2)[0];
  EXPECT_EQ(m.pool().FindCached(*m.pool().hash(kept)), kept);
  EXPECT_EQ(m.pool().hash(duplicate), nullptr);
  EXPECT_EQ(m.NumCommittedBlocks(2), 1);
  EXPECT_TRUE(m.CheckInvariants().ok());
  m.Free(1);  // the kept copy stays cached after its owner leaves
  EXPECT_THAT(m.FindCachedPrefix(Tokens(6), "").blocks, ElementsAre(kept));
  m.Free(2);
  EXPECT_EQ(m.num_cached_free_blocks(), 1);
}

TEST(KvCacheManagerTest, PrefixCountersCountTokensOncePerAdmission) {
  KvCacheManager m = MakeManager(8);
  AdmitAndPrefill(m, 1, Tokens(9));  // miss: 9 queried, 0 hit
  const PrefixHit hit = m.FindCachedPrefix(Tokens(10), "");
  m.FindCachedPrefix(Tokens(10), "");                         // lookups alone count nothing
  ASSERT_FALSE(m.Allocate(2, 8, 10 + 40, &hit).has_value());  // too big: not admitted
  ASSERT_TRUE(m.Allocate(2, 8, 10, &hit).has_value());
  ASSERT_TRUE(m.Allocate(3, 0, 1).has_value());  // no hit: prefix cache bypassed, no query
  const PrefixCacheStats& stats = m.prefix_cache_stats();
  EXPECT_EQ(stats.queries, 2);
  EXPECT_EQ(stats.queried_tokens, 19);
  EXPECT_EQ(stats.hit_tokens, 8);
}

TEST(KvCacheManagerTest, ForkSharesBlocksAndCopiesOnlyThePartialBlockOnFirstWrite) {
  KvCacheManager m = MakeManager(8);
  AdmitAndPrefill(m, 1, Tokens(10));  // a b c, c holds 2 tokens
  const std::vector<int32_t> parent = m.BlockTable(1);
  m.Fork(1, 2, 10);
  m.Fork(1, 3, 10);
  EXPECT_EQ(m.BlockTable(2), parent);
  EXPECT_EQ(m.pool().ref_count(parent[2]), 3);
  EXPECT_EQ(m.num_used_blocks(), 3) << "forking copies nothing";
  EXPECT_TRUE(m.CheckInvariants().ok());

  // Each sequence writes its own token at position 10, inside the shared partial block.
  auto p = m.Allocate(1, 10, 11);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->copies.size(), 1u);
  EXPECT_EQ(p->copies[0].src, parent[2]);
  EXPECT_EQ(p->copies[0].dst, m.BlockTable(1)[2]);
  EXPECT_NE(m.BlockTable(1)[2], parent[2]);
  EXPECT_EQ(m.BlockTable(1)[0], parent[0]) << "full blocks stay shared";
  auto c2 = m.Allocate(2, 10, 11);
  ASSERT_TRUE(c2.has_value());
  EXPECT_THAT(c2->copies, ElementsAre(BlockCopy{parent[2], m.BlockTable(2)[2]}));
  // The last sharer owns the original alone and writes in place.
  auto c3 = m.Allocate(3, 10, 11);
  ASSERT_TRUE(c3.has_value());
  EXPECT_THAT(c3->copies, IsEmpty());
  EXPECT_EQ(m.BlockTable(3)[2], parent[2]);
  EXPECT_EQ(m.pool().ref_count(parent[2]), 1);
  EXPECT_EQ(m.pool().ref_count(parent[0]), 3);
  EXPECT_EQ(m.num_used_blocks(), 5);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, ForkAtABlockBoundaryNeverCopies) {
  KvCacheManager m = MakeManager(8);
  AdmitAndPrefill(m, 1, Tokens(8));
  ASSERT_TRUE(m.Allocate(1, 8, 8 + 4).has_value());  // a lookahead block, not shared
  m.Fork(1, 2, 8);
  EXPECT_EQ(m.BlockTable(2).size(), 2u);
  for (RequestKey k : {1, 2}) {
    auto a = m.Allocate(k, 8, 9);
    ASSERT_TRUE(a.has_value());
    EXPECT_THAT(a->copies, IsEmpty());
  }
  EXPECT_NE(m.BlockTable(1)[2], m.BlockTable(2)[2]);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, SharedBlockPastTheComputedTokensIsReplacedWithoutACopy) {
  KvCacheManager m = MakeManager(8);
  ASSERT_TRUE(m.Allocate(1, 0, 12).has_value());
  m.Fork(1, 2, 12);
  // The child rewinds to 8 computed tokens (e.g. rejected drafts): block 2 is rewritten.
  auto a = m.Allocate(2, 8, 12);
  ASSERT_TRUE(a.has_value());
  EXPECT_THAT(a->copies, IsEmpty());
  EXPECT_NE(m.BlockTable(2)[2], m.BlockTable(1)[2]);
  EXPECT_EQ(m.BlockTable(2)[1], m.BlockTable(1)[1]);
}

TEST(KvCacheManagerTest, CopyOnWriteNeedsAFreeBlockAndFailsAtomically) {
  KvCacheManager m = MakeManager(3);
  ASSERT_TRUE(m.Allocate(1, 0, 6).has_value());
  m.Fork(1, 2, 6);
  ASSERT_TRUE(m.Allocate(3, 0, 1).has_value());  // the pool is now full
  EXPECT_EQ(m.NumBlocksToAllocate(1, 6, 7), 1);
  EXPECT_FALSE(m.Allocate(1, 6, 7).has_value());
  EXPECT_EQ(m.BlockTable(1), m.BlockTable(2));
  m.Free(3);
  EXPECT_TRUE(m.Allocate(1, 6, 7).has_value());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, SwapOutAndInRoundTripsTheComputedBlocks) {
  KvCacheManager m = MakeManager(6, /*num_host_blocks=*/4);
  ASSERT_TRUE(m.Allocate(1, 0, 16).has_value());  // 10 computed + lookahead up to 16
  const std::vector<int32_t> before = m.BlockTable(1);
  auto out = m.SwapOut(1, 10);
  ASSERT_TRUE(out.has_value());
  ASSERT_EQ(out->size(), 3u) << "the lookahead block holds nothing";
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*out)[i].src, before[i]);
  EXPECT_TRUE(m.IsSwappedOut(1));
  EXPECT_THAT(m.BlockTable(1), IsEmpty());
  EXPECT_EQ(m.num_free_blocks(), 6);
  EXPECT_EQ(m.num_free_host_blocks(), 1);
  EXPECT_TRUE(m.CheckInvariants().ok());

  EXPECT_EQ(m.NumBlocksToSwapIn(1), 3);
  auto in = m.SwapIn(1);
  ASSERT_TRUE(in.has_value());
  ASSERT_EQ(in->size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ((*in)[i].src, (*out)[i].dst) << "host block of position block " << i;
    EXPECT_EQ((*in)[i].dst, m.BlockTable(1)[i]);
  }
  EXPECT_FALSE(m.IsSwappedOut(1));
  EXPECT_EQ(m.num_free_host_blocks(), 4);
  EXPECT_TRUE(m.Allocate(1, 10, 11).has_value());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, SwapInReusesCommittedBlocksStillCachedOnTheDevice) {
  KvCacheManager m = MakeManager(6, 4);
  AdmitAndPrefill(m, 1, Tokens(10));  // 2 committed blocks + a partial one
  const std::vector<int32_t> before = m.BlockTable(1);
  ASSERT_TRUE(m.SwapOut(1, 10).has_value());
  EXPECT_EQ(m.num_cached_free_blocks(), 2);
  auto in = m.SwapIn(1);
  ASSERT_TRUE(in.has_value());
  ASSERT_EQ(in->size(), 1u) << "only the uncommitted block comes back from the host";
  EXPECT_EQ(m.BlockTable(1)[0], before[0]);
  EXPECT_EQ(m.BlockTable(1)[1], before[1]);
  EXPECT_EQ((*in)[0].dst, m.BlockTable(1)[2]);

  // After eviction everything is copied back, and committed blocks are published again.
  ASSERT_TRUE(m.SwapOut(1, 10).has_value());
  ASSERT_TRUE(m.Allocate(2, 0, 24).has_value());  // evicts both cached blocks
  m.Free(2);
  auto again = m.SwapIn(1);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->size(), 3u);
  EXPECT_EQ(m.FindCachedPrefix(Tokens(10), "").num_tokens, 8);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, SwapOutReturnsNulloptWhenHostSpaceIsFull) {
  KvCacheManager m = MakeManager(8, 4);
  ASSERT_TRUE(m.Allocate(1, 0, 8).has_value());
  ASSERT_TRUE(m.Allocate(2, 0, 12).has_value());
  ASSERT_TRUE(m.SwapOut(1, 8).has_value());
  const std::vector<int32_t> table = m.BlockTable(2);
  EXPECT_FALSE(m.SwapOut(2, 12).has_value()) << "3 blocks, 2 host blocks free";
  EXPECT_FALSE(m.IsSwappedOut(2));
  EXPECT_EQ(m.BlockTable(2), table);
  EXPECT_EQ(m.num_free_host_blocks(), 2);
  EXPECT_TRUE(m.SwapOut(2, 8).has_value());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, SwapInReturnsNulloptWhenTheDevicePoolIsShort) {
  KvCacheManager m = MakeManager(4, 4);
  ASSERT_TRUE(m.Allocate(1, 0, 12).has_value());
  ASSERT_TRUE(m.SwapOut(1, 12).has_value());
  ASSERT_TRUE(m.Allocate(2, 0, 8).has_value());
  EXPECT_FALSE(m.SwapIn(1).has_value());
  EXPECT_TRUE(m.IsSwappedOut(1));
  EXPECT_EQ(m.num_free_host_blocks(), 1);
  m.Free(2);
  EXPECT_TRUE(m.SwapIn(1).has_value());
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, FreeReleasesASwappedOutRequestsHostBlocks) {
  KvCacheManager m = MakeManager(4, 4);
  ASSERT_TRUE(m.Allocate(1, 0, 12).has_value());
  ASSERT_TRUE(m.SwapOut(1, 12).has_value());
  m.Free(1);
  EXPECT_FALSE(m.Contains(1));
  EXPECT_EQ(m.num_free_host_blocks(), 4);
  m.Free(1);  // unknown key: no-op
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvCacheManagerTest, RecomputeAfterFreeIsCheaperThanksToThePrefixCache) {
  KvCacheManager m = MakeManager(8);
  const std::vector<int32_t> prompt = Tokens(14);
  AdmitAndPrefill(m, 1, prompt);
  m.Free(1);  // preempted by recompute
  const PrefixHit hit = AdmitAndPrefill(m, 1, prompt);
  EXPECT_EQ(hit.num_tokens, 12);
}

TEST(KvCacheManagerDeathTest, AStaleHitIsABug) {
  KvCacheManager m = MakeManager(3);
  AdmitAndPrefill(m, 1, Tokens(9));
  m.Free(1);
  const PrefixHit hit = m.FindCachedPrefix(Tokens(9), "");
  ASSERT_TRUE(m.Allocate(2, 0, 12).has_value());  // evicts the hit's blocks
  m.Free(2);
  EXPECT_DEATH(m.Allocate(3, 8, 9, &hit), "CHECK failed");
}

TEST(KvCacheManagerDeathTest, RewritingCommittedTokensIsABug) {
  KvCacheManager m = MakeManager(4);
  AdmitAndPrefill(m, 1, Tokens(9));
  EXPECT_DEATH(m.Allocate(1, 4, 9), "CHECK failed");
}

}  // namespace
}  // namespace glimpse::kvcache
