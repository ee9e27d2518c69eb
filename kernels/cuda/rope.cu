#include "kernels/cuda/rope.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::FromFloat;
using internal::ToFloat;

constexpr int kThreads = 128;
constexpr int kMaxRotDim = 512;

template <typename T>
__device__ __forceinline__ void RotateHeads(T* base, int64_t token_stride, int32_t num_heads,
                                            int32_t head_dim, int32_t half, bool neox,
                                            const float* cos_s, const float* sin_s) {
  T* token = base + static_cast<int64_t>(blockIdx.x) * token_stride;
  const int total = num_heads * half;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int head = idx / half;
    const int i = idx - head * half;
    T* x = token + static_cast<int64_t>(head) * head_dim;
    const int a = neox ? i : 2 * i;
    const int b = neox ? i + half : 2 * i + 1;
    const float xa = ToFloat(x[a]);
    const float xb = ToFloat(x[b]);
    const float c = cos_s[i];
    const float s = sin_s[i];
    x[a] = FromFloat<T>(xa * c - xb * s);
    x[b] = FromFloat<T>(xa * s + xb * c);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) RopeKernel(RopeParams p) {
  __shared__ float cos_s[kMaxRotDim / 2];
  __shared__ float sin_s[kMaxRotDim / 2];
  const int half = p.rot_dim / 2;
  const double pos = static_cast<double>(p.positions[blockIdx.x]);
  const double log2_base = log2(static_cast<double>(p.freq_base));
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double inv_freq = exp2(-2.0 * i / p.rot_dim * log2_base);
    double s;
    double c;
    sincos(pos * inv_freq, &s, &c);
    cos_s[i] = static_cast<float>(c);
    sin_s[i] = static_cast<float>(s);
  }
  __syncthreads();
  const bool neox = p.style == RopeStyle::kNeox;
  if (p.q != nullptr) {
    RotateHeads(static_cast<T*>(p.q), p.q_token_stride, p.num_q_heads, p.head_dim, half, neox,
                cos_s, sin_s);
  }
  if (p.k != nullptr) {
    RotateHeads(static_cast<T*>(p.k), p.k_token_stride, p.num_k_heads, p.head_dim, half, neox,
                cos_s, sin_s);
  }
}

}  // namespace

cudaError_t LaunchRope(const RopeParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_tokens >= 0 && params.positions != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.rot_dim > 0 && params.rot_dim % 2 == 0 &&
                                 params.rot_dim <= params.head_dim &&
                                 params.rot_dim <= kMaxRotDim);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.q == nullptr ||
                                 params.q_token_stride >=
                                     int64_t{params.num_q_heads} * params.head_dim);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.k == nullptr ||
                                 params.k_token_stride >=
                                     int64_t{params.num_k_heads} * params.head_dim);
  if (params.num_tokens == 0) return cudaSuccess;
  switch (params.dtype) {
    case DType::kF32:
      RopeKernel<float><<<params.num_tokens, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
    case DType::kBF16:
      RopeKernel<bf16><<<params.num_tokens, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace glimpse::kernels::cuda
