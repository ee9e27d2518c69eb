// A tensor-parallel group of CpuBackends inside one process, one rank per thread: the CPU twin
// of kernels/cuda/tensor_parallel.h's NCCL group, so that a model split over 2 or 4 ranks can be
// checked against the unsplit model in the default (CPU-only) build.
//
// AllReduceSum meets every rank at a barrier, then each rank sums all ranks' buffers in rank
// order (x_0 + x_1 + ... + x_{N-1}) into a private copy, meets them again (every buffer has
// been read), and writes the sum back. Every rank therefore ends with bitwise the same values,
// as NCCL's all-reduce guarantees; the order differs from an unsplit matmul's (fp32
// reassociation). Simple rather than fast: each rank reads all N buffers.
//
// Ownership: the group owns its barrier and rank table; backends from CreateRankBackend borrow
// the group, which must outlive them. Thread-safety: rank r's AllReduceSum from rank r's thread
// only, all ranks concurrently; a rank that never arrives blocks the others forever (every rank
// must run the same sequence of collectives, as with NCCL).
#ifndef GLIMPSE_KERNELS_CPU_IN_PROCESS_TENSOR_PARALLEL_H_
#define GLIMPSE_KERNELS_CPU_IN_PROCESS_TENSOR_PARALLEL_H_

#include <barrier>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace glimpse::kernels::cpu {

class InProcessTensorParallelGroup {
 public:
  explicit InProcessTensorParallelGroup(int size);
  InProcessTensorParallelGroup(const InProcessTensorParallelGroup&) = delete;
  InProcessTensorParallelGroup& operator=(const InProcessTensorParallelGroup&) = delete;

  int size() const { return size_; }

  // The backend of rank `rank` (num_threads and kv_type as CpuBackend's): its AllReduceSum is
  // this group's.
  std::unique_ptr<CpuBackend> CreateRankBackend(int rank, int num_threads,
                                                KvElementType kv_type = KvElementType::kF32);

  // x[0..n) of rank `rank` becomes the sum over all ranks' buffers (which must have the same n).
  void AllReduceSum(int rank, float* x, int64_t n);

 private:
  int size_;
  std::barrier<> barrier_;
  std::vector<const float*> buffers_;  // [size]: each rank's x of the current all-reduce
  std::vector<int64_t> counts_;        // [size]: each rank's n, checked equal
};

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_IN_PROCESS_TENSOR_PARALLEL_H_
