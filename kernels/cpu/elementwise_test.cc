#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/simd_math.h"

namespace glimpse::kernels::cpu {
namespace {

TEST(SimdMathTest, ExpIsAccurateAndVectorEqualsScalar) {
  for (float x = -80.0f; x < 80.0f; x += 0.0137f) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, Exp8(_mm256_set1_ps(x)));
    const float scalar = Exp1(x);
    EXPECT_EQ(std::memcmp(&lanes[3], &scalar, 4), 0) << x;
    const double want = std::exp(static_cast<double>(x));
    EXPECT_NEAR(scalar / want, 1.0, 4e-7) << x;
  }
  EXPECT_LT(Exp1(-INFINITY), 1e-37f);
  EXPECT_FALSE(std::isnan(Exp1(-INFINITY)));
}

TEST(ElementwiseTest, RmsNormMatchesDefinition) {
  std::vector<float> x = {1, -2, 3, 0.5f, 7};
  std::vector<float> w = {1, 2, 0.5f, 1, -1};
  std::vector<float> out(5);
  RmsNormRow(x.data(), w.data(), 5, 1e-5f, out.data());
  double ms = 0;
  for (float v : x) ms += v * v;
  ms /= 5;
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(out[i], x[i] / std::sqrt(ms + 1e-5) * w[i], 1e-6);
}

TEST(ElementwiseTest, RopeNormalRotatesAdjacentPairsAndPreservesNorm) {
  // One head of 4 dims at position 3, base 10000: pair i rotates by 3 * 10000^(-2i/4).
  std::vector<float> x = {1, 0, 0, 1};
  const int32_t pos = 3;
  RopeParams p;
  p.x = x.data();
  p.num_tokens = 1;
  p.num_heads = 1;
  p.head_dim = 4;
  p.rot_dim = 4;
  p.positions = &pos;
  p.freq_base = 10000.0f;
  p.style = RopeStyle::kNormal;
  ApplyRope(p);
  const double t0 = 3.0, t1 = 3.0 / 100.0;
  EXPECT_NEAR(x[0], std::cos(t0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(t0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(t1), 1e-6);
  EXPECT_NEAR(x[3], std::cos(t1), 1e-6);
}

TEST(ElementwiseTest, RopeNeoxRotatesHalves) {
  std::vector<float> x = {1, 0, 0, 0};
  const int32_t pos = 2;
  RopeParams p;
  p.x = x.data();
  p.num_tokens = 1;
  p.num_heads = 1;
  p.head_dim = 4;
  p.rot_dim = 4;
  p.positions = &pos;
  p.style = RopeStyle::kNeox;
  ApplyRope(p);
  EXPECT_NEAR(x[0], std::cos(2.0), 1e-6);
  EXPECT_NEAR(x[2], std::sin(2.0), 1e-6);
  EXPECT_EQ(x[1], 0.0f);
}

TEST(ElementwiseTest, SiluMulMatchesDefinitionInVectorAndTail) {
  std::vector<float> g(21), u(21), out(21);
  for (int i = 0; i < 21; ++i) {
    g[i] = -5.0f + 0.5f * i;
    u[i] = 0.25f * i;
  }
  SiluMul(g.data(), u.data(), 21, out.data());
  for (int i = 0; i < 21; ++i) {
    const double want = g[i] / (1 + std::exp(-static_cast<double>(g[i]))) * u[i];
    EXPECT_NEAR(out[i], want, 1e-5 * (1 + std::abs(want)));
  }
}

}  // namespace
}  // namespace glimpse::kernels::cpu
