// <cuda_fp16.h> for emulated builds: IEEE half as a 16-bit pattern (conversion to float only,
// which is what glimpse's kernels use).
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_FP16_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_FP16_H_

#include <cmath>
#include <cstdint>

struct alignas(2) __half {
  unsigned short __x;
};
using half = __half;

inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline float __half2float(__half h) {
  const int sign = (h.__x >> 15) & 1;
  const int exponent = (h.__x >> 10) & 0x1f;
  const int mantissa = h.__x & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_FP16_H_
