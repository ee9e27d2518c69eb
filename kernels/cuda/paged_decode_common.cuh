// What the two paged decode kernels (paged_decode_attention.cu on CUDA cores,
// paged_decode_mma.cu on tensor cores) share: the block shape and the end of a block, where the
// online-softmax states of its warps merge into the chunk's result (internal; .cu files only).
#ifndef GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_
#define GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/merge_states.cuh"
#include "kernels/cuda/paged_decode_attention.h"

namespace glimpse::kernels::cuda::internal {

// A block is 4 warps on one (kv chunk, kv head, sequence): grid (plan.num_chunks,
// num_kv_heads, batch), as PlanPagedDecode sizes it.
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;

// Element `at` of o's bf16 copy (PagedDecodeParams::o_bf16), when asked for: `value` is what
// the fp32 o holds there.
__device__ __forceinline__ void StoreBf16Copy(const PagedDecodeParams& p, int64_t at, float value) {
  if (p.o_bf16 != nullptr) static_cast<bf16*>(p.o_bf16)[at] = __float2bfloat16_rn(value);
}

// With a split plan and PagedDecodeParams::merge_counters: counts this block's chunk of (seq,
// kv_head) as written; the block that counts the sequence's last of its num_seq_chunks
// chunks merges them all into o and lse (as LaunchMergeAttentionStates would, one launch
// later) and sets the counter back to 0 for the next launch. Call with the whole block once
// its partial state is stored.
template <typename Q, int kHeadDim>
__device__ __forceinline__ void MergeChunksIfLast(const PagedDecodeParams& p, int seq, int kv_head,
                                                  int num_seq_chunks, int group) {
  __shared__ int s_last;
  // This thread's partial stores, visible device-wide before the block is counted.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = p.merge_counters + static_cast<int64_t>(seq) * p.kv.num_kv_heads + kv_head;
    const bool last = atomicAdd(counter, 1) == num_seq_chunks - 1;
    // The other chunks' stores, visible to this block's reads below (published by the barrier).
    __threadfence();
    if (last) *counter = 0;  // no block of (seq, kv_head) is left to count
    s_last = last;
  }
  __syncthreads();
  if (!s_last) return;
  const float* ws_o = static_cast<const float*>(p.workspace);
  const float* ws_lse =
      ws_o + static_cast<int64_t>(p.plan.num_chunks) * p.batch * p.num_qo_heads * kHeadDim;
  const int64_t chunk_stride = static_cast<int64_t>(p.batch) * p.num_qo_heads;
  for (int idx = threadIdx.x; idx < group * kHeadDim; idx += blockDim.x) {
    const int j = idx / kHeadDim;
    const int d = idx - j * kHeadDim;
    const int64_t state = static_cast<int64_t>(seq) * p.num_qo_heads + kv_head * group + j;
    const MergedElement merged = MergeChunkStates</*kFromL2=*/true>(
        ws_o, ws_lse, chunk_stride, state, d, kHeadDim, num_seq_chunks);
    static_cast<Q*>(p.o)[state * kHeadDim + d] = FromFloat<Q>(merged.o);
    StoreBf16Copy(p, state * kHeadDim + d, merged.o);
    if (d == 0 && p.lse != nullptr) p.lse[state] = merged.lse;
  }
}

// Merges the warps' states and writes query heads 0 .. group-1 of (seq, kv_head): o and lse
// without a split, else the chunk's normalized fp32 partial state to the workspace, merged by
// the sequence's last block (MergeChunksIfLast) or, without merge_counters, by
// LaunchMergeAttentionStates. A sequence of one chunk in a split launch that merges in the
// kernel is its own result: o and lse directly, no partial state, no count. Warp w's state for head
// j: running max s_m[w][j] (log2 units; -inf when the warp saw no key), sum s_l[w][j] and
// unnormalized output s_acc[w][j][:]. Call with the whole block after a barrier that publishes the
// three arrays; num_seq_chunks is NumKvChunks of the sequence.
template <typename Q, int kHeadDim, int kGroup>
__device__ __forceinline__ void StoreDecodeStates(const PagedDecodeParams& p, int seq, int kv_head,
                                                  int chunk, int num_seq_chunks, int group,
                                                  const float (*s_m)[kGroup],
                                                  const float (*s_l)[kGroup],
                                                  const float (*s_acc)[kGroup][kHeadDim]) {
  const bool split = p.plan.num_chunks > 1 && (p.merge_counters == nullptr || num_seq_chunks > 1);
  float* ws_o = static_cast<float*>(p.workspace);
  float* ws_lse =
      ws_o + static_cast<int64_t>(p.plan.num_chunks) * p.batch * p.num_qo_heads * kHeadDim;
  for (int idx = threadIdx.x; idx < kGroup * kHeadDim; idx += blockDim.x) {
    const int j = idx / kHeadDim;
    const int d = idx - j * kHeadDim;
    if (j >= group) continue;
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) m_all = fmaxf(m_all, s_m[w][j]);
    float out = 0.0f;
    float lse = -INFINITY;
    if (m_all != -INFINITY) {
      float l_all = 0.0f;
      float o_all = 0.0f;
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float wgt = FastExp2(s_m[w][j] - m_all);
        l_all += s_l[w][j] * wgt;
        o_all += s_acc[w][j][d] * wgt;
      }
      out = o_all / l_all;
      lse = (m_all + log2f(l_all)) * kLn2;
    }
    const int64_t state = static_cast<int64_t>(seq) * p.num_qo_heads + kv_head * group + j;
    if (split) {
      const int64_t cs = static_cast<int64_t>(chunk) * p.batch * p.num_qo_heads + state;
      ws_o[cs * kHeadDim + d] = out;
      if (d == 0) ws_lse[cs] = lse;
    } else {
      static_cast<Q*>(p.o)[state * kHeadDim + d] = FromFloat<Q>(out);
      StoreBf16Copy(p, state * kHeadDim + d, out);
      if (d == 0 && p.lse != nullptr) p.lse[state] = lse;
    }
  }
  if (split && p.merge_counters != nullptr) {
    MergeChunksIfLast<Q, kHeadDim>(p, seq, kv_head, num_seq_chunks, group);
  }
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_
