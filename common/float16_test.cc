#include "common/float16.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>

#include "gtest/gtest.h"

namespace glimpse {
namespace {

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// The F16C instructions are an independent reference for both directions.
TEST(Float16Test, HalfToFloatMatchesF16cForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float ours = HalfToFloat(static_cast<uint16_t>(h));
    const float hw = _cvtsh_ss(static_cast<uint16_t>(h));
    if (std::isnan(hw)) {
      EXPECT_TRUE(std::isnan(ours)) << h;
    } else {
      EXPECT_EQ(Bits(ours), Bits(hw)) << h;
    }
  }
}

TEST(Float16Test, FloatToHalfRoundsLikeF16c) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) << f;
  }
  // Halfway cases around 1.0 round to even.
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);
}

TEST(Float16Test, Bf16RoundTripsAndRoundsToNearestEven) {
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.5f)), 1.5f);
  EXPECT_EQ(FloatToBf16(1.0f + 1.0f / 256), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

}  // namespace
}  // namespace glimpse
