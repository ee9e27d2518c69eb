#include "kvcache/host_swap_space.h"

#include <set>

#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

TEST(HostSwapSpaceTest, AllocateReturnsDistinctBlocksUntilFull) {
  HostSwapSpace host(4);
  auto a = host.Allocate(3);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(std::set<int32_t>(a->begin(), a->end()).size(), 3u);
  EXPECT_EQ(host.num_used(), 3);
  for (int32_t b : *a) EXPECT_TRUE(host.in_use(b));
  EXPECT_TRUE(host.CheckInvariants().ok());
}

TEST(HostSwapSpaceTest, AllocateReturnsNulloptWhenFullAndChangesNothing) {
  HostSwapSpace host(3);
  auto a = host.Allocate(2);
  EXPECT_FALSE(host.Allocate(2).has_value());
  EXPECT_EQ(host.num_free(), 1);
  host.Release(*a);
  EXPECT_EQ(host.num_free(), 3);
  EXPECT_TRUE(host.Allocate(3).has_value());
  EXPECT_TRUE(host.CheckInvariants().ok());
}

TEST(HostSwapSpaceTest, EmptySpaceRefusesAnyBlockButAcceptsZero) {
  HostSwapSpace host(0);
  EXPECT_FALSE(host.Allocate(1).has_value());
  EXPECT_TRUE(host.Allocate(0).has_value());
}

TEST(HostSwapSpaceDeathTest, ReleasingAFreeHostBlockIsABug) {
  HostSwapSpace host(2);
  const int32_t b[] = {1};
  EXPECT_DEATH(host.Release(b), "CHECK failed");
}

}  // namespace
}  // namespace glimpse::kvcache
