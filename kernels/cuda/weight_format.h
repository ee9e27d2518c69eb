// Storage formats of weight matrices as the model file holds them (GGUF), as the CUDA backend
// receives them: the device-side twin of kernels::WeightType (kernels/backend.h), kept here so
// that the kernels stay std + CUDA only.
//
// A matrix is row-major, W[rows][cols]; one row is WeightRowBytes(format, cols) bytes:
//
//   kF32   cols x fp32            kF16   cols x IEEE binary16       kBF16  cols x bfloat16
//   kQ8_0  cols/32 blocks of 34 bytes:  [ d: fp16 scale | q[0..32): int8 ]   w = q * d
#ifndef GLIMPSE_KERNELS_CUDA_WEIGHT_FORMAT_H_
#define GLIMPSE_KERNELS_CUDA_WEIGHT_FORMAT_H_

#include <cstdint>

namespace glimpse::kernels::cuda {

enum class WeightFormat { kF32, kF16, kBF16, kQ8_0 };

inline constexpr int64_t kQ8_0BlockElements = 32;
inline constexpr int64_t kQ8_0BlockBytes = 34;

// Bytes of one row of `cols` elements (Q8_0: cols must be a multiple of 32).
inline constexpr int64_t WeightRowBytes(WeightFormat format, int64_t cols) {
  switch (format) {
    case WeightFormat::kF32:
      return cols * 4;
    case WeightFormat::kF16:
    case WeightFormat::kBF16:
      return cols * 2;
    case WeightFormat::kQ8_0:
      return cols / kQ8_0BlockElements * kQ8_0BlockBytes;
  }
  return 0;
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_WEIGHT_FORMAT_H_
