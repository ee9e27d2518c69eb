// Embedding lookup from a table in its stored format (weight_format.h), widened to fp32:
//
//   out[i][:] = widen(table[ids[i]][:])      for i < num_ids
//
// Widening is exact (Q8_0: q * d in fp32), so rows are bitwise those of the CPU backend.
// An id outside [0, num_rows) yields a row of NaN (the CUDA backend checks ids on the host
// before launching; the NaN row makes a bad id visible instead of reading out of bounds).
#ifndef GLIMPSE_KERNELS_CUDA_EMBEDDING_H_
#define GLIMPSE_KERNELS_CUDA_EMBEDDING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/weight_format.h"

namespace glimpse::kernels::cuda {

struct EmbeddingParams {
  WeightFormat format = WeightFormat::kF32;
  const void* table = nullptr;  // device, [num_rows][WeightRowBytes(format, cols)] bytes
  int64_t num_rows = 0;         // vocabulary size
  int64_t cols = 0;             // embedding width; kQ8_0: a multiple of 32
  const int32_t* ids = nullptr;  // device, [num_ids]
  int64_t num_ids = 0;
  float* out = nullptr;  // device, fp32 [num_ids][cols]
};

// One block per id, threads over the columns.
cudaError_t LaunchEmbedding(const EmbeddingParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_EMBEDDING_H_
