#include "kernels/cuda/silu_mul.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::FromFloat;
using internal::kVecSize;
using internal::ToFloat;

constexpr int kThreads = 256;

__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }

// Grid: (num_rows, ceil(dim / (kThreads * width))); width = kVecSize<T> when vectorized.
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads) SiluMulKernel(const T* __restrict__ gate,
                                                          const T* __restrict__ up,
                                                          T* __restrict__ out,
                                                          int64_t in_row_stride,
                                                          int64_t out_row_stride, int32_t dim) {
  const int64_t row = blockIdx.x;
  const T* g_row = gate + row * in_row_stride;
  const T* u_row = up + row * in_row_stride;
  T* o_row = out + row * out_row_stride;
  if constexpr (kVectorized) {
    constexpr int kVec = kVecSize<T>;
    const int i = (blockIdx.y * kThreads + threadIdx.x) * kVec;
    if (i >= dim) return;
    float g[kVec];
    float u[kVec];
    internal::LoadVec(g_row + i, g);
    internal::LoadVec(u_row + i, u);
#pragma unroll
    for (int j = 0; j < kVec; ++j) g[j] = Silu(g[j]) * u[j];
    internal::StoreVec(o_row + i, g);
  } else {
    const int i = blockIdx.y * kThreads + threadIdx.x;
    if (i >= dim) return;
    o_row[i] = FromFloat<T>(Silu(ToFloat(g_row[i])) * ToFloat(u_row[i]));
  }
}

template <typename T>
cudaError_t Launch(const SiluMulParams& p, cudaStream_t stream) {
  constexpr int kVec = kVecSize<T>;
  const bool vectorized = p.dim % kVec == 0 && p.in_row_stride % kVec == 0 &&
                          p.out_row_stride % kVec == 0 && internal::IsAligned16(p.gate) &&
                          internal::IsAligned16(p.up) && internal::IsAligned16(p.out);
  const int width = vectorized ? kVec : 1;
  const dim3 grid(p.num_rows, (p.dim + kThreads * width - 1) / (kThreads * width));
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  T* out = static_cast<T*>(p.out);
  if (vectorized) {
    SiluMulKernel<T, true><<<grid, kThreads, 0, stream>>>(gate, up, out, p.in_row_stride,
                                                          p.out_row_stride, p.dim);
  } else {
    SiluMulKernel<T, false><<<grid, kThreads, 0, stream>>>(gate, up, out, p.in_row_stride,
                                                           p.out_row_stride, p.dim);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSiluMul(const SiluMulParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.dim > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.in_row_stride >= params.dim &&
                                 params.out_row_stride >= params.dim);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.gate != nullptr && params.up != nullptr &&
                                 params.out != nullptr);
  if (params.num_rows == 0) return cudaSuccess;
  switch (params.dtype) {
    case DType::kF32:
      return Launch<float>(params, stream);
    case DType::kBF16:
      return Launch<bf16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace glimpse::kernels::cuda
