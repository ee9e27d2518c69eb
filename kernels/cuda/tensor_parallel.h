// Tensor parallelism over the GPUs of one node (issue #5): the NCCL communicators of a group of
// ranks, one rank per device, and the all-reduce the sharded Llama forward needs after its two
// row-parallel projections (attention output, MLP down).
//
// How a model is split (Megatron-style; ShardOf gives each rank its range):
//
//            column-parallel (rows of W split)          row-parallel (columns of W split)
//   attention  q/k/v projections: the rank's heads  ->  o_proj over the rank's heads  -> AllReduce
//   MLP        gate/up: the rank's FFN features      ->  down over those features      -> AllReduce
//
// so every rank holds the full residual stream, and a layer costs two all-reduces of
// [num_tokens][dim] activations. Query heads are split in whole GQA groups (a rank's query
// heads use only its own KV heads), so the KV cache is split by KV head with no communication.
//
// With one rank the all-reduce still goes through ncclAllReduce (a copy), so the single-GPU
// path exercises the same code as a multi-GPU one.
//
// One process creates the whole group (ncclCommInitAll). Either one host thread drives every
// rank (AllReduceSum issues all ranks inside one NCCL group), or each rank is driven by its
// own thread, each calling AllReduceSumRank concurrently.
//
// Uses only the standard library, the CUDA runtime and NCCL, so it builds with plain nvcc.
// Thread-safety: Create/destruction from one thread; AllReduceSumRank(r) from rank r's thread.
#ifndef GLIMPSE_KERNELS_CUDA_TENSOR_PARALLEL_H_
#define GLIMPSE_KERNELS_CUDA_TENSOR_PARALLEL_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/dtype.h"
#include "kernels/tensor_parallel_shard.h"

namespace glimpse::kernels::cuda {

// The shard arithmetic (ShardRange, ShardOf, HeadShard, HeadShardOf, CheckHeadSplit) lives in
// kernels/tensor_parallel_shard.h, shared with the CPU build's model loader; the names resolve
// here unqualified (glimpse::kernels encloses this namespace).

// The communicators of one tensor-parallel group. Owns them (destroyed with the group).
class TensorParallelGroup {
 public:
  // One rank per entry of `devices` (CUDA ordinals, distinct). nullptr with `error` set when a
  // device or NCCL fails.
  static std::unique_ptr<TensorParallelGroup> Create(const std::vector<int>& devices,
                                                     std::string* error);
  ~TensorParallelGroup();
  TensorParallelGroup(const TensorParallelGroup&) = delete;
  TensorParallelGroup& operator=(const TensorParallelGroup&) = delete;

  int size() const { return static_cast<int>(devices_.size()); }
  int device(int rank) const { return devices_[static_cast<size_t>(rank)]; }
  ncclComm_t comm(int rank) const { return comms_[static_cast<size_t>(rank)]; }

  // In place: buffers[r] (on device(r), `count` elements of `dtype`) becomes the elementwise sum
  // over ranks, on streams[r]. Issues every rank from the calling thread (one NCCL group).
  ncclResult_t AllReduceSum(const std::vector<void*>& buffers, size_t count, DType dtype,
                            const std::vector<cudaStream_t>& streams);
  // The same for one rank, when each rank has its own thread (all ranks must call it).
  ncclResult_t AllReduceSumRank(int rank, void* buffer, size_t count, DType dtype,
                                cudaStream_t stream);

 private:
  explicit TensorParallelGroup(std::vector<int> devices) : devices_(std::move(devices)) {}

  std::vector<int> devices_;
  std::vector<ncclComm_t> comms_;
};

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_TENSOR_PARALLEL_H_
