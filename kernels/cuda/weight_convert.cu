#include "kernels/cuda/weight_convert.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/weight_widen.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;

constexpr int kThreads = 256;
// Grid-stride loops: enough blocks to fill any current GPU, few enough to stay in grid.x.
constexpr int64_t kMaxBlocks = 1 << 16;

int64_t NumBlocks(int64_t work) {
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks));
}

__global__ void __launch_bounds__(kThreads)
    WeightsToBf16Kernel(WeightFormat format, const uint8_t* src, bf16* dst, int64_t rows,
                        int64_t cols, int64_t row_bytes) {
  const int64_t total = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / cols;
    const int64_t c = i - r * cols;
    dst[i] = __float2bfloat16_rn(internal::WidenWeight(format, src + r * row_bytes, c));
  }
}

// kPairs: two elements per thread through float2 loads and bfloat162 stores.
template <bool kPairs>
__global__ void __launch_bounds__(kThreads)
    CastF32ToBf16Kernel(const float* x, bf16* y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  if constexpr (kPairs) {
    const int64_t num_pairs = n / 2;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < num_pairs;
         i += stride) {
      const float2 v = reinterpret_cast<const float2*>(x)[i];
      reinterpret_cast<__nv_bfloat162*>(y)[i] = __floats2bfloat162_rn(v.x, v.y);
    }
    // The odd last element, if any.
    if (n % 2 == 1 && blockIdx.x == 0 && threadIdx.x == 0) {
      y[n - 1] = __float2bfloat16_rn(x[n - 1]);
    }
  } else {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
         i += stride) {
      y[i] = __float2bfloat16_rn(x[i]);
    }
  }
}

// kPairs: two elements per thread through bfloat162 loads and float2 stores.
template <bool kPairs>
__global__ void __launch_bounds__(kThreads)
    CastBf16ToF32Kernel(const bf16* x, float* y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  if constexpr (kPairs) {
    const int64_t num_pairs = n / 2;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < num_pairs;
         i += stride) {
      reinterpret_cast<float2*>(y)[i] =
          __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(x)[i]);
    }
    if (n % 2 == 1 && blockIdx.x == 0 && threadIdx.x == 0) y[n - 1] = __bfloat162float(x[n - 1]);
  } else {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
         i += stride) {
      y[i] = __bfloat162float(x[i]);
    }
  }
}

}  // namespace

cudaError_t LaunchWeightsToBf16(const WeightsToBf16Params& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.rows >= 0 && params.cols > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.format != WeightFormat::kQ8_0 ||
                                 params.cols % kQ8_0BlockElements == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.src != nullptr && params.dst != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.format != WeightFormat::kF32 ||
                                 reinterpret_cast<uintptr_t>(params.src) % 4 == 0);
  if (params.rows == 0) return cudaSuccess;
  const int64_t total = params.rows * params.cols;
  WeightsToBf16Kernel<<<NumBlocks(total), kThreads, 0, stream>>>(
      params.format, static_cast<const uint8_t*>(params.src), static_cast<bf16*>(params.dst),
      params.rows, params.cols, WeightRowBytes(params.format, params.cols));
  return cudaGetLastError();
}

cudaError_t LaunchCastF32ToBf16(const float* x, void* y, int64_t n, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(n >= 0);
  if (n == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(x != nullptr && y != nullptr);
  const bool pairs = reinterpret_cast<uintptr_t>(x) % 8 == 0 &&
                     reinterpret_cast<uintptr_t>(y) % 4 == 0;
  if (pairs) {
    CastF32ToBf16Kernel<true><<<NumBlocks(n / 2 + 1), kThreads, 0, stream>>>(
        x, static_cast<bf16*>(y), n);
  } else {
    CastF32ToBf16Kernel<false><<<NumBlocks(n), kThreads, 0, stream>>>(
        x, static_cast<bf16*>(y), n);
  }
  return cudaGetLastError();
}

cudaError_t LaunchCastBf16ToF32(const void* x, float* y, int64_t n, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(n >= 0);
  if (n == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(x != nullptr && y != nullptr);
  const bool pairs = reinterpret_cast<uintptr_t>(x) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(y) % 8 == 0;
  if (pairs) {
    CastBf16ToF32Kernel<true><<<NumBlocks(n / 2 + 1), kThreads, 0, stream>>>(
        static_cast<const bf16*>(x), y, n);
  } else {
    CastBf16ToF32Kernel<false><<<NumBlocks(n), kThreads, 0, stream>>>(
        static_cast<const bf16*>(x), y, n);
  }
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
