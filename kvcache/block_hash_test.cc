#include "kvcache/block_hash.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

std::vector<int32_t> Iota(int32_t n, int32_t start = 0) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = start + i;
  return v;
}

TEST(BlockHasherTest, ChainIsBlockAppliedToThePreviousHash) {
  BlockHasher hasher;
  const std::vector<int32_t> tokens = Iota(12);
  const std::vector<BlockHash> chain = hasher.Chain("", tokens, 4, 3);
  ASSERT_EQ(chain.size(), 3u);
  BlockHash h = hasher.Root("");
  for (int i = 0; i < 3; ++i) {
    h = hasher.Block(h, std::span(tokens).subspan(4 * i, 4));
    EXPECT_EQ(chain[i], h) << "block " << i;
  }
}

TEST(BlockHasherTest, SharedPrefixGivesEqualHashesUntilTheFirstDifferingBlock) {
  BlockHasher hasher;
  std::vector<int32_t> a = Iota(16);
  std::vector<int32_t> b = a;
  b[9] = 1000;  // block 2 of 4 differs
  const auto ha = hasher.Chain("", a, 4, 4);
  const auto hb = hasher.Chain("", b, 4, 4);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
  EXPECT_NE(ha[2], hb[2]);
  EXPECT_NE(ha[3], hb[3]) << "a later block with equal tokens must differ after a change";
}

TEST(BlockHasherTest, ExtraKeySeparatesNamespaces) {
  BlockHasher hasher;
  const std::vector<int32_t> tokens = Iota(8);
  EXPECT_NE(hasher.Chain("", tokens, 8, 1)[0], hasher.Chain("tenant-a", tokens, 8, 1)[0]);
  EXPECT_NE(hasher.Chain("tenant-a", tokens, 8, 1)[0], hasher.Chain("tenant-b", tokens, 8, 1)[0]);
  EXPECT_EQ(hasher.Chain("tenant-a", tokens, 8, 1)[0], hasher.Chain("tenant-a", tokens, 8, 1)[0]);
}

TEST(BlockHasherTest, TokenOrderSignAndBlockLengthMatter) {
  BlockHasher hasher;
  const BlockHash root = hasher.Root("");
  const std::vector<int32_t> ab = {1, 2}, ba = {2, 1}, ab0 = {1, 2, 0}, neg = {1, -2};
  EXPECT_NE(hasher.Block(root, ab), hasher.Block(root, ba));
  EXPECT_NE(hasher.Block(root, ab), hasher.Block(root, ab0));
  EXPECT_NE(hasher.Block(root, ab), hasher.Block(root, neg));
  // A root and a block over the same bytes are different kinds of node.
  EXPECT_NE(hasher.Root(""), hasher.Block(BlockHash{}, {}));
}

TEST(BlockHasherTest, KeyChangesEveryHash) {
  const std::vector<int32_t> tokens = Iota(4);
  BlockHasher a;
  BlockHasher b(SipHashKey{1, 2});
  EXPECT_NE(a.Chain("", tokens, 4, 1)[0], b.Chain("", tokens, 4, 1)[0]);
}

TEST(BlockHasherTest, ManyDistinctBlocksHaveDistinctHashes) {
  BlockHasher hasher;
  const BlockHash root = hasher.Root("");
  std::vector<BlockHash> seen;
  for (int32_t t = 0; t < 2000; ++t) {
    const std::vector<int32_t> block = {t, t + 1, t + 2};
    seen.push_back(hasher.Block(root, block));
  }
  std::sort(seen.begin(), seen.end(), [](const BlockHash& x, const BlockHash& y) {
    return x.hi != y.hi ? x.hi < y.hi : x.lo < y.lo;
  });
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
}

}  // namespace
}  // namespace glimpse::kvcache
