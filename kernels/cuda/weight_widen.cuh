// Device-side widening of one weight element to fp32 (internal; included by .cu files only).
// Exact for every format, and for Q8_0 the same single rounding of q * d as the CPU backend
// (kernels/cpu/matmul.cc WeightAt), so widened values are bitwise those of the CPU.
#ifndef GLIMPSE_KERNELS_CUDA_WEIGHT_WIDEN_CUH_
#define GLIMPSE_KERNELS_CUDA_WEIGHT_WIDEN_CUH_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/weight_format.h"

namespace glimpse::kernels::cuda::internal {

__device__ __forceinline__ float HalfBitsToFloat(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// Element `col` of the row starting at `row` (byte address) in `format`. Loads are byte-wise
// for the 16-bit and Q8_0 formats, so no alignment beyond the row start is assumed; fp32 rows
// are 4-byte aligned because every row is 4 * cols bytes from a 256-byte aligned base.
__device__ __forceinline__ float WidenWeight(WeightFormat format, const uint8_t* row,
                                             int64_t col) {
  switch (format) {
    case WeightFormat::kF32:
      return reinterpret_cast<const float*>(row)[col];
    case WeightFormat::kF16: {
      const uint16_t bits = static_cast<uint16_t>(row[2 * col] | (row[2 * col + 1] << 8));
      return HalfBitsToFloat(bits);
    }
    case WeightFormat::kBF16: {
      const uint32_t bits = static_cast<uint32_t>(row[2 * col] | (row[2 * col + 1] << 8));
      return __uint_as_float(bits << 16);
    }
    case WeightFormat::kQ8_0: {
      const uint8_t* block = row + (col / kQ8_0BlockElements) * kQ8_0BlockBytes;
      const float d = HalfBitsToFloat(static_cast<uint16_t>(block[0] | (block[1] << 8)));
      const int8_t q = static_cast<int8_t>(block[2 + col % kQ8_0BlockElements]);
      return __fmul_rn(static_cast<float>(q), d);
    }
  }
  return __int_as_float(0x7fc00000);  // NaN: unreachable
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_WEIGHT_WIDEN_CUH_
