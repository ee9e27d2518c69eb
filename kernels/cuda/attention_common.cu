#include "kernels/cuda/attention_common.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/merge_states.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::FindSequence;
using internal::FromFloat;

constexpr int kThreads = 128;

// Grid: one block per row; threads loop over (qo head, dim).
template <typename T>
__global__ void __launch_bounds__(kThreads) MergeStatesKernel(MergeStatesParams p) {
  const int32_t row = blockIdx.x;
  const int32_t seq =
      p.qo_indptr == nullptr ? row : FindSequence(p.qo_indptr, p.num_seqs, row);
  const int32_t num_pages = p.kv_indptr[seq + 1] - p.kv_indptr[seq];
  const int32_t kv_len = KvLength(num_pages, p.kv_last_page_len[seq], p.page_size);
  const int32_t n = min(NumKvChunks(kv_len, p.chunk_keys), p.num_chunks);
  const int64_t chunk_stride = static_cast<int64_t>(p.num_rows) * p.num_qo_heads;
  T* o = static_cast<T*>(p.o);
  const int total = p.num_qo_heads * p.head_dim;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int head = idx / p.head_dim;
    const int d = idx - head * p.head_dim;
    const int64_t state = static_cast<int64_t>(row) * p.num_qo_heads + head;
    const internal::MergedElement merged = internal::MergeChunkStates</*kFromL2=*/false>(
        p.partial_o, p.partial_lse, chunk_stride, state, d, p.head_dim, n);
    o[state * p.head_dim + d] = FromFloat<T>(merged.o);
    if (d == 0 && p.lse != nullptr) p.lse[state] = merged.lse;
  }
}

}  // namespace

cudaError_t LaunchMergeAttentionStates(const MergeStatesParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_qo_heads > 0 &&
                                 params.head_dim > 0 && params.chunk_keys > 0 &&
                                 params.num_chunks > 0 && params.page_size > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.partial_o != nullptr && params.partial_lse != nullptr &&
                                 params.o != nullptr && params.kv_indptr != nullptr &&
                                 params.kv_last_page_len != nullptr);
  if (params.num_rows == 0) return cudaSuccess;
  switch (params.dtype) {
    case DType::kF32:
      MergeStatesKernel<float><<<params.num_rows, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
    case DType::kBF16:
      MergeStatesKernel<bf16><<<params.num_rows, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace glimpse::kernels::cuda
