// The fp32 path of LaunchPrefillAttention (prefill_attention.h, PrefillAttentionParams::dtype
// == DType::kF32): prefill and tree-verification attention of fp32 queries over an fp32 paged
// KV cache, on CUDA cores in fp32 throughout (prefill_attention_f32.cu). Internal: callers go
// through LaunchPrefillAttention, which checks the parameters and merges split chunks.
#ifndef GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_F32_H_
#define GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_F32_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/prefill_attention.h"

namespace glimpse::kernels::cuda::internal {

// Dynamic shared memory of one block at `head_dim` (32, 64 or 128).
size_t PrefillF32SharedMemoryBytes(int32_t head_dim);

// Launches the blocks of the plan (64-row tiles, PrefillKernel::kMmaSync's plan); with a split
// plan they write the chunks' partial states to the workspace and the caller merges them.
cudaError_t LaunchPrefillAttentionF32Blocks(const PrefillAttentionParams& params,
                                            cudaStream_t stream);

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_F32_H_
