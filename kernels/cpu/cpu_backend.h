// The CPU implementation of kernels::Backend: fp32 arithmetic over weights kept in their
// stored type and a KV cache of fp32 (default), fp16 or bf16 elements (kv_layout.h), every op
// batch-invariant (see matmul.h and attention.h), data-parallel over a private ThreadPool.
//
// Ownership: owns its thread pool; PackedMatrix objects it returns own their packed copies.
// Thread-safety: one driving thread at a time (the Backend contract).
#ifndef GLIMPSE_KERNELS_CPU_CPU_BACKEND_H_
#define GLIMPSE_KERNELS_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/kv_layout.h"
#include "kernels/cpu/thread_pool.h"

namespace glimpse::kernels::cpu {

// Not final: tests derive from it to observe what it is asked for (host allocations).
class CpuBackend : public Backend {
 public:
  // In-place sum of x[0..n) over the tensor-parallel group a backend is a rank of, called on
  // the rank's own thread; every rank must end with the same values. Lets several CpuBackends
  // in one process act as the ranks of a split model (see kernels/cpu/
  // in_process_tensor_parallel.h, which tests the sharded forward without GPUs).
  using AllReduceFn = std::function<void(float* x, int64_t n)>;

  // num_threads <= 0 picks DefaultNumThreads(). A backend of its own: a tensor-parallel group
  // of one, whose AllReduceSum does nothing. kv_type: the elements of the KV tensors it stores
  // and attends over.
  explicit CpuBackend(int num_threads = 0, KvElementType kv_type = KvElementType::kF32);
  // A rank of a tensor-parallel group whose sum is `all_reduce`.
  CpuBackend(int num_threads, AllReduceFn all_reduce, KvElementType kv_type = KvElementType::kF32);

  std::string name() const override;
  int num_threads() const { return pool_.num_threads(); }

  void* Allocate(size_t num_bytes) override;
  void Free(void* ptr) override;
  void CopyToBackend(void* dst, const void* host_src, size_t num_bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t num_bytes) override;
  // The host rules in place: this backend's memory is the host's, so no copy of the rows.
  void ArgMaxRows(const float* x, int64_t num_rows, int64_t cols, int32_t* host_index,
                  float* host_value) override {
    ArgMaxRowsOnHost(x, num_rows, cols, host_index, host_value);
  }
  void TopKRows(const float* x, int64_t num_rows, int64_t cols, int32_t k, int32_t* host_count,
                int32_t* host_index, float* host_value, float* host_row_max,
                double* host_row_exp_sum, const float* host_temperature,
                double* host_row_exp_sum_t1) override {
    TopKRowsOnHost(x, num_rows, cols, k, host_count, host_index, host_value, host_row_max,
                   host_row_exp_sum, host_temperature, host_row_exp_sum_t1);
  }
  void CopyWithinBackend(void* dst, const void* src, size_t num_bytes) override;
  size_t KvElementBytes() const override { return KvElementSize(kv_type_); }

  absl::StatusOr<std::unique_ptr<PackedMatrix>> PackMatrix(const MatrixView& w) override;
  void MatMul(const float* x, int64_t num_rows, const PackedMatrix& w, float* y) override;
  void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t num_ids,
                       float* out) override;
  void RmsNorm(const float* x, const float* weight, int64_t num_rows, int64_t dim, float eps,
               float* out) override;
  void Rope(const RopeParams& params) override;
  void StoreKv(const KvStoreParams& params) override;
  void PagedAttention(const PagedAttentionParams& params) override;
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) override;
  void AddInPlace(float* x, const float* y, int64_t n) override;
  void GatherRows(const float* x, int64_t dim, const int32_t* rows, int64_t num_rows,
                  float* out) override;
  void AllReduceSum(float* x, int64_t n) override;

 private:
  ThreadPool pool_;
  AllReduceFn all_reduce_;  // Empty for a group of one.
  KvElementType kv_type_;
};

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_CPU_BACKEND_H_
