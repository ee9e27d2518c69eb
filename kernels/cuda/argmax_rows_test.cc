// LaunchArgMaxRows against a plain CPU loop with the host sampler's greedy rule (the first
// strictly greater value; NaN and -inf never chosen; column 0 when nothing is above -inf):
// fresh random rows at widths that do and do not fill the block's threads, plus rows planted
// with ties, NaN, -inf and +inf where the rule decides.
#include "kernels/cuda/argmax_rows.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

void Reference(const float* row, int64_t cols, int32_t* index, float* value) {
  int32_t best = 0;
  float best_value = -kInf;
  for (int64_t c = 0; c < cols; ++c) {
    if (row[c] > best_value) {
      best_value = row[c];
      best = static_cast<int32_t>(c);
    }
  }
  *index = best;
  *value = best_value;
}

void RunCase(int64_t cols, int32_t rows) {
  std::vector<float> x = testing::RandomNormal(static_cast<size_t>(cols) * rows, 0.0f, 3.0f);
  // Planted rows (when there are enough): the rule's corners.
  auto row = [&](int32_t r) { return x.data() + static_cast<size_t>(r) * cols; };
  if (rows >= 8 && cols >= 4) {
    // 1: the maximum three times, the first late in the row.
    const float top = 50.0f;
    const int64_t first = cols / 2;
    row(1)[first] = top;
    row(1)[cols - 1] = top;
    row(1)[first + 1] = top;
    // 2: NaN at column 0 and everywhere but one value.
    for (int64_t c = 0; c < cols; ++c) row(2)[c] = kNan;
    row(2)[cols / 3] = -7.0f;
    // 3: all -inf; 4: all NaN; 5: NaN and -inf mixed (NaN first).
    for (int64_t c = 0; c < cols; ++c) {
      row(3)[c] = -kInf;
      row(4)[c] = kNan;
      row(5)[c] = c % 2 == 0 ? kNan : -kInf;
    }
    // 6: +inf twice; the first wins. 7: the maximum at column 0 and again at the end.
    row(6)[cols - 2] = kInf;
    row(6)[cols - 1] = kInf;
    row(7)[0] = 60.0f;
    row(7)[cols - 1] = 60.0f;
  }
  DeviceArray<float> d_x, d_value;
  DeviceArray<int32_t> d_index;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_index.Allocate(rows));  // poisoned: -1 and NaN until written
  GLIMPSE_ASSERT_CUDA(d_value.Allocate(rows));
  ArgMaxRowsParams p;
  p.x = d_x.get();
  p.num_rows = rows;
  p.cols = cols;
  p.index = d_index.get();
  p.value = d_value.get();
  GLIMPSE_ASSERT_CUDA(LaunchArgMaxRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> index;
  std::vector<float> value;
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index));
  GLIMPSE_ASSERT_CUDA(d_value.Download(&value));
  for (int32_t r = 0; r < rows; ++r) {
    int32_t want_index = 0;
    float want_value = 0.0f;
    Reference(row(r), cols, &want_index, &want_value);
    const std::string what = "cols " + std::to_string(cols) + " row " + std::to_string(r) +
                             ": got " + std::to_string(index[r]) + " (" + std::to_string(value[r]) +
                             "), want " + std::to_string(want_index) + " (" +
                             std::to_string(want_value) + ")";
    GLIMPSE_EXPECT(index[r] == want_index, what);
    GLIMPSE_EXPECT(value[r] == want_value, what);  // exact; -inf == -inf
  }
  // Without the value output only the index is written.
  p.value = nullptr;
  GLIMPSE_ASSERT_CUDA(d_index.Poison());
  GLIMPSE_ASSERT_CUDA(LaunchArgMaxRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> index_only;
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index_only));
  GLIMPSE_EXPECT(index_only == index, "cols " + std::to_string(cols) + ": index without value");
}

GLIMPSE_CUDA_TEST(ArgMaxRowsMatchesTheGreedyRule) {
  RunCase(1, 3);
  RunCase(7, 9);
  RunCase(256, 8);
  RunCase(1000, 12);
  RunCase(50257, 10);
  RunCase(128256, 9);
}

GLIMPSE_CUDA_TEST(ArgMaxRowsRefusesBadShapes) {
  DeviceArray<float> d_x;
  DeviceArray<int32_t> d_index;
  GLIMPSE_ASSERT_CUDA(d_x.Allocate(16));
  GLIMPSE_ASSERT_CUDA(d_index.Allocate(4));
  ArgMaxRowsParams p;
  p.x = d_x.get();
  p.num_rows = 4;
  p.cols = 0;
  p.index = d_index.get();
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaErrorInvalidValue, "cols 0 accepted");
  p.cols = 4;
  p.index = nullptr;
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaErrorInvalidValue, "null index accepted");
  p.index = d_index.get();
  p.num_rows = 0;
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaSuccess, "zero rows refused");
}

}  // namespace
}  // namespace glimpse::kernels::cuda
