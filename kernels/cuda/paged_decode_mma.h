// The tensor-core paged decode kernel (DecodeKernel::kMmaSync), internal to
// LaunchPagedDecode (paged_decode_attention.h), which validates the parameters and merges the
// chunks' states after it.
#ifndef GLIMPSE_KERNELS_CUDA_PAGED_DECODE_MMA_H_
#define GLIMPSE_KERNELS_CUDA_PAGED_DECODE_MMA_H_

#include <cuda_runtime_api.h>

#include "kernels/cuda/paged_decode_attention.h"

namespace glimpse::kernels::cuda::internal {

// Runs the kernel over every (chunk, kv head, sequence) of `params` (a bf16 cache, validated):
// o and lse without a split, else the chunks' partial states in the workspace.
cudaError_t LaunchPagedDecodeMmaChunks(const PagedDecodeParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_PAGED_DECODE_MMA_H_
