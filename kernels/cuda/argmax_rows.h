// Greedy decoding's reduction of a step's logits: for each row, the largest value and its
// column, so that only 8 bytes per row (not the row) cross to the host.
//
// Semantics (the host Sampler's greedy ArgMax, model/sampler.cc, exactly): NaN is never
// chosen; ties go to the lowest column; a row with no value above -inf (all -inf or NaN)
// gives column 0 and value -inf. +inf is a value like any other (the first +inf wins).
// Deterministic: the result does not depend on the launch's thread count or timing.
#ifndef GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_
#define GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glimpse::kernels::cuda {

struct ArgMaxRowsParams {
  const float* x = nullptr;  // device, [num_rows][cols] fp32
  int64_t num_rows = 0;      // < 2^31
  int64_t cols = 0;          // 1 .. 2^31 - 1
  int32_t* index = nullptr;  // device, [num_rows]
  float* value = nullptr;    // device, [num_rows]; may be null
};

// One 256-thread block per row.
cudaError_t LaunchArgMaxRows(const ArgMaxRowsParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ARGMAX_ROWS_H_
