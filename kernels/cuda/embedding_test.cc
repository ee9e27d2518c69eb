// Embedding lookup in every stored format against the exact host widening: rows must be
// bitwise equal (the CPU backend widens the same way). Ids repeat, hit the first and last
// row, widths are odd; out-of-range ids give NaN rows; nothing else is written.
#include "kernels/cuda/embedding.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"
#include "kernels/cuda/testing/weight_fixture.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

void RunCase(WeightFormat format, int64_t vocab, int64_t cols, int32_t num_ids) {
  const std::string name = std::string("embedding ") + testing::FormatName(format) +
                           " vocab=" + std::to_string(vocab) + " cols=" + std::to_string(cols) +
                           " ids=" + std::to_string(num_ids);
  const testing::HostWeights table = testing::MakeRandomWeights(format, vocab, cols);
  std::vector<int32_t> ids(num_ids);
  for (int32_t i = 0; i < num_ids; ++i) {
    ids[i] = testing::RandomInt(0, static_cast<int32_t>(vocab - 1));
  }
  ids[0] = static_cast<int32_t>(vocab - 1);
  if (num_ids > 1) ids[1] = 0;
  if (num_ids > 2) ids[2] = ids[0];  // a repeat
  std::vector<double> ref(static_cast<size_t>(num_ids) * cols);
  for (int32_t i = 0; i < num_ids; ++i) {
    for (int64_t c = 0; c < cols; ++c) ref[i * cols + c] = table.values[ids[i] * cols + c];
  }
  DeviceArray<uint8_t> d_table;
  DeviceArray<int32_t> d_ids;
  DeviceArray<float> d_out;
  GLIMPSE_ASSERT_CUDA(d_table.Upload(table.bytes));
  GLIMPSE_ASSERT_CUDA(d_ids.Upload(ids));
  GLIMPSE_ASSERT_CUDA(d_out.Allocate(static_cast<size_t>(num_ids) * cols + 1));  // poisoned
  EmbeddingParams p;
  p.format = format;
  p.table = d_table.get();
  p.num_rows = vocab;
  p.cols = cols;
  p.ids = d_ids.get();
  p.num_ids = num_ids;
  p.out = d_out.get();
  GLIMPSE_ASSERT_CUDA(LaunchEmbedding(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out;
  GLIMPSE_ASSERT_CUDA(d_out.Download(&out));
  GLIMPSE_EXPECT(std::isnan(out.back()), name + ": wrote past the last row");
  out.pop_back();
  GLIMPSE_EXPECT_CLOSE(name, out, ref, testing::Tolerance{0.0, 0.0, 0.0});
}

GLIMPSE_CUDA_TEST(EmbeddingMatchesExactWidening) {
  for (const WeightFormat format : {WeightFormat::kF32, WeightFormat::kF16,
                                    WeightFormat::kBF16}) {
    RunCase(format, 1, 1, 1);
    RunCase(format, 4096, 192, 37);
    RunCase(format, 1000, 257, 300);
    RunCase(format, 50, 4099, 5);
  }
  RunCase(WeightFormat::kQ8_0, 1, 32, 1);
  RunCase(WeightFormat::kQ8_0, 4096, 192, 37);
  RunCase(WeightFormat::kQ8_0, 333, 288, 300);
}

GLIMPSE_CUDA_TEST(EmbeddingOutOfRangeIdGivesNanRow) {
  const testing::HostWeights table = testing::MakeRandomWeights(WeightFormat::kF32, 10, 33);
  const std::vector<int32_t> ids = {3, 10, -1, 9};
  DeviceArray<uint8_t> d_table;
  DeviceArray<int32_t> d_ids;
  DeviceArray<float> d_out;
  GLIMPSE_ASSERT_CUDA(d_table.Upload(table.bytes));
  GLIMPSE_ASSERT_CUDA(d_ids.Upload(ids));
  GLIMPSE_ASSERT_CUDA(d_out.Allocate(ids.size() * 33));
  GLIMPSE_ASSERT_CUDA(cudaMemset(d_out.get(), 0, ids.size() * 33 * sizeof(float)));
  EmbeddingParams p;
  p.format = WeightFormat::kF32;
  p.table = d_table.get();
  p.num_rows = 10;
  p.cols = 33;
  p.ids = d_ids.get();
  p.num_ids = static_cast<int64_t>(ids.size());
  p.out = d_out.get();
  GLIMPSE_ASSERT_CUDA(LaunchEmbedding(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out;
  GLIMPSE_ASSERT_CUDA(d_out.Download(&out));
  for (int64_t c = 0; c < 33; ++c) {
    GLIMPSE_EXPECT(out[c] == table.values[3 * 33 + c], "row 0");
    GLIMPSE_EXPECT(std::isnan(out[33 + c]), "id 10 (== vocab) must give NaN");
    GLIMPSE_EXPECT(std::isnan(out[66 + c]), "id -1 must give NaN");
    GLIMPSE_EXPECT(out[99 + c] == table.values[9 * 33 + c], "row 3");
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
