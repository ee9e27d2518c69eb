#include "kernels/cuda/rmsnorm.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::FromFloat;
using internal::kVecSize;
using internal::ToFloat;

constexpr int kThreads = 256;

// Grid: one block per row. Pass 1 adds x into the residual (stored as T) and accumulates the
// sum of squares of the stored values; pass 2 re-reads the residual (this thread's own
// writes, so no barrier is needed for them) and writes the normalized row, and its bf16
// rounding to out_bf16 when that is not null (T = float only).
template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    AddRmsNormKernel(const T* __restrict__ x, T* __restrict__ residual,
                     const T* __restrict__ weight, T* __restrict__ out, bf16* __restrict__ out_bf16,
                     int32_t dim, float eps) {
  __shared__ float scratch[32];
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * dim;
  T* res_row = residual + row_offset;
  float sum_sq = 0.0f;
  if constexpr (kVectorized) {
    constexpr int kVec = kVecSize<T>;
    for (int i = threadIdx.x * kVec; i < dim; i += kThreads * kVec) {
      float h[kVec];
      internal::LoadVec(res_row + i, h);
      if (x != nullptr) {
        float xv[kVec];
        internal::LoadVec(x + row_offset + i, xv);
#pragma unroll
        for (int j = 0; j < kVec; ++j) h[j] = ToFloat(FromFloat<T>(h[j] + xv[j]));
        internal::StoreVec(res_row + i, h);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum_sq += h[j] * h[j];
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += kThreads) {
      float h = ToFloat(res_row[i]);
      if (x != nullptr) {
        const T stored = FromFloat<T>(h + ToFloat(x[row_offset + i]));
        res_row[i] = stored;
        h = ToFloat(stored);
      }
      sum_sq += h * h;
    }
  }
  sum_sq = internal::BlockSum(sum_sq, scratch);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(dim) + eps);
  T* out_row = out + row_offset;
  if constexpr (kVectorized) {
    constexpr int kVec = kVecSize<T>;
    for (int i = threadIdx.x * kVec; i < dim; i += kThreads * kVec) {
      float h[kVec];
      float w[kVec];
      internal::LoadVec(res_row + i, h);
      internal::LoadVec(weight + i, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) h[j] = h[j] * inv_rms * w[j];
      internal::StoreVec(out_row + i, h);
      if (out_bf16 != nullptr) {
        // kVec (4) fp32 values: two bf16 pairs, 8 bytes (dim % 4 == 0, 16-byte aligned rows).
        __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out_bf16 + row_offset + i);
#pragma unroll
        for (int j = 0; j < kVec; j += 2) dst[j / 2] = __floats2bfloat162_rn(h[j], h[j + 1]);
      }
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += kThreads) {
      const T value = FromFloat<T>(ToFloat(res_row[i]) * inv_rms * ToFloat(weight[i]));
      out_row[i] = value;
      if (out_bf16 != nullptr) out_bf16[row_offset + i] = FromFloat<bf16>(ToFloat(value));
    }
  }
}

template <typename T>
cudaError_t Launch(const AddRmsNormParams& p, cudaStream_t stream) {
  const bool vectorized = p.dim % kVecSize<T> == 0 && internal::IsAligned16(p.residual) &&
                          internal::IsAligned16(p.out) && internal::IsAligned16(p.weight) &&
                          (p.x == nullptr || internal::IsAligned16(p.x)) &&
                          (p.out_bf16 == nullptr || internal::IsAligned16(p.out_bf16));
  const T* x = static_cast<const T*>(p.x);
  T* residual = static_cast<T*>(p.residual);
  const T* weight = static_cast<const T*>(p.weight);
  T* out = static_cast<T*>(p.out);
  bf16* out_bf16 = static_cast<bf16*>(p.out_bf16);
  if (vectorized) {
    AddRmsNormKernel<T, true>
        <<<p.num_rows, kThreads, 0, stream>>>(x, residual, weight, out, out_bf16, p.dim, p.eps);
  } else {
    AddRmsNormKernel<T, false>
        <<<p.num_rows, kThreads, 0, stream>>>(x, residual, weight, out, out_bf16, p.dim, p.eps);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchAddRmsNorm(const AddRmsNormParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.dim > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.residual != nullptr && params.weight != nullptr &&
                                 params.out != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.out_bf16 == nullptr || params.dtype == DType::kF32);
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
