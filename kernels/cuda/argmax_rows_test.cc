// LaunchArgMaxRows against a plain CPU loop with the host sampler's greedy rule (the first
// strictly greater value; NaN and -inf never chosen; column 0 when nothing is above -inf):
// fresh random rows at widths that do and do not fill the block's threads, plus rows planted
// with ties, NaN, -inf, +inf and signed zeros where the rule decides; one block a row and
// several (split).
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

// Every element of a split launch's partial maxima and counters is zero.
template <typename T>
void ExpectAllZero(const DeviceArray<T>& d, const std::string& what) {
  std::vector<T> host;
  GLIMPSE_ASSERT_CUDA(d.Download(&host));
  bool zero = true;
  for (T v : host) zero = zero && v == 0;
  GLIMPSE_EXPECT(zero, what + ": the split's partial maxima and counters are left zero");
}

void RunCase(int64_t cols, int32_t rows, int32_t splits = 1) {
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
  if (rows >= 9 && cols >= 4) {
    // 8: everything negative but -0.0 and, later, +0.0: equal values, the first wins.
    for (int64_t c = 0; c < cols; ++c) row(8)[c] = -1.0f - std::fabs(row(8)[c]);
    row(8)[cols / 4] = -0.0f;
    row(8)[cols - 1] = 0.0f;
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
  DeviceArray<unsigned long long> d_partial;
  DeviceArray<unsigned int> d_counters;
  const std::string shape = "cols " + std::to_string(cols) + " splits " + std::to_string(splits);
  if (splits > 1) {
    GLIMPSE_ASSERT_CUDA(d_partial.Upload(std::vector<unsigned long long>(rows, 0)));
    GLIMPSE_ASSERT_CUDA(d_counters.Upload(std::vector<unsigned int>(rows, 0)));
    p.splits = splits;
    p.partial = d_partial.get();
    p.counters = d_counters.get();
  }
  GLIMPSE_ASSERT_CUDA(LaunchArgMaxRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  if (splits > 1) {
    ExpectAllZero(d_partial, shape);
    ExpectAllZero(d_counters, shape);
  }
  std::vector<int32_t> index;
  std::vector<float> value;
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index));
  GLIMPSE_ASSERT_CUDA(d_value.Download(&value));
  for (int32_t r = 0; r < rows; ++r) {
    int32_t want_index = 0;
    float want_value = 0.0f;
    Reference(row(r), cols, &want_index, &want_value);
    const std::string what = shape + " row " + std::to_string(r) + ": got " +
                             std::to_string(index[r]) + " (" + std::to_string(value[r]) +
                             "), want " + std::to_string(want_index) + " (" +
                             std::to_string(want_value) + ")";
    GLIMPSE_EXPECT(index[r] == want_index, what);
    GLIMPSE_EXPECT(value[r] == want_value, what);  // exact; -inf == -inf
  }
  // Without the value output only the index is written; a split launch again finds its
  // partial maxima and counters zero, as the first left them.
  p.value = nullptr;
  GLIMPSE_ASSERT_CUDA(d_index.Poison());
  GLIMPSE_ASSERT_CUDA(LaunchArgMaxRows(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> index_only;
  GLIMPSE_ASSERT_CUDA(d_index.Download(&index_only));
  GLIMPSE_EXPECT(index_only == index, shape + ": index without value");
  if (splits > 1) {
    ExpectAllZero(d_partial, shape + ", second launch");
    ExpectAllZero(d_counters, shape + ", second launch");
  }
}

GLIMPSE_CUDA_TEST(ArgMaxRowsMatchesTheGreedyRule) {
  RunCase(1, 3);
  RunCase(7, 9);
  RunCase(256, 8);
  RunCase(1000, 12);
  RunCase(50257, 10);
  RunCase(128256, 9);
}

// Several blocks a row, each its chunk, the row's last one writing the result: the same rule,
// also where the maxima fall in different chunks (rows 1, 6, 7 and 8), and chunks that do not
// divide the row.
GLIMPSE_CUDA_TEST(SplitArgMaxRowsMatchesTheGreedyRule) {
  RunCase(7, 9, 7);
  RunCase(1000, 12, 3);
  RunCase(50257, 10, 12);
  RunCase(128256, 9, ArgMaxRowsSplits(9, 128256, 132));
  RunCase(128256, 1, ArgMaxRowsSplits(1, 128256, 132));
}

GLIMPSE_CUDA_TEST(ArgMaxRowsSplitsFillTheGpuWithChunksOfAtLeastTheMinimum) {
  // 128256 columns on 132 SMs: 31 chunks of >= 4096 columns at batch 1 to 8, fewer as the
  // rows alone keep two blocks per SM busy, none from 133 rows.
  GLIMPSE_EXPECT(ArgMaxRowsSplits(1, 128256, 132) == 31, "batch 1");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(8, 128256, 132) == 31, "batch 8");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(64, 128256, 132) == 4, "batch 64");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(132, 128256, 132) == 2, "batch 132");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(133, 128256, 132) == 1, "batch 133");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(1, 4096, 132) == 1, "a row of one chunk");
  GLIMPSE_EXPECT(ArgMaxRowsSplits(1, 1 << 24, 132) == kMaxArgMaxSplits, "the most");
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
  p.splits = 2;
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaErrorInvalidValue,
                 "a split without its partial maxima and counters accepted");
  p.splits = 5;  // more than the 4 columns
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaErrorInvalidValue,
                 "more blocks than columns accepted");
  p.splits = 1;
  p.num_rows = 0;
  GLIMPSE_EXPECT(LaunchArgMaxRows(p, nullptr) == cudaSuccess, "zero rows refused");
}

}  // namespace
}  // namespace glimpse::kernels::cuda
