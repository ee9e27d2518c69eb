// Shard arithmetic of tensor parallelism (issue #5): which heads and FFN features a rank owns.
// The model's loader (model/tensor_parallel.h) and the NCCL group (kernels/cuda/
// tensor_parallel.h) share these, so every rank of every backend agrees on the split.
//
// Header-only and standard-library-only on purpose: nvcc compiles it into the CUDA group
// (kernels/cuda/nvcc_compile.sh) and gcc into the CPU build.
#ifndef GLIMPSE_KERNELS_TENSOR_PARALLEL_SHARD_H_
#define GLIMPSE_KERNELS_TENSOR_PARALLEL_SHARD_H_

#include <cstdint>
#include <string>

namespace glimpse::kernels {

// The half-open range [begin, end) of `n` items that rank `rank` of `size` owns: contiguous,
// sizes differing by at most one, earlier ranks taking the remainder.
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

inline ShardRange ShardOf(int64_t n, int rank, int size) {
  const int64_t base = n / size;
  const int64_t extra = n % size;
  ShardRange r;
  r.begin = rank * base + (rank < extra ? rank : extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

// Query/KV heads of a rank when heads are split in whole GQA groups: KV heads by ShardOf, and
// each KV head's group of num_heads / num_kv_heads query heads with it, so a rank's queries
// only read its own KV heads. Valid when CheckHeadSplit(...) is "".
struct HeadShard {
  ShardRange q_heads;
  ShardRange kv_heads;
};

inline HeadShard HeadShardOf(int32_t num_heads, int32_t num_kv_heads, int rank, int size) {
  HeadShard s;
  s.kv_heads = ShardOf(num_kv_heads, rank, size);
  const int64_t group = num_heads / num_kv_heads;
  s.q_heads = {s.kv_heads.begin * group, s.kv_heads.end * group};
  return s;
}

// "" when the model's heads split evenly over `size` ranks, else why not (a sentence for an
// InvalidArgument). KV heads are never replicated across ranks, so size must divide them.
inline std::string CheckHeadSplit(int32_t num_heads, int32_t num_kv_heads, int size) {
  if (size < 1) return "the tensor-parallel size must be >= 1";
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    return "num_heads must be a multiple of num_kv_heads";
  }
  if (num_kv_heads % size != 0) {
    return "the model's " + std::to_string(num_kv_heads) +
           " KV heads do not split evenly over " + std::to_string(size) +
           " ranks; use a tensor-parallel size that divides the KV head count";
  }
  return "";
}

}  // namespace glimpse::kernels

#endif  // GLIMPSE_KERNELS_TENSOR_PARALLEL_SHARD_H_
