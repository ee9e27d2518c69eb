// RMSNorm fused with the residual add (the pre-attention / pre-MLP norm of a Llama block):
//
//   if x != nullptr:  residual[r][:] = round_T(residual[r][:] + x[r][:])      (in place)
//   out[r][:] = residual[r][:] / sqrt(mean(residual[r][:]^2) + eps) * weight[:]
//
// The norm reads the residual as stored (rounded to T), so out == RMSNorm(residual_out)
// exactly as a reference on the stored values computes it. fp32 accumulation.
//
// dtypes: x, residual, weight and out all bf16, or all fp32. With fp32, out_bf16 may take a
// second copy of out rounded to bf16 (nearest even, as LaunchCastF32ToBf16 rounds), for a
// bf16 matmul that reads the norm's output: one launch instead of the norm and a cast.
#ifndef GLIMPSE_KERNELS_CUDA_RMSNORM_H_
#define GLIMPSE_KERNELS_CUDA_RMSNORM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace glimpse::kernels::cuda {

struct AddRmsNormParams {
  DType dtype = DType::kBF16;
  const void* x = nullptr;   // [num_rows][dim], row stride `dim`; nullptr: no residual add
  void* residual = nullptr;  // [num_rows][dim], row stride `dim`; updated in place
  const void* weight = nullptr;  // [dim]
  void* out = nullptr;           // [num_rows][dim], row stride `dim`; may not alias residual
  void* out_bf16 = nullptr;      // optional, fp32 dtype only: [num_rows][dim] bf16, out rounded
  int32_t num_rows = 0;
  int32_t dim = 0;
  float eps = 1e-5f;
};

// One block per row. Vectorized (16-byte) when dim is a multiple of the vector width and all
// pointers are 16-byte aligned; scalar otherwise.
cudaError_t LaunchAddRmsNorm(const AddRmsNormParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_RMSNORM_H_
