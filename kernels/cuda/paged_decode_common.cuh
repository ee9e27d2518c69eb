// What the two paged decode kernels (paged_decode_attention.cu on CUDA cores,
// paged_decode_mma.cu on tensor cores) share: the block shape and the end of a block, where the
// online-softmax states of its warps merge into the chunk's result (internal; .cu files only).
#ifndef GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_
#define GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/paged_decode_attention.h"

namespace glimpse::kernels::cuda::internal {

// A block is 4 warps on one (kv chunk, kv head, sequence): grid (plan.num_chunks,
// num_kv_heads, batch), as PlanPagedDecode sizes it.
constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = kDecodeWarps * 32;

// Merges the warps' states and writes query heads 0 .. group-1 of (seq, kv_head): o and lse
// without a split, else the chunk's normalized fp32 partial state to the workspace (merged by
// LaunchMergeAttentionStates). Warp w's state for head j: running max s_m[w][j] (log2 units;
// -inf when the warp saw no key), sum s_l[w][j] and unnormalized output s_acc[w][j][:]. Call
// with the whole block after a barrier that publishes the three arrays.
template <typename Q, int kHeadDim, int kGroup>
__device__ __forceinline__ void StoreDecodeStates(const PagedDecodeParams& p, int seq, int kv_head,
                                                  int chunk, int group, const float (*s_m)[kGroup],
                                                  const float (*s_l)[kGroup],
                                                  const float (*s_acc)[kGroup][kHeadDim]) {
  const bool split = p.plan.num_chunks > 1;
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
      if (d == 0 && p.lse != nullptr) p.lse[state] = lse;
    }
  }
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_PAGED_DECODE_COMMON_CUH_
