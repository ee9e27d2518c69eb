// Conversions to bf16 on the device for the CUDA backend's bf16 matmuls:
//
//   LaunchWeightsToBf16:  weights as stored in the model file (F32, F16, BF16, Q8_0; see
//                         weight_format.h) -> bf16, once at load time (Q8_0 is dequantized);
//   LaunchCastF32ToBf16:  fp32 activations -> bf16 before every bf16 matmul (and attention
//                         queries before the tensor-core attention kernels);
//   LaunchCastBf16ToF32:  back, exactly (those kernels' bf16 outputs -> fp32 activations).
//
// Every element is widened exactly to fp32 first (Q8_0: q * d, one fp32 rounding, as the CPU
// backend widens it), then rounded to the nearest bf16, ties to even. NaN stays NaN.
#ifndef GLIMPSE_KERNELS_CUDA_WEIGHT_CONVERT_H_
#define GLIMPSE_KERNELS_CUDA_WEIGHT_CONVERT_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/weight_format.h"

namespace glimpse::kernels::cuda {

struct WeightsToBf16Params {
  WeightFormat format = WeightFormat::kF16;
  const void* src = nullptr;  // device, [rows][WeightRowBytes(format, cols)] bytes, 4-byte
                              // aligned for kF32
  void* dst = nullptr;        // device, bf16 [rows][cols], row-major; may not overlap src
  int64_t rows = 0;
  int64_t cols = 0;  // kQ8_0: a multiple of 32
};

// One thread per output element (grid-stride over rows * cols).
cudaError_t LaunchWeightsToBf16(const WeightsToBf16Params& params, cudaStream_t stream);

// y[i] = bf16(x[i]) for i < n. x: device fp32 [n]; y: device bf16 [n]. Two elements per
// thread when both pointers allow 8/4-byte accesses; scalar otherwise.
cudaError_t LaunchCastF32ToBf16(const float* x, void* y, int64_t n, cudaStream_t stream);

// y[i] = float(x[i]) (exact) for i < n. x: device bf16 [n]; y: device fp32 [n]. Two elements
// per thread when both pointers allow 4/8-byte accesses; scalar otherwise.
cudaError_t LaunchCastBf16ToF32(const void* x, float* y, int64_t n, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_WEIGHT_CONVERT_H_
