// Element types of activations and KV caches on the device. Every kernel states which of these
// it supports; all of them accumulate in fp32.
#ifndef GLIMPSE_KERNELS_CUDA_DTYPE_H_
#define GLIMPSE_KERNELS_CUDA_DTYPE_H_

#include <cstddef>

namespace glimpse::kernels::cuda {

enum class DType {
  kF32,   // IEEE float
  kBF16,  // bfloat16 (__nv_bfloat16 on the device, uint16_t bit patterns on the host)
};

inline constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
  }
  return 0;
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_DTYPE_H_
