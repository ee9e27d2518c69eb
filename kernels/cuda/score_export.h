// Attention-score export for KV eviction scorers (lookahead / SnapKV-style): for chosen query
// rows of each sequence, per KV head, the fp32 sum over those rows and over the group's query
// heads of the softmax probability each key receives:
//
//   scores[s][h][j] = sum_{r in rows(s)} sum_{g < group} [j <= row_last_key[r]]
//                       * exp(sm_scale * q[rows[r]][h*group+g] · k_j - lse[rows[r]][h*group+g])
//
// for j < kv_len(s); entries kv_len(s) <= j < score_stride are written as 0. `lse` is the
// natural log-sum-exp the attention kernels write for the same rows (so the probabilities are
// exactly the ones the attention used, without a second softmax pass). Called once per layer
// with that layer's KV, lse and output slice.
//
// dtypes: q and KV both bf16 or both fp32; lse and scores fp32. head_dim <= 128.
#ifndef GLIMPSE_KERNELS_CUDA_SCORE_EXPORT_H_
#define GLIMPSE_KERNELS_CUDA_SCORE_EXPORT_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"

namespace glimpse::kernels::cuda {

struct ScoreExportParams {
  DType dtype = DType::kBF16;  // q and the KV caches
  const void* q = nullptr;     // [num_tokens][num_qo_heads][head_dim]
  const float* lse = nullptr;  // [num_tokens][num_qo_heads]
  float sm_scale = 1.0f;
  PagedKv kv;                  // page table over num_seqs sequences
  int32_t num_seqs = 0;
  int32_t num_qo_heads = 0;
  const int32_t* row_indptr = nullptr;    // device, [num_seqs + 1]: rows of sequence s
  const int32_t* rows = nullptr;          // device, [num_rows]: token index into q / lse
  const int32_t* row_last_key = nullptr;  // device, [num_rows]: last KV index the row sees
  float* scores = nullptr;  // device, [num_seqs][num_kv_heads][score_stride]
  int32_t score_stride = 0;  // >= every kv_len
};

// Grid: (score_stride / 64 key tiles, kv heads, sequences); deterministic (no atomics).
cudaError_t LaunchScoreExport(const ScoreExportParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_SCORE_EXPORT_H_
