#include "server/router.h"

#include <vector>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

std::vector<uint32_t> Prompt(uint32_t prefix_seed, uint32_t suffix_seed, size_t prefix = 300) {
  std::vector<uint32_t> p;
  for (size_t i = 0; i < prefix; ++i) p.push_back(prefix_seed * 1000 + static_cast<uint32_t>(i));
  for (uint32_t i = 0; i < 20; ++i) p.push_back(suffix_seed * 7 + i);
  return p;
}

TEST(RouterTest, LeastOutstandingHealthyBackendWins) {
  Router router;
  std::vector<BackendView> b = {{true, 5}, {true, 2}, {false, 0}, {true, 3}};
  EXPECT_EQ(router.Choose(b, std::nullopt), 1u);
  b[1].healthy = false;
  EXPECT_EQ(router.Choose(b, std::nullopt), 3u);
  EXPECT_EQ(router.Choose(b, std::nullopt, /*exclude=*/3), 0u);
  for (auto& v : b) v.healthy = false;
  EXPECT_FALSE(router.Choose(b, std::nullopt).has_value());
}

TEST(RouterTest, SharedLongPrefixStaysOnOneReplicaDespiteDifferentSuffixes) {
  Router router;
  std::vector<BackendView> b = {{true, 0}, {true, 0}};
  const auto first = router.Choose(b, router.AffinityKey(Prompt(1, 1)));
  ASSERT_TRUE(first.has_value());
  b[*first].outstanding = 3;  // Busier than the other, within the slack of 4.
  for (uint32_t suffix = 2; suffix < 6; ++suffix) {
    EXPECT_EQ(router.Choose(b, router.AffinityKey(Prompt(1, suffix))), first) << suffix;
  }
  // A different prefix goes to the least loaded replica.
  EXPECT_NE(router.Choose(b, router.AffinityKey(Prompt(2, 1))), first);
}

TEST(RouterTest, AffinityYieldsWhenTheReplicaIsTooBusyAndMovesThePrefix) {
  RouterOptions options;
  options.affinity_slack = 4;
  Router router(options);
  std::vector<BackendView> b = {{true, 0}, {true, 0}};
  const auto key = router.AffinityKey(Prompt(1, 1));
  const size_t first = *router.Choose(b, key);
  b[first].outstanding = 5;  // 5 > 0 + 4
  const size_t other = 1 - first;
  EXPECT_EQ(router.Choose(b, key), other);
  b[first].outstanding = 0;
  b[other].outstanding = 2;  // Within the slack: the prefix now lives on `other`.
  EXPECT_EQ(router.Choose(b, key), other);
}

TEST(RouterTest, ShortPromptsHaveNoAffinityAndUnhealthyAffinityIsIgnored) {
  Router router;
  EXPECT_FALSE(router.AffinityKey(Prompt(1, 1, 100)).has_value());
  EXPECT_FALSE(router.AffinityKey(std::string_view("short text")).has_value());
  std::vector<BackendView> b = {{true, 0}, {true, 1}};
  const auto key = router.AffinityKey(Prompt(3, 1));
  ASSERT_EQ(router.Choose(b, key), 0u);
  b[0].healthy = false;
  EXPECT_EQ(router.Choose(b, key), 1u);
}

TEST(RouterTest, AffinityMemoryIsBounded) {
  RouterOptions options;
  options.max_affinity_keys = 10;
  Router router(options);
  std::vector<BackendView> b = {{true, 0}};
  for (uint32_t i = 0; i < 50; ++i) router.Choose(b, router.AffinityKey(Prompt(i, 0)));
  EXPECT_EQ(router.num_affinity_keys(), 10);
}

}  // namespace
}  // namespace glimpse::server
