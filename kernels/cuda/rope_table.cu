#include "kernels/cuda/rope_table.h"

#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kv_layout.h"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// One element of a key or value into the cache (RopeKvAppend::dtype), at element `at`.
__device__ __forceinline__ void StoreKvElement(void* cache, int64_t at, bool bf16, float value) {
  if (bf16) {
    static_cast<__nv_bfloat16*>(cache)[at] = __float2bfloat16_rn(value);
  } else {
    static_cast<float*>(cache)[at] = value;
  }
}

// Grid: (num_tokens). Thread j of the block handles pairs j, j + kThreads, ... of the flat
// (head, pair) index space of its token: x's num_heads heads, then x2's num_heads2. With
// kv_append, x2's rotated pairs also go to the key cache, and then every element of v and
// x2's unrotated dimensions (rot_dim .. head_dim - 1) to the caches: no element is read
// after another thread of the block wrote it, so no barrier is needed.
__global__ void __launch_bounds__(kThreads)
    RopeWithTableKernel(float* __restrict__ x, int32_t num_heads, float* __restrict__ x2,
                        int32_t num_heads2, int32_t head_dim, int32_t rot_dim, bool neox,
                        const float2* __restrict__ cos_sin, RopeKvAppend kv_append) {
  const int64_t t = blockIdx.x;
  const int32_t half = rot_dim / 2;
  const float2* row = cos_sin + t * half;
  float* token = x + t * num_heads * static_cast<int64_t>(head_dim);
  float* token2 = x2 + t * num_heads2 * static_cast<int64_t>(head_dim);  // unused without x2
  // With kv_append, the token's row of kv head 0 in its page; head h's is head_stride later.
  // -1 when the launch does not append or the token is padding (slot -1).
  int64_t kv_base = -1;
  const int64_t head_stride = static_cast<int64_t>(kv_append.page_size) * head_dim;
  const bool bf16_cache = kv_append.dtype == DType::kBF16;
  if (kv_append.k_cache != nullptr) {
    const int32_t slot_id = kv_append.slot_mapping[t];
    if (slot_id >= 0) {
      const int32_t page = slot_id / kv_append.page_size;
      kv_base = KvOffset(page, 0, slot_id - page * kv_append.page_size, num_heads2,
                         kv_append.page_size, head_dim);
    }
  }
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
    const float y0 = __fsub_rn(__fmul_rn(x0, cs.x), __fmul_rn(x1, cs.y));
    const float y1 = __fadd_rn(__fmul_rn(x0, cs.y), __fmul_rn(x1, cs.x));
    head[a] = y0;
    head[b] = y1;
    if (h >= num_heads && kv_base >= 0) {
      const int64_t key_row = kv_base + (h - num_heads) * head_stride;
      StoreKvElement(kv_append.k_cache, key_row + a, bf16_cache, y0);
      StoreKvElement(kv_append.k_cache, key_row + b, bf16_cache, y1);
    }
  }
  if (kv_base < 0) return;
  const float* v = kv_append.v + t * num_heads2 * static_cast<int64_t>(head_dim);
  for (int32_t idx = threadIdx.x; idx < num_heads2 * head_dim; idx += kThreads) {
    const int32_t h = idx / head_dim;
    const int32_t d = idx - h * head_dim;
    const int64_t at = kv_base + h * head_stride + d;
    StoreKvElement(kv_append.v_cache, at, bf16_cache, v[idx]);
    if (d >= rot_dim) StoreKvElement(kv_append.k_cache, at, bf16_cache, token2[idx]);
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
  const RopeKvAppend& append = params.kv_append;
  if (append.k_cache != nullptr) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(params.x2 != nullptr && append.v_cache != nullptr &&
                                   append.v != nullptr && append.slot_mapping != nullptr &&
                                   append.page_size > 0);
  }
  RopeWithTableKernel<<<params.num_tokens, kThreads, 0, stream>>>(
      params.x, params.num_heads, params.x2, params.num_heads2, params.head_dim, params.rot_dim,
      params.style == RopeStyle::kNeox, reinterpret_cast<const float2*>(params.cos_sin), append);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
