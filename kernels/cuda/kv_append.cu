#include "kernels/cuda/kv_append.h"

#include <unordered_map>
#include <unordered_set>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/kv_layout.h"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;

constexpr int kThreads = 256;

// Element type moved by one thread: uint4 (16 bytes) or the dtype itself.
// Grid: (num_tokens, ceil(num_kv_heads * head_dim / width / kThreads)).
template <typename U>
__global__ void __launch_bounds__(kThreads) KvAppendKernel(
    const U* __restrict__ k, const U* __restrict__ v, int64_t token_stride_u,
    const int32_t* __restrict__ slot_mapping, U* __restrict__ k_cache, U* __restrict__ v_cache,
    int32_t num_kv_heads, int32_t page_size, int32_t head_dim_u) {
  const int32_t token = blockIdx.x;
  const int32_t slot_id = slot_mapping[token];
  if (slot_id < 0) return;
  const int idx = blockIdx.y * kThreads + threadIdx.x;
  if (idx >= num_kv_heads * head_dim_u) return;
  const int head = idx / head_dim_u;
  const int d = idx - head * head_dim_u;
  const int32_t page = slot_id / page_size;
  const int32_t slot = slot_id - page * page_size;
  const int64_t dst = KvOffset(page, head, slot, num_kv_heads, page_size, head_dim_u) + d;
  const int64_t src = static_cast<int64_t>(token) * token_stride_u + idx;
  k_cache[dst] = k[src];
  v_cache[dst] = v[src];
}

// fp32 inputs into a bf16 cache: each thread rounds kWidth consecutive elements (8: two
// 16-byte loads, one 16-byte store; 1: scalar). Grid as KvAppendKernel's, in units of kWidth.
template <int kWidth>
__global__ void __launch_bounds__(kThreads) KvAppendRoundingKernel(
    const float* __restrict__ k, const float* __restrict__ v, int64_t token_stride,
    const int32_t* __restrict__ slot_mapping, bf16* __restrict__ k_cache,
    bf16* __restrict__ v_cache, int32_t num_kv_heads, int32_t page_size, int32_t head_dim) {
  const int32_t token = blockIdx.x;
  const int32_t slot_id = slot_mapping[token];
  if (slot_id < 0) return;
  const int head_dim_u = head_dim / kWidth;
  const int idx = blockIdx.y * kThreads + threadIdx.x;
  if (idx >= num_kv_heads * head_dim_u) return;
  const int head = idx / head_dim_u;
  const int d = (idx - head * head_dim_u) * kWidth;
  const int32_t page = slot_id / page_size;
  const int32_t slot = slot_id - page * page_size;
  const int64_t dst = KvOffset(page, head, slot, num_kv_heads, page_size, head_dim) + d;
  const int64_t src = static_cast<int64_t>(token) * token_stride + head * head_dim + d;
  if constexpr (kWidth == 8) {
    float kf[8], vf[8];
    internal::LoadVecs(k + src, kf);
    internal::LoadVecs(v + src, vf);
    internal::StoreVec(k_cache + dst, kf);
    internal::StoreVec(v_cache + dst, vf);
  } else {
    k_cache[dst] = __float2bfloat16_rn(k[src]);
    v_cache[dst] = __float2bfloat16_rn(v[src]);
  }
}

template <int kWidth>
cudaError_t LaunchRoundingAppend(const KvAppendParams& p, cudaStream_t stream) {
  const int head_dim_u = p.head_dim / kWidth;
  const dim3 grid(p.num_tokens, (p.num_kv_heads * head_dim_u + kThreads - 1) / kThreads);
  KvAppendRoundingKernel<kWidth><<<grid, kThreads, 0, stream>>>(
      static_cast<const float*>(p.k), static_cast<const float*>(p.v), p.token_stride,
      p.slot_mapping, static_cast<bf16*>(p.k_cache), static_cast<bf16*>(p.v_cache),
      p.num_kv_heads, p.page_size, p.head_dim);
  return cudaGetLastError();
}

// Grid: (num_copies, ceil(num_kv_heads * head_dim / width / kThreads)).
template <typename U>
__global__ void __launch_bounds__(kThreads) KvCopySlotsKernel(
    U* __restrict__ k_cache, U* __restrict__ v_cache, const int32_t* __restrict__ src_slots,
    const int32_t* __restrict__ dst_slots, int32_t num_kv_heads, int32_t page_size,
    int32_t head_dim_u) {
  const int idx = blockIdx.y * kThreads + threadIdx.x;
  if (idx >= num_kv_heads * head_dim_u) return;
  const int head = idx / head_dim_u;
  const int d = idx - head * head_dim_u;
  const int32_t src_id = src_slots[blockIdx.x];
  const int32_t dst_id = dst_slots[blockIdx.x];
  const int64_t src = KvOffset(src_id / page_size, head, src_id % page_size, num_kv_heads,
                               page_size, head_dim_u) + d;
  const int64_t dst = KvOffset(dst_id / page_size, head, dst_id % page_size, num_kv_heads,
                               page_size, head_dim_u) + d;
  k_cache[dst] = k_cache[src];
  v_cache[dst] = v_cache[src];
}

template <typename U>
cudaError_t LaunchAppend(const KvAppendParams& p, int width, cudaStream_t stream) {
  const int head_dim_u = p.head_dim / width;
  const dim3 grid(p.num_tokens, (p.num_kv_heads * head_dim_u + kThreads - 1) / kThreads);
  KvAppendKernel<U><<<grid, kThreads, 0, stream>>>(
      static_cast<const U*>(p.k), static_cast<const U*>(p.v), p.token_stride / width,
      p.slot_mapping, static_cast<U*>(p.k_cache), static_cast<U*>(p.v_cache), p.num_kv_heads,
      p.page_size, head_dim_u);
  return cudaGetLastError();
}

template <typename U>
cudaError_t LaunchCopy(const KvCopySlotsParams& p, int width, cudaStream_t stream) {
  const int head_dim_u = p.head_dim / width;
  const dim3 grid(p.num_copies, (p.num_kv_heads * head_dim_u + kThreads - 1) / kThreads);
  KvCopySlotsKernel<U><<<grid, kThreads, 0, stream>>>(
      static_cast<U*>(p.k_cache), static_cast<U*>(p.v_cache), p.src_slots, p.dst_slots,
      p.num_kv_heads, p.page_size, head_dim_u);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchKvAppend(const KvAppendParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_tokens >= 0 && params.num_kv_heads > 0 &&
                                 params.page_size > 0 && params.head_dim > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.token_stride >=
                                 int64_t{params.num_kv_heads} * params.head_dim);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.k != nullptr && params.v != nullptr &&
                                 params.slot_mapping != nullptr && params.k_cache != nullptr &&
                                 params.v_cache != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(!params.fp32_input || params.dtype == DType::kBF16);
  if (params.num_tokens == 0) return cudaSuccess;
  if (params.fp32_input) {
    const bool vectorized = params.head_dim % 8 == 0 && params.token_stride % 4 == 0 &&
                            internal::IsAligned16(params.k) && internal::IsAligned16(params.v) &&
                            internal::IsAligned16(params.k_cache) &&
                            internal::IsAligned16(params.v_cache);
    return vectorized ? LaunchRoundingAppend<8>(params, stream)
                      : LaunchRoundingAppend<1>(params, stream);
  }
  const int elem = static_cast<int>(DTypeSize(params.dtype));
  if (elem == 0) return cudaErrorInvalidValue;
  const int width = 16 / elem;  // elements per 16-byte vector
  const bool vectorized = params.head_dim % width == 0 && params.token_stride % width == 0 &&
                          internal::IsAligned16(params.k) && internal::IsAligned16(params.v) &&
                          internal::IsAligned16(params.k_cache) &&
                          internal::IsAligned16(params.v_cache);
  if (vectorized) return LaunchAppend<uint4>(params, width, stream);
  if (elem == 4) return LaunchAppend<float>(params, 1, stream);
  return LaunchAppend<bf16>(params, 1, stream);
}

cudaError_t LaunchKvCopySlots(const KvCopySlotsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_copies >= 0 && params.num_kv_heads > 0 &&
                                 params.page_size > 0 && params.head_dim > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.k_cache != nullptr && params.v_cache != nullptr &&
                                 params.src_slots != nullptr && params.dst_slots != nullptr);
  if (params.num_copies == 0) return cudaSuccess;
  const int elem = static_cast<int>(DTypeSize(params.dtype));
  if (elem == 0) return cudaErrorInvalidValue;
  const int width = 16 / elem;
  const bool vectorized = params.head_dim % width == 0 &&
                          internal::IsAligned16(params.k_cache) &&
                          internal::IsAligned16(params.v_cache);
  if (vectorized) return LaunchCopy<uint4>(params, width, stream);
  if (elem == 4) return LaunchCopy<float>(params, 1, stream);
  return LaunchCopy<bf16>(params, 1, stream);
}

cudaError_t PlanKvCopySlotRounds(const std::vector<int32_t>& src, const std::vector<int32_t>& dst,
                                 std::vector<KvCopySlotsRound>* rounds) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(rounds != nullptr && src.size() == dst.size());
  rounds->clear();
  std::vector<size_t> pending;
  std::unordered_set<int32_t> destinations;
  for (size_t i = 0; i < src.size(); ++i) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(destinations.insert(dst[i]).second);
    if (src[i] != dst[i]) pending.push_back(i);
  }
  // Each round takes the copies whose destination no pending copy reads any more.
  while (!pending.empty()) {
    std::unordered_map<int32_t, int> readers;  // slot -> pending copies reading it
    for (const size_t i : pending) ++readers[src[i]];
    KvCopySlotsRound round;
    std::vector<size_t> later;
    for (const size_t i : pending) {
      if (readers.count(dst[i]) == 0) {
        round.src.push_back(src[i]);
        round.dst.push_back(dst[i]);
      } else {
        later.push_back(i);
      }
    }
    GLIMPSE_CUDA_RETURN_IF_INVALID(!round.src.empty());  // a cycle
    rounds->push_back(std::move(round));
    pending = std::move(later);
  }
  return cudaSuccess;
}

}  // namespace glimpse::kernels::cuda
