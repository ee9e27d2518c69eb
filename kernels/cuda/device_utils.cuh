// Device helpers shared by the kernels in kernels/cuda (internal; included by .cu files only).
//
// Vec<T>: one 16-byte access of T (8 x bf16 or 4 x fp32) converted to/from fp32 registers.
// Every vector access requires a 16-byte aligned address; launchers check base alignment and
// row strides before taking a vector path.
#ifndef GLIMPSE_KERNELS_CUDA_DEVICE_UTILS_CUH_
#define GLIMPSE_KERNELS_CUDA_DEVICE_UTILS_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"

// A device function kept out of line (nvcc's __noinline__; the emulation's gcc spells it
// itself, since libstdc++ uses the name __noinline__ in its own attributes).
#ifdef GLIMPSE_CUDA_EMULATION
#define GLIMPSE_DEVICE_NOINLINE __attribute__((noinline))
#else
#define GLIMPSE_DEVICE_NOINLINE __noinline__
#endif

namespace glimpse::kernels::cuda::internal {

using bf16 = __nv_bfloat16;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^x in one SFU instruction (ex2.approx.ftz.f32: within 2 ulp; results below 2^-126 flush to
// zero), for the attention kernels' softmax: exp2f adds a range test and two multiplies per
// call to keep denormal results, weights that are zero for every purpose here. -inf gives 0.
__device__ __forceinline__ float FastExp2(float x) {
#ifdef GLIMPSE_CUDA_EMULATION
  const float r = exp2f(x);
  return r < 1.17549435e-38f ? 0.0f : r;
#else
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
#endif
}

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 FromFloat<bf16>(float x) { return __float2bfloat16_rn(x); }

// Number of T in one 16-byte vector.
template <typename T>
constexpr int kVecSize = 16 / static_cast<int>(sizeof(T));

// Loads kVecSize<T> elements at `ptr` (16-byte aligned) into fp32 registers.
template <typename T>
__device__ __forceinline__ void LoadVec(const T* ptr, float (&out)[kVecSize<T>]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(ptr);
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 pair = *reinterpret_cast<const __nv_bfloat162*>(&words[i]);
      const float2 f = __bfloat1622float2(pair);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
}

// Loads N elements at `ptr` (16-byte aligned; N a multiple of kVecSize<T>) into fp32
// registers with N / kVecSize<T> 16-byte loads: e.g. 8 fp32 values that pair with one 16-byte
// vector of 8 bf16.
template <typename T, int N>
__device__ __forceinline__ void LoadVecs(const T* ptr, float (&out)[N]) {
  constexpr int kVec = kVecSize<T>;
  static_assert(N % kVec == 0, "N must be a whole number of 16-byte vectors");
#pragma unroll
  for (int i = 0; i < N / kVec; ++i) {
    float part[kVec];
    LoadVec(ptr + i * kVec, part);
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[i * kVec + e] = part[e];
  }
}

// Stores kVecSize<T> fp32 values (rounded to nearest even for bf16) at `ptr` (16-byte aligned).
template <typename T>
__device__ __forceinline__ void StoreVec(T* ptr, const float (&in)[kVecSize<T>]) {
  uint4 raw;
  if constexpr (sizeof(T) == 4) {
    raw.x = __float_as_uint(in[0]);
    raw.y = __float_as_uint(in[1]);
    raw.z = __float_as_uint(in[2]);
    raw.w = __float_as_uint(in[3]);
  } else {
    uint32_t words[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 pair = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
      words[i] = *reinterpret_cast<const uint32_t*>(&pair);
    }
    raw = make_uint4(words[0], words[1], words[2], words[3]);
  }
  *reinterpret_cast<uint4*>(ptr) = raw;
}

// Sum over the warp (float or double), returned to every lane.
template <typename T>
__device__ __forceinline__ T WarpSum(T x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  }
  return x;
}

// Sum over the whole block (float or double), returned to every thread. `scratch` holds >= 32
// values of shared memory. Deterministic: a fixed tree order that does not depend on timing.
// Must be called by all threads of the block (it contains __syncthreads); blockDim.x is a
// multiple of 32.
template <typename T>
__device__ __forceinline__ T BlockSum(T x, T* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  x = WarpSum(x);
  __syncthreads();  // scratch may still be read by a previous BlockSum/BlockMax
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < num_warps ? scratch[lane] : T(0);
  return WarpSum(x);
}

__device__ __forceinline__ float BlockMax(float x, float* scratch) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  x = WarpMax(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < num_warps ? scratch[lane] : -INFINITY;
  return WarpMax(x);
}

// Division by a divisor fixed for a whole kernel (e.g. the page size) in three instructions
// instead of the ~20 of a runtime integer division: q = (umulhi(n, m) + n) >> shift with
// shift = ceil(log2 d) and m = floor(2^32 * (2^shift - d) / d) + 1 (the round-up method of
// Hacker's Delight, 10-9), exact for 0 <= n < 2^31 and 1 <= d < 2^31.
struct FastDivider {
  uint32_t divisor;
  uint32_t multiplier;
  uint32_t shift;

  __host__ __device__ explicit FastDivider(int32_t d) : divisor(static_cast<uint32_t>(d)) {
    shift = 0;
    while ((uint64_t{1} << shift) < divisor) ++shift;
    multiplier = static_cast<uint32_t>(
        ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }
  __device__ __forceinline__ int32_t Divide(int32_t n) const {
    const uint32_t u = static_cast<uint32_t>(n);
    return static_cast<int32_t>((__umulhi(u, multiplier) + u) >> shift);
  }
};

// PagedKeyOffset (kv_layout.h) with the page found by `page_div`, a FastDivider of page_size.
__device__ __forceinline__ int64_t PagedKeyOffset(const int32_t* seq_pages, int32_t key,
                                                  int32_t kv_head, int32_t num_kv_heads,
                                                  int32_t page_size, int32_t head_dim,
                                                  const FastDivider& page_div) {
  const int32_t page = page_div.Divide(key);
  return KvOffset(seq_pages[page], kv_head, key - page * page_size, num_kv_heads, page_size,
                  head_dim);
}

inline bool IsAligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

// Index of the sequence holding row `row` of a CSR layout: the s with
// indptr[s] <= row < indptr[s+1] (binary search; indptr has num_seqs + 1 entries, non-decreasing,
// and row < indptr[num_seqs]). Empty sequences are skipped: the last s with indptr[s] <= row.
__device__ __forceinline__ int32_t FindSequence(const int32_t* indptr, int32_t num_seqs,
                                                int32_t row) {
  int32_t lo = 0;
  int32_t hi = num_seqs - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) >> 1;
    if (indptr[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_DEVICE_UTILS_CUH_
