// <cuda_bf16.h> for emulated builds: bf16 as a 16-bit pattern, rounded to nearest even.
#ifndef GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_BF16_H_
#define GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_BF16_H_

#include <bit>
#include <cstdint>

#include "kernels/cuda/emulation/include/vector_types.h"

namespace cuda_emu {
inline unsigned short FloatToBf16Bits(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<unsigned short>(bits >> 16);
}
inline float Bf16BitsToFloat(unsigned short h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}
}  // namespace cuda_emu

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(::cuda_emu::FloatToBf16Bits(f)) {}  // NOLINT: as in CUDA
  __nv_bfloat16(double f) : __x(::cuda_emu::FloatToBf16Bits(static_cast<float>(f))) {}  // NOLINT
  operator float() const { return ::cuda_emu::Bf16BitsToFloat(__x); }  // NOLINT
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x;
  __nv_bfloat16 y;
};
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return ::cuda_emu::Bf16BitsToFloat(h.__x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {__nv_bfloat16(lo), __nv_bfloat16(hi)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return {__bfloat162float(h.x), __bfloat162float(h.y)};
}
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) {
  __nv_bfloat16 h;
  h.__x = x;
  return h;
}

#endif  // GLIMPSE_KERNELS_CUDA_EMULATION_INCLUDE_CUDA_BF16_H_
