#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <vector>

#include "common/check.h"

namespace glimpse::kernels {

void* Backend::AllocateHost(size_t num_bytes) {
  return ::operator new (std::max<size_t>(num_bytes, 1), std::align_val_t{64});
}

void Backend::FreeHost(void* ptr) {
  if (ptr != nullptr) ::operator delete (ptr, std::align_val_t{64});
}

void Backend::BatchCopyToHostAsync(std::span<const CopyOp> copies) {
  for (const CopyOp& c : copies) CopyToHostAsync(c.dst, c.src, c.num_bytes);
}

void Backend::BatchCopyToBackendAsync(std::span<const CopyOp> copies) {
  for (const CopyOp& c : copies) CopyToBackendAsync(c.dst, c.src, c.num_bytes);
}

void Backend::BatchCopyWithinBackend(std::span<const CopyOp> copies) {
  for (const CopyOp& c : copies) CopyWithinBackend(c.dst, c.src, c.num_bytes);
}

void ArgMaxRowsOnHost(const float* rows, int64_t num_rows, int64_t cols, int32_t* index,
                      float* value) {
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* row = rows + r * cols;
    int32_t best = 0;
    float best_value = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < cols; ++c) {
      if (row[c] > best_value) {  // false for NaN
        best_value = row[c];
        best = static_cast<int32_t>(c);
      }
    }
    index[r] = best;
    value[r] = best_value;
  }
}

namespace {

// The softmax normalizer of one row at `temperature` by the host sampler's rule
// (model/sampler.cc: ResultForToken at 1, CandidateProbabilities): fp32 expf of each
// difference over the temperature, summed in double in column order.
void RowNormalizerOnHost(const float* row, int64_t cols, float temperature, float* max_out,
                         double* exp_sum_out) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float max = -kInf;
  for (int64_t c = 0; c < cols; ++c) {
    if (row[c] > max) max = row[c];  // false for NaN
  }
  double sum = 0.0;
  if (max == kInf) {
    for (int64_t c = 0; c < cols; ++c) sum += row[c] == kInf ? 1.0 : 0.0;
  } else if (max != -kInf) {
    for (int64_t c = 0; c < cols; ++c) {
      if (row[c] > -kInf) sum += std::exp((row[c] - max) / temperature);  // skips -inf, NaN
    }
  }
  *max_out = max;
  *exp_sum_out = sum;
}

}  // namespace

void TopKRowsOnHost(const float* rows, int64_t num_rows, int64_t cols, int32_t k, int32_t* count,
                    int32_t* index, float* value, float* row_max, double* row_exp_sum,
                    const float* temperature, double* row_exp_sum_t1) {
  CHECK((row_max == nullptr) == (row_exp_sum == nullptr));
  CHECK(temperature == nullptr || row_max != nullptr);
  CHECK(row_exp_sum_t1 == nullptr || row_max != nullptr);
  std::vector<int32_t> columns;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* row = rows + r * cols;
    if (row_max != nullptr) {
      RowNormalizerOnHost(row, cols, temperature == nullptr ? 1.0f : temperature[r], &row_max[r],
                          &row_exp_sum[r]);
      if (row_exp_sum_t1 != nullptr) {
        RowNormalizerOnHost(row, cols, 1.0f, &row_max[r], &row_exp_sum_t1[r]);
      }
    }
    columns.clear();
    for (int64_t c = 0; c < cols; ++c) {
      if (!std::isnan(row[c]) && row[c] != -std::numeric_limits<float>::infinity()) {
        columns.push_back(static_cast<int32_t>(c));
      }
    }
    if (columns.size() > static_cast<size_t>(k)) {
      std::nth_element(
          columns.begin(), columns.begin() + k, columns.end(),
          [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
      columns.resize(static_cast<size_t>(k));
    }
    std::sort(columns.begin(), columns.end());
    count[r] = static_cast<int32_t>(columns.size());
    for (size_t j = 0; j < columns.size(); ++j) {
      index[r * k + static_cast<int64_t>(j)] = columns[j];
      value[r * k + static_cast<int64_t>(j)] = row[columns[j]];
    }
  }
}

void Backend::ArgMaxRows(const float* x, int64_t num_rows, int64_t cols, int32_t* host_index,
                         float* host_value) {
  std::vector<float> rows(static_cast<size_t>(num_rows * cols));
  CopyToHost(rows.data(), x, rows.size() * sizeof(float));
  ArgMaxRowsOnHost(rows.data(), num_rows, cols, host_index, host_value);
}

void Backend::TopKRows(const float* x, int64_t num_rows, int64_t cols, int32_t k,
                       int32_t* host_count, int32_t* host_index, float* host_value,
                       float* host_row_max, double* host_row_exp_sum, const float* host_temperature,
                       double* host_row_exp_sum_t1) {
  std::vector<float> rows(static_cast<size_t>(num_rows * cols));
  CopyToHost(rows.data(), x, rows.size() * sizeof(float));
  TopKRowsOnHost(rows.data(), num_rows, cols, k, host_count, host_index, host_value, host_row_max,
                 host_row_exp_sum, host_temperature, host_row_exp_sum_t1);
}

}  // namespace glimpse::kernels
