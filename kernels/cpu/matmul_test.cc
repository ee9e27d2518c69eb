#include "kernels/cpu/matmul.h"

#include <cstring>
#include <random>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"

namespace glimpse::kernels::cpu {
namespace {

struct TestMatrix {
  std::vector<uint8_t> bytes;
  MatrixView view;
};

TestMatrix RandomMatrix(WeightType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  TestMatrix m;
  switch (type) {
    case WeightType::kF32:
      m.bytes.resize(rows * cols * 4);
      for (int64_t i = 0; i < rows * cols; ++i) {
        const float v = dist(rng);
        std::memcpy(&m.bytes[i * 4], &v, 4);
      }
      break;
    case WeightType::kF16:
    case WeightType::kBF16:
      m.bytes.resize(rows * cols * 2);
      for (int64_t i = 0; i < rows * cols; ++i) {
        const uint16_t h = type == WeightType::kF16 ? FloatToHalf(dist(rng)) : FloatToBf16(dist(rng));
        std::memcpy(&m.bytes[i * 2], &h, 2);
      }
      break;
    case WeightType::kQ8_0:
      m.bytes.resize(rows * cols / 32 * 34);
      for (int64_t b = 0; b < rows * cols / 32; ++b) {
        const uint16_t d = FloatToHalf(0.01f + 0.001f * static_cast<float>(b % 7));
        std::memcpy(&m.bytes[b * 34], &d, 2);
        for (int i = 0; i < 32; ++i) m.bytes[b * 34 + 2 + i] = static_cast<uint8_t>(rng() % 255);
      }
      break;
  }
  m.view = MatrixView{type, m.bytes.data(), rows, cols};
  return m;
}

std::vector<float> RandomActivations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

struct Case {
  WeightType type;
  int64_t rows;  // output features (N)
  int64_t cols;  // input features (K)
};

class MatMulTest : public ::testing::TestWithParam<Case> {};

// Every output element must equal the scalar fma chain bit for bit, for every batch size
// (covering every tile shape and remainder) and thread count.
TEST_P(MatMulTest, EqualsScalarFmaReferenceBitwiseForAnyBatchAndThreads) {
  const Case c = GetParam();
  TestMatrix w = RandomMatrix(c.type, c.rows, c.cols, 11);
  auto packed = CpuPackedMatrix::Pack(w.view);
  ASSERT_TRUE(packed.ok()) << packed.status();
  const int64_t max_rows = 13;
  std::vector<float> x = RandomActivations(max_rows * c.cols, 5);
  std::vector<float> want(max_rows * c.rows);
  MatMulReference(x.data(), max_rows, w.view, want.data());
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t m = 1; m <= max_rows; ++m) {
      std::vector<float> got(m * c.rows, -1.0f);
      MatMul(x.data(), m, **packed, got.data(), pool);
      ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0)
          << "rows=" << m << " threads=" << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatMulTest,
    ::testing::Values(Case{WeightType::kF32, 16, 8}, Case{WeightType::kF32, 37, 19},
                      Case{WeightType::kF16, 100, 33}, Case{WeightType::kF16, 256, 192},
                      Case{WeightType::kBF16, 45, 64}, Case{WeightType::kQ8_0, 50, 64},
                      Case{WeightType::kQ8_0, 129, 96}));

TEST(MatMulTest, ReferenceMatchesDoubleDotProductClosely) {
  TestMatrix w = RandomMatrix(WeightType::kF16, 7, 50, 3);
  std::vector<float> x = RandomActivations(50, 4);
  std::vector<float> y(7);
  MatMulReference(x.data(), 1, w.view, y.data());
  for (int n = 0; n < 7; ++n) {
    double want = 0;
    for (int k = 0; k < 50; ++k) want += static_cast<double>(x[k]) * WeightAt(w.view, n, k);
    EXPECT_NEAR(y[n], want, 1e-4 * (1 + std::abs(want)));
  }
}

TEST(MatMulTest, Q8WeightIsScaleTimesQuant) {
  std::vector<uint8_t> block(34);
  const uint16_t d = FloatToHalf(0.5f);
  std::memcpy(block.data(), &d, 2);
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  MatrixView view{WeightType::kQ8_0, block.data(), 1, 32};
  for (int i = 0; i < 32; ++i) EXPECT_EQ(WeightAt(view, 0, i), 0.5f * (i - 16));
}

TEST(MatMulTest, PackRejectsQ8WithPartialBlocks) {
  std::vector<uint8_t> bytes(100);
  auto packed = CpuPackedMatrix::Pack(MatrixView{WeightType::kQ8_0, bytes.data(), 2, 40});
  EXPECT_FALSE(packed.ok());
}

}  // namespace
}  // namespace glimpse::kernels::cpu
