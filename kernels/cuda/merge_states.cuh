// The combination of a row's split-KV partial states (attention_common.h), per element: one
// definition for the merge kernel (attention_common.cu) and for the last block of a split
// decode (paged_decode_common.cuh) or prefill / tree-verification tile (prefill_work.cuh),
// which merges the chunks itself.
#ifndef GLIMPSE_KERNELS_CUDA_MERGE_STATES_CUH_
#define GLIMPSE_KERNELS_CUDA_MERGE_STATES_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace glimpse::kernels::cuda::internal {

struct MergedElement {
  float o;    // element d of the row's output (0 when no chunk saw a key)
  float lse;  // the row's natural-log sum of exponentials (-inf when no chunk saw a key)
};

// Element d of state `state` (row * num_qo_heads + qo head) merged over chunks 0 .. n-1 of
// partial_o [chunk][..][head_dim] / partial_lse [chunk][..], chunk c at c * chunk_stride
// states. kFromL2: read with ld.global.cg, for partials other blocks of the same launch wrote
// (L1 is not coherent across SMs).
template <bool kFromL2>
__device__ __forceinline__ MergedElement MergeChunkStates(const float* partial_o,
                                                          const float* partial_lse,
                                                          int64_t chunk_stride, int64_t state,
                                                          int d, int head_dim, int n) {
  auto load = [](const float* p) {
    if constexpr (kFromL2) {
      return __ldcg(p);
    } else {
      return *p;
    }
  };
  float m = -INFINITY;
  for (int c = 0; c < n; ++c) m = fmaxf(m, load(partial_lse + c * chunk_stride + state));
  if (m == -INFINITY) return {0.0f, -INFINITY};
  float sum_w = 0.0f;
  float acc = 0.0f;
  for (int c = 0; c < n; ++c) {
    const float w = expf(load(partial_lse + c * chunk_stride + state) - m);
    sum_w += w;
    acc += w * load(partial_o + (c * chunk_stride + state) * head_dim + d);
  }
  return {acc / sum_w, m + logf(sum_w)};
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_MERGE_STATES_CUH_
