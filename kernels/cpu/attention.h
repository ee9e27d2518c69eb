// Causal attention over the paged KV cache (CPU, fp32 arithmetic over a cache of fp32, fp16 or
// bf16 elements, kv_layout.h). See PagedAttentionParams in kernels/backend.h for the CSR
// page-table layout.
//
// Numerics: for one query row and one head, scores are s_j = scale * (q · k_j) with the dot
// product one fma chain over head_dim (d = 0, 1, ...), then a max-subtracted softmax summed in a
// fixed order (SoftmaxNumerators), then out = (sum_j p_j v_j) / sum_j p_j accumulated left to right
// per element. Nothing depends on the block size, the batch, or which thread runs the row:
// batch-invariant.
#ifndef GLIMPSE_KERNELS_CPU_ATTENTION_H_
#define GLIMPSE_KERNELS_CPU_ATTENTION_H_

#include "kernels/backend.h"
#include "kernels/cpu/kv_layout.h"
#include "kernels/cpu/thread_pool.h"

namespace glimpse::kernels::cpu {

// params.kv holds elements of `kv_type`.
void PagedAttention(const PagedAttentionParams& params, KvElementType kv_type, ThreadPool& pool);

// Scalar, unpaged reference: keys/values for one sequence given contiguously as
// [ctx][num_kv_heads][head_dim]; the query is at position ctx - 1. For tests.
void AttentionReference(const float* q, const float* k, const float* v, int32_t ctx,
                        int32_t num_heads, int32_t num_kv_heads, int32_t head_dim, float scale,
                        float* out);

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_ATTENTION_H_
