#include "tools/loadgen/arrivals.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

struct Moments {
  double mean = 0;
  double cv = 0;  // Coefficient of variation: std / mean.
};

Moments Sample(double rate, double burstiness, int n) {
  ArrivalSchedule schedule(rate, burstiness, 42);
  std::vector<double> gaps(n);
  double sum = 0;
  for (double& g : gaps) sum += (g = schedule.NextGapSeconds());
  const double mean = sum / n;
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  return {mean, std::sqrt(var / n) / mean};
}

TEST(ArrivalScheduleTest, PoissonGapsHaveMeanOneOverRateAndUnitVariation) {
  const Moments m = Sample(/*rate=*/20, /*burstiness=*/1, 200000);
  EXPECT_NEAR(m.mean, 0.05, 0.05 * 0.01);
  EXPECT_NEAR(m.cv, 1.0, 0.02);  // Exponential gaps.
}

TEST(ArrivalScheduleTest, BurstinessShapesTheVariationButNotTheRate) {
  // Gamma with shape k has CV 1/sqrt(k).
  const Moments bursty = Sample(5, 0.25, 200000);
  EXPECT_NEAR(bursty.mean, 0.2, 0.2 * 0.02);
  EXPECT_NEAR(bursty.cv, 2.0, 0.06);
  const Moments regular = Sample(5, 4.0, 200000);
  EXPECT_NEAR(regular.mean, 0.2, 0.2 * 0.01);
  EXPECT_NEAR(regular.cv, 0.5, 0.02);
}

TEST(ArrivalScheduleTest, SameSeedSameSchedule) {
  ArrivalSchedule a(10, 1, 7), b(10, 1, 7);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.NextGapSeconds(), b.NextGapSeconds());
}

}  // namespace
}  // namespace glimpse::tools::loadgen
