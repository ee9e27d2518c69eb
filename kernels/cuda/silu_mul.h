// SwiGLU activation: out[r][i] = silu(gate[r][i]) * up[r][i], silu(x) = x / (1 + exp(-x)),
// computed in fp32. Strides let gate and up be the two halves of one fused [gate|up]
// projection output: gate = buf, up = buf + dim, in_row_stride = 2 * dim.
//
// dtypes: gate, up and out all bf16 or all fp32.
#ifndef GLIMPSE_KERNELS_CUDA_SILU_MUL_H_
#define GLIMPSE_KERNELS_CUDA_SILU_MUL_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace glimpse::kernels::cuda {

struct SiluMulParams {
  DType dtype = DType::kBF16;
  const void* gate = nullptr;  // [num_rows][in_row_stride], first `dim` used
  const void* up = nullptr;    // [num_rows][in_row_stride], first `dim` used
  void* out = nullptr;         // [num_rows][out_row_stride], first `dim` written
  int64_t in_row_stride = 0;   // elements, >= dim
  int64_t out_row_stride = 0;  // elements, >= dim
  int32_t num_rows = 0;
  int32_t dim = 0;
};

// 16-byte vectors when dim, both strides and all pointers allow it; scalar otherwise.
cudaError_t LaunchSiluMul(const SiluMulParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_SILU_MUL_H_
