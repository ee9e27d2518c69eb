#include "tools/loadgen/progress.h"

#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

TEST(FormatProgressLineTest, FillsTheBarInProportionAndCountsOutcomes) {
  EXPECT_EQ(FormatProgressLine("c=4", 5, 1, 20, 2.04, 8), "c=4  [##......]  5/20 ok 4 failed 1  2.0 s");
  EXPECT_EQ(FormatProgressLine("r=2", 0, 0, 20, 0, 4), "r=2  [....]  0/20 ok 0 failed 0  0.0 s");
  EXPECT_EQ(FormatProgressLine("r=2", 20, 0, 20, 9.96, 4), "r=2  [####]  20/20 ok 20 failed 0  10.0 s");
}

TEST(FormatProgressLineTest, NeverOverflowsTheBar) {
  // More done than planned (cannot happen, but must not write past the bar) and no total.
  EXPECT_EQ(FormatProgressLine("x", 30, 0, 20, 1, 4), "x  [####]  30/20 ok 30 failed 0  1.0 s");
  EXPECT_EQ(FormatProgressLine("x", 0, 0, 0, 1, 4), "x  [####]  0/0 ok 0 failed 0  1.0 s");
}

}  // namespace
}  // namespace glimpse::tools::loadgen
