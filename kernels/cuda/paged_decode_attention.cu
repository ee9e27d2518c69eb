#include "kernels/cuda/paged_decode_attention.h"

#include <algorithm>

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/paged_decode_common.cuh"
#include "kernels/cuda/paged_decode_mma.h"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::FastExp2;
using internal::kFullMask;
using internal::kLog2e;
using internal::kVecSize;
using internal::StoreDecodeStates;

constexpr int kWarps = internal::kDecodeWarps;
constexpr int kThreads = internal::kDecodeThreads;
constexpr int kUnroll = 4;           // keys in flight per lane group per iteration
constexpr int kMinChunkKeys = 256;   // below this, a chunk's fixed cost dominates its reads

template <typename T, int kHeadDim>
struct DecodeShape {
  static constexpr int kVec = kVecSize<T>;            // elements per 16-byte access
  static constexpr int kTpr = kHeadDim / kVec;        // lanes per key row
  static constexpr int kGroupsPerWarp = 32 / kTpr;    // key rows a warp reads at once
  static constexpr int kKeysPerWarpIter = kGroupsPerWarp * kUnroll;
  static constexpr int kKeysPerIter = kWarps * kKeysPerWarpIter;
  static_assert(kTpr >= 1 && kTpr <= 32 && 32 % kTpr == 0, "head_dim / vector mismatch");
};

template <typename T, int kVec>
__device__ __forceinline__ void Unpack(const uint4& raw, float (&out)[kVec]) {
  internal::LoadVec(reinterpret_cast<const T*>(&raw), out);
}

// Grid: (plan.num_chunks, num_kv_heads, batch). kGroup >= the runtime group size; query
// heads j >= group carry q = 0 and are never written.
// T: the KV cache's element type; Q: q's and o's (T, or float over a bf16 cache).
template <typename T, typename Q, int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads) PagedDecodeKernel(PagedDecodeParams p) {
  using S = DecodeShape<T, kHeadDim>;
  constexpr int kVec = S::kVec;
  const int chunk = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int group_in_warp = lane / S::kTpr;
  const int lane_in_group = lane % S::kTpr;
  const int num_kv_heads = p.kv.num_kv_heads;
  const int group = p.num_qo_heads / num_kv_heads;
  const int page_size = p.kv.page_size;

  const int32_t page_begin = p.kv.kv_indptr[seq];
  const int32_t num_pages = p.kv.kv_indptr[seq + 1] - page_begin;
  const int32_t kv_len = KvLength(num_pages, p.kv.kv_last_page_len[seq], page_size);
  const int32_t chunk_keys = p.plan.chunk_keys;
  // Uniform over the block and before any barrier.
  const int num_seq_chunks = NumKvChunks(kv_len, chunk_keys);
  if (chunk >= num_seq_chunks) return;
  const int32_t chunk_start = chunk * chunk_keys;
  const int32_t chunk_end = min(kv_len, chunk_start + chunk_keys);

  // q pre-scaled so that scores are in log2 units: s2 = log2(e) * sm_scale * q·k.
  const float q_scale = p.sm_scale * kLog2e;
  const Q* q_base = static_cast<const Q*>(p.q) +
                    (static_cast<int64_t>(seq) * p.num_qo_heads + kv_head * group) * kHeadDim +
                    lane_in_group * kVec;
  float q[kGroup][kVec];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    if (j < group) {
      internal::LoadVecs(q_base + j * kHeadDim, q[j]);
#pragma unroll
      for (int e = 0; e < kVec; ++e) q[j][e] *= q_scale;
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) q[j][e] = 0.0f;
    }
  }

  float m[kGroup];
  float l[kGroup];
  float acc[kGroup][kVec];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < kVec; ++e) acc[j][e] = 0.0f;
  }

  const T* k_cache = static_cast<const T*>(p.kv.k_cache);
  const T* v_cache = static_cast<const T*>(p.kv.v_cache);
  const int32_t* kv_indices = p.kv.kv_indices + page_begin;
  const internal::FastDivider page_div(page_size);  // key -> page without a division per key

  // Warp w reads keys [base, base + kKeysPerWarpIter) of each block iteration, so that one
  // warp's loads stay within a few contiguous rows of a page.
  for (int32_t base = chunk_start + warp * S::kKeysPerWarpIter; base < chunk_end;
       base += S::kKeysPerIter) {
    uint4 k_raw[kUnroll];
    uint4 v_raw[kUnroll];
    bool valid[kUnroll];
    // All loads first, so that 2 * kUnroll 16-byte requests per thread are in flight.
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int32_t key = base + u * S::kGroupsPerWarp + group_in_warp;
      valid[u] = key < chunk_end;
      if (valid[u]) {
        const int64_t off = internal::PagedKeyOffset(kv_indices, key, kv_head, num_kv_heads,
                                                     page_size, kHeadDim, page_div) +
                            lane_in_group * kVec;
        k_raw[u] = *reinterpret_cast<const uint4*>(k_cache + off);
        v_raw[u] = *reinterpret_cast<const uint4*>(v_cache + off);
      } else {
        k_raw[u] = make_uint4(0, 0, 0, 0);
        v_raw[u] = make_uint4(0, 0, 0, 0);
      }
    }
    float s[kUnroll][kGroup];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[kVec];
      Unpack<T, kVec>(k_raw[u], kf);
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < kVec; ++e) dot = fmaf(q[j][e], kf[e], dot);
        // Lanes of one group are kTpr consecutive lanes starting at a multiple of kTpr, so
        // xor offsets < kTpr stay inside the group. All 32 lanes take part.
#pragma unroll
        for (int off = S::kTpr / 2; off > 0; off >>= 1) {
          dot += __shfl_xor_sync(kFullMask, dot, off);
        }
        s[u][j] = valid[u] ? dot : -INFINITY;
      }
    }
    float m_use[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      float tile_max = s[0][j];
#pragma unroll
      for (int u = 1; u < kUnroll; ++u) tile_max = fmaxf(tile_max, s[u][j]);
      const float m_new = fmaxf(m[j], tile_max);
      // m_use keeps exp2 arguments finite when nothing was seen yet (m_new = -inf).
      m_use[j] = m_new == -INFINITY ? 0.0f : m_new;
      const float rescale = FastExp2(m[j] - m_use[j]);
      l[j] *= rescale;
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[j][e] *= rescale;
      m[j] = m_new;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float vf[kVec];
      Unpack<T, kVec>(v_raw[u], vf);
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const float pu = FastExp2(s[u][j] - m_use[j]);  // 0 for invalid keys
        l[j] += pu;
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[j][e] = fmaf(pu, vf[e], acc[j][e]);
      }
    }
  }

  // Merge the lane groups of each warp (xor offsets >= kTpr pair lanes that hold the same
  // slice of head_dim in different groups).
#pragma unroll
  for (int off = S::kTpr; off < 32; off <<= 1) {
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const float m_o = __shfl_xor_sync(kFullMask, m[j], off);
      const float l_o = __shfl_xor_sync(kFullMask, l[j], off);
      const float m_new = fmaxf(m[j], m_o);
      const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
      const float a = FastExp2(m[j] - m_ref);
      const float b = FastExp2(m_o - m_ref);
      l[j] = l[j] * a + l_o * b;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const float acc_o = __shfl_xor_sync(kFullMask, acc[j][e], off);
        acc[j][e] = acc[j][e] * a + acc_o * b;
      }
      m[j] = m_new;
    }
  }

  __shared__ float s_m[kWarps][kGroup];
  __shared__ float s_l[kWarps][kGroup];
  __shared__ float s_acc[kWarps][kGroup][kHeadDim];
  if (group_in_warp == 0) {
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) s_acc[warp][j][lane_in_group * kVec + e] = acc[j][e];
      if (lane_in_group == 0) {
        s_m[warp][j] = m[j];
        s_l[warp][j] = l[j];
      }
    }
  }
  __syncthreads();

  StoreDecodeStates<Q, kHeadDim, kGroup>(p, seq, kv_head, chunk, num_seq_chunks, group, s_m, s_l,
                                         s_acc);
}

template <typename T, typename Q, int kHeadDim, int kGroup>
cudaError_t LaunchTyped(const PagedDecodeParams& p, cudaStream_t stream) {
  const dim3 grid(p.plan.num_chunks, p.kv.num_kv_heads, p.batch);
  PagedDecodeKernel<T, Q, kHeadDim, kGroup><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, typename Q, int kHeadDim>
cudaError_t DispatchGroup(const PagedDecodeParams& p, int group, cudaStream_t stream) {
  if constexpr (sizeof(T) == 4) {
    // fp32 is the correctness path: one instantiation for every group size.
    return LaunchTyped<T, Q, kHeadDim, 8>(p, stream);
  } else {
    if (group == 1) return LaunchTyped<T, Q, kHeadDim, 1>(p, stream);
    if (group == 2) return LaunchTyped<T, Q, kHeadDim, 2>(p, stream);
    if (group <= 4) return LaunchTyped<T, Q, kHeadDim, 4>(p, stream);
    return LaunchTyped<T, Q, kHeadDim, 8>(p, stream);
  }
}

template <typename T, typename Q>
cudaError_t DispatchHeadDim(const PagedDecodeParams& p, int group, cudaStream_t stream) {
  switch (p.kv.head_dim) {
    case 32:
      return DispatchGroup<T, Q, 32>(p, group, stream);
    case 64:
      return DispatchGroup<T, Q, 64>(p, group, stream);
    case 128:
      return DispatchGroup<T, Q, 128>(p, group, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

PagedDecodePlan PlanPagedDecode(const int32_t* kv_indptr_host, int32_t batch,
                                int32_t num_kv_heads, int32_t page_size, int32_t num_sms) {
  PagedDecodePlan plan;
  int32_t max_pages = 0;
  for (int32_t b = 0; b < batch; ++b) {
    max_pages = std::max(max_pages, kv_indptr_host[b + 1] - kv_indptr_host[b]);
  }
  max_pages = std::max(max_pages, 1);
  plan.chunk_keys = max_pages * page_size;
  plan.num_chunks = 1;
  // About four blocks per SM keep enough loads in flight; split only when the (sequence, kv
  // head) pairs alone cannot provide them.
  const int64_t blocks = static_cast<int64_t>(batch) * num_kv_heads;
  const int64_t target = 4 * static_cast<int64_t>(std::max(num_sms, 1));
  if (blocks <= 0 || blocks >= target) return plan;
  const int64_t want_chunks = (target + blocks - 1) / blocks;
  int64_t chunk_pages = (max_pages + want_chunks - 1) / want_chunks;
  chunk_pages = std::max<int64_t>(chunk_pages, (kMinChunkKeys + page_size - 1) / page_size);
  const int64_t num_chunks = (max_pages + chunk_pages - 1) / chunk_pages;
  if (num_chunks <= 1) return plan;
  plan.chunk_keys = static_cast<int32_t>(chunk_pages * page_size);
  plan.num_chunks = static_cast<int32_t>(num_chunks);
  return plan;
}

size_t PagedDecodeWorkspaceBytes(const PagedDecodePlan& plan, int32_t batch,
                                 int32_t num_qo_heads, int32_t head_dim) {
  if (plan.num_chunks <= 1) return 0;
  return SplitWorkspaceFloats(plan.num_chunks, batch, num_qo_heads, head_dim) * sizeof(float);
}

cudaError_t LaunchPagedDecode(const PagedDecodeParams& params, cudaStream_t stream) {
  const PagedKv& kv = params.kv;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.batch >= 0 && params.batch <= 65535);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.num_kv_heads > 0 && params.num_qo_heads > 0 &&
                                 params.num_qo_heads % kv.num_kv_heads == 0);
  const int group = params.num_qo_heads / kv.num_kv_heads;
  GLIMPSE_CUDA_RETURN_IF_INVALID(group >= 1 && group <= 8);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.head_dim == 32 || kv.head_dim == 64 || kv.head_dim == 128);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.page_size > 0 && params.plan.num_chunks >= 1 &&
                                 params.plan.chunk_keys > 0 &&
                                 params.plan.chunk_keys % kv.page_size == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(internal::IsAligned16(params.q) &&
                                 internal::IsAligned16(params.o) &&
                                 internal::IsAligned16(kv.k_cache) &&
                                 internal::IsAligned16(kv.v_cache));
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.kv_indptr != nullptr && kv.kv_indices != nullptr &&
                                 kv.kv_last_page_len != nullptr);
  if (params.plan.num_chunks > 1) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(
        params.workspace != nullptr && internal::IsAligned16(params.workspace) &&
        params.workspace_bytes >= PagedDecodeWorkspaceBytes(params.plan, params.batch,
                                                            params.num_qo_heads, kv.head_dim));
  }
  GLIMPSE_CUDA_RETURN_IF_INVALID(!params.fp32_q_and_o || params.dtype == DType::kBF16);
  if (params.o_bf16 != nullptr) {
    GLIMPSE_CUDA_RETURN_IF_INVALID(
        (params.dtype == DType::kF32 || params.fp32_q_and_o) &&
        internal::IsAligned16(params.o_bf16) &&
        (params.plan.num_chunks == 1 || params.merge_counters != nullptr));
  }
  // The tensor-core kernel reads bf16 operands only.
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.kernel == DecodeKernel::kCudaCores ||
                                 params.dtype == DType::kBF16);
  if (params.batch == 0) return cudaSuccess;
  if (params.kernel == DecodeKernel::kMmaSync) {
    GLIMPSE_CUDA_RETURN_IF_ERROR(internal::LaunchPagedDecodeMmaChunks(params, stream));
  } else if (params.dtype == DType::kF32) {
    GLIMPSE_CUDA_RETURN_IF_ERROR((DispatchHeadDim<float, float>(params, group, stream)));
  } else {
    GLIMPSE_CUDA_RETURN_IF_ERROR((params.fp32_q_and_o
                                      ? DispatchHeadDim<bf16, float>(params, group, stream)
                                      : DispatchHeadDim<bf16, bf16>(params, group, stream)));
  }
  if (params.plan.num_chunks == 1 || params.merge_counters != nullptr) return cudaSuccess;
  MergeStatesParams merge;
  merge.dtype = params.fp32_q_and_o ? DType::kF32 : params.dtype;
  merge.partial_o = static_cast<const float*>(params.workspace);
  merge.partial_lse = merge.partial_o + static_cast<int64_t>(params.plan.num_chunks) *
                                            params.batch * params.num_qo_heads * kv.head_dim;
  merge.o = params.o;
  merge.lse = params.lse;
  merge.qo_indptr = nullptr;
  merge.num_seqs = params.batch;
  merge.kv_indptr = kv.kv_indptr;
  merge.kv_last_page_len = kv.kv_last_page_len;
  merge.page_size = kv.page_size;
  merge.chunk_keys = params.plan.chunk_keys;
  merge.num_chunks = params.plan.num_chunks;
  merge.num_rows = params.batch;
  merge.num_qo_heads = params.num_qo_heads;
  merge.head_dim = kv.head_dim;
  return LaunchMergeAttentionStates(merge, stream);
}

}  // namespace glimpse::kernels::cuda
