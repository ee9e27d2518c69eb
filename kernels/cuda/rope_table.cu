#include "kernels/cuda/rope_table.h"

#include "kernels/cuda/cuda_check.h"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// Grid: (num_tokens). Thread j of the block handles pairs j, j + kThreads, ... of the flat
// (head, pair) index space of its token: x's num_heads heads, then x2's num_heads2.
__global__ void __launch_bounds__(kThreads)
    RopeWithTableKernel(float* __restrict__ x, int32_t num_heads, float* __restrict__ x2,
                        int32_t num_heads2, int32_t head_dim, int32_t rot_dim, bool neox,
                        const float2* __restrict__ cos_sin) {
  const int64_t t = blockIdx.x;
  const int32_t half = rot_dim / 2;
  const float2* row = cos_sin + t * half;
  float* token = x + t * num_heads * static_cast<int64_t>(head_dim);
  float* token2 = x2 + t * num_heads2 * static_cast<int64_t>(head_dim);  // unused without x2
  for (int32_t idx = threadIdx.x; idx < (num_heads + num_heads2) * half; idx += kThreads) {
    const int32_t h = idx / half;
    const int32_t i = idx - h * half;
    const int32_t a = neox ? i : 2 * i;
    const int32_t b = neox ? i + half : 2 * i + 1;
    float* head = h < num_heads ? token + static_cast<int64_t>(h) * head_dim
                                : token2 + static_cast<int64_t>(h - num_heads) * head_dim;
    const float2 cs = row[i];
    const float x0 = head[a];
    const float x1 = head[b];
    head[a] = __fsub_rn(__fmul_rn(x0, cs.x), __fmul_rn(x1, cs.y));
    head[b] = __fadd_rn(__fmul_rn(x0, cs.y), __fmul_rn(x1, cs.x));
  }
}

}  // namespace

cudaError_t LaunchRopeWithTable(const RopeTableParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_tokens >= 0 && params.num_heads > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.rot_dim > 0 && params.rot_dim % 2 == 0 &&
                                 params.rot_dim <= params.head_dim);
  if (params.num_tokens == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.cos_sin != nullptr &&
                                 reinterpret_cast<uintptr_t>(params.cos_sin) % 8 == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID((params.x2 == nullptr) == (params.num_heads2 == 0) &&
                                 params.num_heads2 >= 0);
  RopeWithTableKernel<<<params.num_tokens, kThreads, 0, stream>>>(
      params.x, params.num_heads, params.x2, params.num_heads2, params.head_dim, params.rot_dim,
      params.style == RopeStyle::kNeox, reinterpret_cast<const float2*>(params.cos_sin));
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
