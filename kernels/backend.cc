#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace glimpse::kernels {

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

void TopKRowsOnHost(const float* rows, int64_t num_rows, int64_t cols, int32_t k, int32_t* count,
                    int32_t* index, float* value) {
  std::vector<int32_t> columns;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* row = rows + r * cols;
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
                       int32_t* host_count, int32_t* host_index, float* host_value) {
  std::vector<float> rows(static_cast<size_t>(num_rows * cols));
  CopyToHost(rows.data(), x, rows.size() * sizeof(float));
  TopKRowsOnHost(rows.data(), num_rows, cols, k, host_count, host_index, host_value);
}

}  // namespace glimpse::kernels
