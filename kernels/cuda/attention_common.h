// Split-KV plumbing shared by the attention kernels (paged decode, prefill, tree verification).
//
// Long sequences with few query rows leave the GPU idle if one block walks the whole KV, so
// the KV of every sequence is cut into chunks of `chunk_keys` keys; each chunk yields a
// partial state per (query row, qo head) and MergeAttentionStates combines them:
//
//   partial_o   [num_chunks][num_rows][num_qo_heads][head_dim]   fp32, already normalized
//   partial_lse [num_chunks][num_rows][num_qo_heads]             fp32, natural log of sum exp
//
//   o   = sum_c exp(lse_c - M) * o_c / sum_c exp(lse_c - M),  M = max_c lse_c
//   lse = M + log(sum_c exp(lse_c - M))
//
// A sequence of kv_len keys has NumKvChunks(kv_len) = max(1, ceil(kv_len / chunk_keys))
// chunks; chunk 0 always exists so that empty sequences still produce o = 0, lse = -inf.
// Every chunk c < NumKvChunks writes all of its rows (rows that see no key of the chunk get
// lse = -inf, o = 0); chunks beyond are never read.
#ifndef GLIMPSE_KERNELS_CUDA_ATTENTION_COMMON_H_
#define GLIMPSE_KERNELS_CUDA_ATTENTION_COMMON_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"

namespace glimpse::kernels::cuda {

GLIMPSE_HOST_DEVICE inline int32_t NumKvChunks(int32_t kv_len, int32_t chunk_keys) {
  return kv_len <= 0 ? 1 : (kv_len + chunk_keys - 1) / chunk_keys;
}

// Floats of workspace that a split launch needs.
inline size_t SplitWorkspaceFloats(int32_t num_chunks, int32_t num_rows, int32_t num_qo_heads,
                                   int32_t head_dim) {
  return static_cast<size_t>(num_chunks) * num_rows * num_qo_heads * (head_dim + 1);
}

struct MergeStatesParams {
  DType dtype = DType::kBF16;        // of `o`
  const float* partial_o = nullptr;  // [num_chunks][num_rows][num_qo_heads][head_dim]
  const float* partial_lse = nullptr;  // [num_chunks][num_rows][num_qo_heads]
  void* o = nullptr;                 // [num_rows][num_qo_heads][head_dim]
  float* lse = nullptr;              // [num_rows][num_qo_heads]; may be null
  // Row r belongs to the sequence s with qo_indptr[s] <= r < qo_indptr[s+1] (device, [num_seqs
  // + 1]); null means one row per sequence (decode: s = r).
  const int32_t* qo_indptr = nullptr;
  int32_t num_seqs = 0;
  const int32_t* kv_indptr = nullptr;         // device, [num_seqs + 1]
  const int32_t* kv_last_page_len = nullptr;  // device, [num_seqs]
  int32_t page_size = 0;
  int32_t chunk_keys = 0;
  int32_t num_chunks = 0;  // the leading dimension of partial_o / partial_lse
  int32_t num_rows = 0;
  int32_t num_qo_heads = 0;
  int32_t head_dim = 0;
};

cudaError_t LaunchMergeAttentionStates(const MergeStatesParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ATTENTION_COMMON_H_
