#include "kernels/cpu/in_process_tensor_parallel.h"

#include <algorithm>

#include "common/check.h"

namespace glimpse::kernels::cpu {

InProcessTensorParallelGroup::InProcessTensorParallelGroup(int size)
    : size_(size), barrier_(size), buffers_(size, nullptr), counts_(size, 0) {
  CHECK(size >= 1);
}

std::unique_ptr<CpuBackend> InProcessTensorParallelGroup::CreateRankBackend(int rank,
                                                                            int num_threads,
                                                                            KvElementType kv_type) {
  CHECK(rank >= 0 && rank < size_);
  return std::make_unique<CpuBackend>(
      num_threads, [this, rank](float* x, int64_t n) { AllReduceSum(rank, x, n); }, kv_type);
}

void InProcessTensorParallelGroup::AllReduceSum(int rank, float* x, int64_t n) {
  if (size_ == 1) return;
  buffers_[rank] = x;
  counts_[rank] = n;
  barrier_.arrive_and_wait();  // Every rank's buffer is published.
  for (int r = 0; r < size_; ++r) CHECK(counts_[r] == n);
  // Per thread, reused: the forward pass all-reduces twice per layer.
  thread_local std::vector<float> sum;
  sum.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float s = buffers_[0][i];
    for (int r = 1; r < size_; ++r) s += buffers_[r][i];
    sum[i] = s;
  }
  // No rank may overwrite its buffer (or publish the next one) while another still reads it.
  barrier_.arrive_and_wait();
  std::copy(sum.begin(), sum.end(), x);
}

}  // namespace glimpse::kernels::cpu
