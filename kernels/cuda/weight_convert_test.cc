// Weight conversion to bf16 (every stored format, odd shapes) and the fp32 -> bf16 activation
// cast (paired and scalar paths, odd lengths) against a host reference: widened values are
// exact, so the results must equal round-to-nearest-even bf16 of them bit for bit.
#include "kernels/cuda/weight_convert.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"
#include "kernels/cuda/testing/weight_fixture.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

const testing::Tolerance kExact{0.0, 0.0, 0.0};

std::vector<double> RoundedReference(const std::vector<float>& values) {
  std::vector<double> ref(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    ref[i] = testing::Bf16ToFloat(testing::FloatToBf16(values[i]));
  }
  return ref;
}

void RunWeightsCase(WeightFormat format, int64_t rows, int64_t cols) {
  const std::string name = std::string("weights_to_bf16 ") + testing::FormatName(format) +
                           " " + std::to_string(rows) + "x" + std::to_string(cols);
  const testing::HostWeights w = testing::MakeRandomWeights(format, rows, cols);
  DeviceArray<uint8_t> d_src;
  DeviceArray<uint16_t> d_dst;
  GLIMPSE_ASSERT_CUDA(d_src.Upload(w.bytes));
  GLIMPSE_ASSERT_CUDA(d_dst.Allocate(static_cast<size_t>(rows * cols)));  // poisoned
  WeightsToBf16Params p;
  p.format = format;
  p.src = d_src.get();
  p.dst = d_dst.get();
  p.rows = rows;
  p.cols = cols;
  GLIMPSE_ASSERT_CUDA(LaunchWeightsToBf16(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<uint16_t> bits;
  GLIMPSE_ASSERT_CUDA(d_dst.Download(&bits));
  GLIMPSE_EXPECT_CLOSE(name, testing::Bf16ToFloat(bits), RoundedReference(w.values), kExact);
}

GLIMPSE_CUDA_TEST(WeightsToBf16MatchesExactWidening) {
  for (const WeightFormat format : {WeightFormat::kF32, WeightFormat::kF16,
                                    WeightFormat::kBF16}) {
    RunWeightsCase(format, 1, 1);
    RunWeightsCase(format, 37, 67);
    RunWeightsCase(format, 192, 512);
    RunWeightsCase(format, 2, (1 << 23) + 5);  // past one pass of the grid-stride loop (2^24)
  }
  RunWeightsCase(WeightFormat::kQ8_0, 1, 32);
  RunWeightsCase(WeightFormat::kQ8_0, 37, 96);
  RunWeightsCase(WeightFormat::kQ8_0, 512, 192);
}

GLIMPSE_CUDA_TEST(WeightsToBf16RejectsQ8ColumnsNotMultipleOf32) {
  DeviceArray<uint8_t> d_src;
  DeviceArray<uint16_t> d_dst;
  GLIMPSE_ASSERT_CUDA(d_src.Allocate(64));
  GLIMPSE_ASSERT_CUDA(d_dst.Allocate(64));
  WeightsToBf16Params p;
  p.format = WeightFormat::kQ8_0;
  p.src = d_src.get();
  p.dst = d_dst.get();
  p.rows = 1;
  p.cols = 33;
  GLIMPSE_EXPECT(LaunchWeightsToBf16(p, nullptr) == cudaErrorInvalidValue, "cols = 33");
}

void RunCastCase(int64_t n, int64_t offset) {
  const std::string name = "cast_f32_to_bf16 n=" + std::to_string(n) +
                           " offset=" + std::to_string(offset);
  std::vector<float> x = testing::RandomNormal(static_cast<size_t>(n + offset), 0.0f, 3.0f);
  DeviceArray<float> d_x;
  DeviceArray<uint16_t> d_y;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_y.Allocate(static_cast<size_t>(n + offset)));
  // An odd offset misaligns both pointers and takes the scalar path.
  GLIMPSE_ASSERT_CUDA(LaunchCastF32ToBf16(d_x.get() + offset, d_y.get() + offset, n, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<uint16_t> bits;
  GLIMPSE_ASSERT_CUDA(d_y.Download(&bits));
  const std::vector<float> all = testing::Bf16ToFloat(bits);
  const std::vector<float> got(all.begin() + offset, all.end());
  const std::vector<float> in(x.begin() + offset, x.end());
  GLIMPSE_EXPECT_CLOSE(name, got, RoundedReference(in), kExact);
  // Elements before the offset stay poisoned (0xFFFF is a bf16 NaN).
  for (int64_t i = 0; i < offset; ++i) {
    GLIMPSE_EXPECT(bits[i] == 0xFFFF, name + ": wrote before the start");
  }
}

GLIMPSE_CUDA_TEST(CastF32ToBf16RoundsToNearestEven) {
  for (const int64_t n : {1, 2, 7, 192, 4097, (1 << 25) + 3}) {  // 2^25 + 3: past one pass
    RunCastCase(n, 0);
    RunCastCase(n, 1);
  }
}

// bf16 -> fp32 is exact: every bf16 bit pattern (NaNs aside) must come back as the float with
// the same upper 16 bits.
void RunWidenCase(int64_t n, int64_t offset) {
  const std::string name = "cast_bf16_to_f32 n=" + std::to_string(n) +
                           " offset=" + std::to_string(offset);
  const std::vector<float> x = testing::RoundBf16(
      testing::RandomNormal(static_cast<size_t>(n + offset), 0.0f, 3.0f));
  DeviceArray<uint16_t> d_x;
  DeviceArray<float> d_y;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(testing::ToBf16(x)));
  GLIMPSE_ASSERT_CUDA(d_y.Allocate(static_cast<size_t>(n + offset)));  // poisoned: NaN
  // An odd offset misaligns both pointers and takes the scalar path.
  GLIMPSE_ASSERT_CUDA(LaunchCastBf16ToF32(d_x.get() + offset, d_y.get() + offset, n, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> all;
  GLIMPSE_ASSERT_CUDA(d_y.Download(&all));
  const std::vector<float> got(all.begin() + offset, all.end());
  const std::vector<double> want(x.begin() + offset, x.end());
  GLIMPSE_EXPECT_CLOSE(name, got, want, kExact);
  for (int64_t i = 0; i < offset; ++i) {
    GLIMPSE_EXPECT(std::isnan(all[i]), name + ": wrote before the start");
  }
}

GLIMPSE_CUDA_TEST(CastBf16ToF32IsExact) {
  for (const int64_t n : {1, 2, 7, 192, 4097}) {
    RunWidenCase(n, 0);
    RunWidenCase(n, 1);
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
