// LaunchTopKRows against a plain CPU sort with the host sampler's top-k order (value
// descending, column ascending; NaN and -inf never chosen; +0 and -0 equal): fresh random rows
// at widths that do and do not fill the block, rows quantized so that thousands of values tie
// at the threshold, and rows planted with NaN, -inf, +inf, signed zeros and fewer values above
// -inf than k. Entries past a row's count must stay as the poison left them. The rows' softmax
// normalizers, at per-row temperatures, against the host sampler's sum. All of it with each
// row split over several blocks too (chunks that tie at the threshold, hold no candidate, or
// are empty), and the split policy.
#include "kernels/cuda/topk_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// The columns the host sampler would keep, in increasing column order.
std::vector<int32_t> Reference(const float* row, int64_t cols, int32_t k) {
  std::vector<std::pair<float, int32_t>> entries;
  for (int64_t c = 0; c < cols; ++c) {
    if (!std::isnan(row[c]) && row[c] != -kInf) entries.emplace_back(row[c], c);
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  entries.resize(std::min<size_t>(entries.size(), static_cast<size_t>(k)));
  std::vector<int32_t> columns;
  for (const auto& entry : entries) columns.push_back(entry.second);
  std::sort(columns.begin(), columns.end());
  return columns;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// The host sampler's normalizer of a raw row at temperature t (model/sampler.cc: at 1 the
// log-softmax's, else the nucleus weights'): the largest value ignoring NaN, and the id-order
// double sum of expf((x - max) / t) over x above -inf (the number of +inf values when the
// maximum is +inf; 0 when it is -inf).
std::pair<float, double> ReferenceNormalizer(const float* row, int64_t cols, float t) {
  float max = -kInf;
  for (int64_t c = 0; c < cols; ++c) max = row[c] > max ? row[c] : max;
  double sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) {
    if (max == kInf) {
      sum += row[c] == kInf ? 1.0 : 0.0;
    } else if (max != -kInf && row[c] > -kInf) {
      sum += std::exp((row[c] - max) / t);  // fp32 expf, as the sampler
    }
  }
  return {max, sum};
}

void RunCase(int64_t cols, int32_t rows, int32_t k, int32_t splits = 1) {
  std::vector<float> x = testing::RandomNormal(static_cast<size_t>(cols) * rows, 0.0f, 3.0f);
  auto row = [&](int32_t r) { return x.data() + static_cast<size_t>(r) * cols; };
  if (rows >= 8) {
    // 1: quantized to halves: a handful of distinct values, so the threshold value is shared
    //    by many columns and only the lowest of them are taken.
    for (int64_t c = 0; c < cols; ++c) row(1)[c] = std::round(row(1)[c] * 2.0f) / 2.0f;
    // 2: NaN everywhere but a few values (fewer than k when k > 3).
    for (int64_t c = 0; c < cols; ++c) row(2)[c] = kNan;
    row(2)[cols - 1] = -5.0f;
    row(2)[cols / 2] = 1.0f;
    row(2)[0] = 1.0f;
    // 3: all -inf; 4: NaN and -inf mixed.
    for (int64_t c = 0; c < cols; ++c) {
      row(3)[c] = -kInf;
      row(4)[c] = c % 2 == 0 ? kNan : -kInf;
    }
    // 5: +inf twice, and signed zeros around -inf: zeros of both signs tie.
    for (int64_t c = 0; c < cols; ++c) row(5)[c] = c % 3 == 0 ? -kInf : (c % 3 == 1 ? 0.0f : -0.0f);
    row(5)[cols - 1] = kInf;
    row(5)[cols / 3] = kInf;
    // 6: negative values only (the keys of negative floats run backwards).
    for (int64_t c = 0; c < cols; ++c) row(6)[c] = -std::fabs(row(6)[c]) - 1.0f;
    // 7: one value repeated everywhere.
    for (int64_t c = 0; c < cols; ++c) row(7)[c] = 2.5f;
  }
  DeviceArray<float> d_x, d_value, d_row_max, d_temperature;
  DeviceArray<int32_t> d_count, d_index;
  DeviceArray<double> d_row_exp_sum, d_row_exp_sum_t1;
  const size_t slots = static_cast<size_t>(rows) * k;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_count.Allocate(rows));  // poisoned: -1 and NaN until written
  GLIMPSE_ASSERT_CUDA(d_index.Allocate(slots));
  GLIMPSE_ASSERT_CUDA(d_value.Allocate(slots));
  GLIMPSE_ASSERT_CUDA(d_row_max.Allocate(rows));
  GLIMPSE_ASSERT_CUDA(d_row_exp_sum.Allocate(rows));
  GLIMPSE_ASSERT_CUDA(d_row_exp_sum_t1.Allocate(rows));
  std::vector<float> temperature(rows);  // 1 (the logprobs' normalizer) every fourth row
  for (int32_t r = 0; r < rows; ++r) temperature[r] = 0.5f + 0.25f * static_cast<float>(r % 4);
  GLIMPSE_ASSERT_CUDA(d_temperature.Upload(temperature));
  TopKRowsParams p;
  p.x = d_x.get();
  p.num_rows = rows;
  p.cols = cols;
  p.k = k;
  p.count = d_count.get();
  p.index = d_index.get();
  p.value = d_value.get();
  p.row_max = d_row_max.get();
  p.row_exp_sum = d_row_exp_sum.get();
  p.temperature = d_temperature.get();
  p.row_exp_sum_t1 = d_row_exp_sum_t1.get();
  // A split launch's workspace, filled with the largest finite float: a chunk's unwritten
  // candidate slot would be chosen.
  DeviceArray<float> d_workspace;
  p.splits = splits;
  p.workspace_bytes = TopKRowsWorkspaceBytes(rows, splits, k);
  if (splits > 1) {
    GLIMPSE_ASSERT_CUDA(d_workspace.Upload(
        std::vector<float>(p.workspace_bytes / sizeof(float), std::numeric_limits<float>::max())));
    p.workspace = d_workspace.get();
  }
  GLIMPSE_ASSERT_CUDA(LaunchTopKRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> count, index;
  std::vector<float> value, row_max;
  std::vector<double> row_exp_sum, row_exp_sum_t1;
  GLIMPSE_ASSERT_CUDA(d_count.Download(&count));
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index));
  GLIMPSE_ASSERT_CUDA(d_value.Download(&value));
  GLIMPSE_ASSERT_CUDA(d_row_max.Download(&row_max));
  GLIMPSE_ASSERT_CUDA(d_row_exp_sum.Download(&row_exp_sum));
  GLIMPSE_ASSERT_CUDA(d_row_exp_sum_t1.Download(&row_exp_sum_t1));
  int mismatched_rows = 0;
  for (int32_t r = 0; r < rows; ++r) {
    const std::vector<int32_t> want = Reference(row(r), cols, k);
    const std::string what = "cols " + std::to_string(cols) + " k " + std::to_string(k) +
                             " splits " + std::to_string(splits) + " row " + std::to_string(r);
    GLIMPSE_EXPECT(
        count[r] == static_cast<int32_t>(want.size()),
        what + ": count " + std::to_string(count[r]) + ", want " + std::to_string(want.size()));
    bool same = count[r] == static_cast<int32_t>(want.size());
    for (size_t j = 0; same && j < want.size(); ++j) {
      const size_t slot = static_cast<size_t>(r) * k + j;
      same = index[slot] == want[j] && SameBits(value[slot], row(r)[want[j]]);
    }
    for (size_t j = want.size(); j < static_cast<size_t>(k); ++j) {
      const size_t slot = static_cast<size_t>(r) * k + j;
      same = same && index[slot] == -1 && std::isnan(value[slot]);  // left unwritten
    }
    if (!same) ++mismatched_rows;
    GLIMPSE_EXPECT(same, what + ": columns, values or unwritten entries differ");
    // The normalizer: the maximum exactly (either zero's sign), the count of +inf exactly, and
    // the sum up to the order of the double sums and expf's last-bit rounding (a term of
    // weight 1e-6 of the sum missing or doubled would show).
    const auto [want_max, want_sum] = ReferenceNormalizer(row(r), cols, temperature[r]);
    GLIMPSE_EXPECT(row_max[r] == want_max, what + ": row max " + std::to_string(row_max[r]) +
                                               ", want " + std::to_string(want_max));
    const bool exact_sum = std::isinf(want_max);
    GLIMPSE_EXPECT(exact_sum ? row_exp_sum[r] == want_sum
                             : std::fabs(row_exp_sum[r] - want_sum) <= 1e-6 * want_sum,
                   what + ": row exp sum " + std::to_string(row_exp_sum[r]) + ", want " +
                       std::to_string(want_sum));
    // The sum at temperature 1 besides, alike.
    const double want_sum_t1 = ReferenceNormalizer(row(r), cols, 1.0f).second;
    GLIMPSE_EXPECT(exact_sum ? row_exp_sum_t1[r] == want_sum_t1
                             : std::fabs(row_exp_sum_t1[r] - want_sum_t1) <= 1e-6 * want_sum_t1,
                   what + ": row exp sum at 1 " + std::to_string(row_exp_sum_t1[r]) + ", want " +
                       std::to_string(want_sum_t1));
  }
  if (rows >= 8 && cols >= 3) {  // row 5's two +inf in distinct columns
    GLIMPSE_EXPECT(
        row_max[3] == -kInf && row_exp_sum[3] == 0.0 && row_max[5] == kInf && row_exp_sum[5] == 2.0,
        "normalizers of rows without a finite maximum");
  }
  if (rows >= 8) {
    GLIMPSE_EXPECT(count[3] == 0 && count[4] == 0, "rows without candidates");
  }
  // Without the value output only counts and columns are written (and the normalizers only
  // when asked for).
  p.value = nullptr;
  p.row_max = nullptr;
  p.row_exp_sum = nullptr;
  p.temperature = nullptr;
  p.row_exp_sum_t1 = nullptr;
  GLIMPSE_ASSERT_CUDA(d_row_max.Poison());
  GLIMPSE_ASSERT_CUDA(d_index.Poison());
  GLIMPSE_ASSERT_CUDA(LaunchTopKRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> index_only;
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index_only));
  GLIMPSE_EXPECT(index_only == index, "cols " + std::to_string(cols) + ": index without value");
  GLIMPSE_ASSERT_CUDA(d_row_max.Download(&row_max));
  GLIMPSE_EXPECT(std::all_of(row_max.begin(), row_max.end(), [](float m) { return std::isnan(m); }),
                 "cols " + std::to_string(cols) + ": normalizers written without being asked");
}

GLIMPSE_CUDA_TEST(TopKRowsMatchesTheSamplerOrder) {
  RunCase(1, 3, 1);
  RunCase(1, 8, 4);  // k beyond the width
  RunCase(7, 9, 3);
  RunCase(600, 8, 1);
  RunCase(600, 8, 40);
  RunCase(1000, 12, 1000);  // k = cols: every value above -inf
  RunCase(50257, 9, 50);
  RunCase(128256, 8, 1024);
}

GLIMPSE_CUDA_TEST(TopKRowsSplitOverBlocksMatchesTheSamplerOrder) {
  RunCase(1, 8, 4, 2);     // the second chunk empty
  RunCase(7, 9, 3, 3);     // chunks of 3, 3 and 1 columns
  RunCase(7, 9, 3, 5);     // chunks of 2, the last one empty
  RunCase(600, 8, 40, 7);  // row 1's ties at the threshold span chunks
  RunCase(600, 8, 1, 64);
  RunCase(1000, 12, 1000, 4);  // a chunk holds fewer columns than k
  RunCase(50257, 9, 50, 31);
  RunCase(128256, 2, 64, TopKRowsSplits(2, 128256, 64, 132));
}

GLIMPSE_CUDA_TEST(TopKRowsSplitsKeepSMsBusyWithoutOutgrowingTheMerge) {
  // About sqrt(cols / k), capped by two blocks per SM over the rows and by kMaxTopKSplits.
  GLIMPSE_EXPECT(TopKRowsSplits(1, 128256, 64, 132) == 44, "batch 1, k 64");
  GLIMPSE_EXPECT(TopKRowsSplits(1, 128256, 256, 132) == 22, "batch 1, k 256");
  GLIMPSE_EXPECT(TopKRowsSplits(1, 128256, 1, 132) == kMaxTopKSplits, "batch 1, k 1");
  GLIMPSE_EXPECT(TopKRowsSplits(64, 128256, 64, 132) == 4, "batch 64");
  GLIMPSE_EXPECT(TopKRowsSplits(133, 128256, 64, 132) == 1, "batch 133: a block a row is enough");
  GLIMPSE_EXPECT(TopKRowsSplits(1, 1000, 512, 132) == 1, "k near the width: no split");
  GLIMPSE_EXPECT(TopKRowsSplits(1, 128256, 64, 0) == 1, "unknown SM count");
  GLIMPSE_EXPECT(TopKRowsWorkspaceBytes(3, 1, 64) == 0, "no workspace unsplit");
  GLIMPSE_EXPECT(TopKRowsWorkspaceBytes(3, 4, 64) == 3u * 4u * (20u + 8u * 64u), "workspace");
}

GLIMPSE_CUDA_TEST(TopKRowsRefusesBadShapes) {
  DeviceArray<float> d_x;
  DeviceArray<int32_t> d_count, d_index;
  GLIMPSE_ASSERT_CUDA(d_x.Allocate(16));
  GLIMPSE_ASSERT_CUDA(d_count.Allocate(4));
  GLIMPSE_ASSERT_CUDA(d_index.Allocate(16));
  TopKRowsParams p;
  p.x = d_x.get();
  p.num_rows = 4;
  p.cols = 4;
  p.k = 0;
  p.count = d_count.get();
  p.index = d_index.get();
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "k 0 accepted");
  p.k = 4;
  p.cols = 0;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "cols 0 accepted");
  p.cols = 4;
  p.count = nullptr;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "null count accepted");
  p.count = d_count.get();
  DeviceArray<float> d_row_max;
  GLIMPSE_ASSERT_CUDA(d_row_max.Allocate(4));
  p.row_max = d_row_max.get();  // without row_exp_sum
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "half a normalizer accepted");
  p.row_max = nullptr;
  DeviceArray<float> d_temperature;
  GLIMPSE_ASSERT_CUDA(d_temperature.Allocate(4));
  p.temperature = d_temperature.get();  // without the normalizers
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue,
                 "temperatures without normalizers accepted");
  p.temperature = nullptr;
  DeviceArray<double> d_row_exp_sum_t1;
  GLIMPSE_ASSERT_CUDA(d_row_exp_sum_t1.Allocate(4));
  p.row_exp_sum_t1 = d_row_exp_sum_t1.get();  // the sums at 1 without the normalizers
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue,
                 "sums at temperature 1 without normalizers accepted");
  p.row_exp_sum_t1 = nullptr;
  p.splits = 0;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "splits 0 accepted");
  p.splits = kMaxTopKSplits + 1;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue, "too many splits accepted");
  p.splits = 2;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue,
                 "a split without a workspace accepted");
  DeviceArray<float> d_workspace;
  GLIMPSE_ASSERT_CUDA(d_workspace.Allocate(TopKRowsWorkspaceBytes(4, 2, 4) / sizeof(float)));
  p.workspace = d_workspace.get();
  p.workspace_bytes = TopKRowsWorkspaceBytes(4, 2, 4) - 1;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaErrorInvalidValue,
                 "a split with too small a workspace accepted");
  p.workspace_bytes += 1;
  GLIMPSE_ASSERT_CUDA(LaunchTopKRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  p.splits = 1;
  p.num_rows = 0;
  GLIMPSE_EXPECT(LaunchTopKRows(p, nullptr) == cudaSuccess, "zero rows refused");
}

}  // namespace
}  // namespace glimpse::kernels::cuda
