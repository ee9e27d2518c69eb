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

// One element, and a pair, from fp32 to bf16 (to nearest even) or back (exact).
__device__ __forceinline__ bf16 Convert(float x, bf16*) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ float Convert(bf16 x, float*) { return __bfloat162float(x); }
__device__ __forceinline__ __nv_bfloat162 ConvertPair(float2 v) {
  return __floats2bfloat162_rn(v.x, v.y);
}
__device__ __forceinline__ float2 ConvertPair(__nv_bfloat162 v) { return __bfloat1622float2(v); }

// Pair types of the element types.
template <typename T>
struct PairOf;
template <>
struct PairOf<float> {
  using type = float2;
};
template <>
struct PairOf<bf16> {
  using type = __nv_bfloat162;
};

// y[i] = x[i] converted, grid-stride; kPairs: two elements per thread through pair loads and
// stores (both pointers pair-aligned).
template <typename From, typename To, bool kPairs>
__global__ void __launch_bounds__(kThreads) CastKernel(const From* x, To* y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if constexpr (kPairs) {
    using FromPair = typename PairOf<From>::type;
    using ToPair = typename PairOf<To>::type;
    for (int64_t i = first; i < n / 2; i += stride) {
      reinterpret_cast<ToPair*>(y)[i] = ConvertPair(reinterpret_cast<const FromPair*>(x)[i]);
    }
    // The odd last element, if any.
    if (n % 2 == 1 && first == 0) y[n - 1] = Convert(x[n - 1], y);
  } else {
    for (int64_t i = first; i < n; i += stride) y[i] = Convert(x[i], y);
  }
}

template <typename From, typename To>
cudaError_t LaunchCast(const From* x, To* y, int64_t n, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(n >= 0);
  if (n == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(x != nullptr && y != nullptr);
  const bool pairs = reinterpret_cast<uintptr_t>(x) % (2 * sizeof(From)) == 0 &&
                     reinterpret_cast<uintptr_t>(y) % (2 * sizeof(To)) == 0;
  if (pairs) {
    CastKernel<From, To, true><<<NumBlocks(n / 2 + 1), kThreads, 0, stream>>>(x, y, n);
  } else {
    CastKernel<From, To, false><<<NumBlocks(n), kThreads, 0, stream>>>(x, y, n);
  }
  return cudaGetLastError();
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
  return LaunchCast(x, static_cast<bf16*>(y), n, stream);
}

cudaError_t LaunchCastBf16ToF32(const void* x, float* y, int64_t n, cudaStream_t stream) {
  return LaunchCast(static_cast<const bf16*>(x), y, n, stream);
}

}  // namespace glimpse::kernels::cuda
