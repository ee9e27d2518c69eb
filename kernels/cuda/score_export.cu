#include "kernels/cuda/score_export.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::bf16;
using internal::ToFloat;

constexpr int kThreads = 128;
constexpr int kKeys = 64;        // keys per block
constexpr int kQueryBatch = 16;  // (row, head) query vectors staged per round
constexpr int kMaxHeadDim = 128;

// Thread layout: key = tid % 64, half = tid / 64; each half takes 8 of the 16 staged query
// vectors, and the two partial sums meet in shared memory at the end.
template <typename T>
__global__ void __launch_bounds__(kThreads) ScoreExportKernel(ScoreExportParams p) {
  __shared__ float k_s[kKeys][kMaxHeadDim + 1];  // +1: lanes reading one column hit 32 banks
  __shared__ float q_s[kQueryBatch][kMaxHeadDim];
  __shared__ float lse_s[kQueryBatch];
  __shared__ int32_t last_s[kQueryBatch];
  __shared__ float part_s[2][kKeys];
  const int32_t key0 = blockIdx.x * kKeys;
  const int kv_head = blockIdx.y;
  const int32_t seq = blockIdx.z;
  const int head_dim = p.kv.head_dim;
  const int num_kv_heads = p.kv.num_kv_heads;
  const int group = p.num_qo_heads / num_kv_heads;
  const int32_t page_begin = p.kv.kv_indptr[seq];
  const int32_t kv_len = KvLength(p.kv.kv_indptr[seq + 1] - page_begin,
                                  p.kv.kv_last_page_len[seq], p.kv.page_size);
  const T* k_cache = static_cast<const T*>(p.kv.k_cache);
  for (int idx = threadIdx.x; idx < kKeys * head_dim; idx += kThreads) {
    const int kl = idx / head_dim;
    const int d = idx - kl * head_dim;
    const int32_t key = key0 + kl;
    float v = 0.0f;
    if (key < kv_len) {
      v = ToFloat(k_cache[PagedKeyOffset(p.kv.kv_indices + page_begin, key, kv_head,
                                         num_kv_heads, p.kv.page_size, head_dim) +
                          d]);
    }
    k_s[kl][d] = v;
  }
  const int kl = threadIdx.x % kKeys;
  const int half = threadIdx.x / kKeys;
  const int32_t key = key0 + kl;
  const int32_t row_begin = p.row_indptr[seq];
  const int32_t num_vectors = (p.row_indptr[seq + 1] - row_begin) * group;
  const T* q = static_cast<const T*>(p.q);
  float acc = 0.0f;
  for (int32_t v0 = 0; v0 < num_vectors; v0 += kQueryBatch) {
    __syncthreads();  // K tile written (first round) / previous q batch consumed
    for (int idx = threadIdx.x; idx < kQueryBatch * head_dim; idx += kThreads) {
      const int vl = idx / head_dim;
      const int d = idx - vl * head_dim;
      const int32_t v = v0 + vl;
      float x = 0.0f;
      if (v < num_vectors) {
        const int32_t r = row_begin + v / group;
        const int qh = kv_head * group + v % group;
        x = ToFloat(q[(static_cast<int64_t>(p.rows[r]) * p.num_qo_heads + qh) * head_dim + d]) *
            p.sm_scale;
      }
      q_s[vl][d] = x;
    }
    if (threadIdx.x < kQueryBatch) {
      const int32_t v = v0 + threadIdx.x;
      float lse = -INFINITY;
      int32_t last = -1;
      if (v < num_vectors) {
        const int32_t r = row_begin + v / group;
        const int qh = kv_head * group + v % group;
        lse = p.lse[static_cast<int64_t>(p.rows[r]) * p.num_qo_heads + qh];
        last = p.row_last_key[r];
      }
      lse_s[threadIdx.x] = lse;
      last_s[threadIdx.x] = last;
    }
    __syncthreads();
    if (key < kv_len) {
      for (int vl = half * (kQueryBatch / 2); vl < (half + 1) * (kQueryBatch / 2); ++vl) {
        if (key > last_s[vl] || lse_s[vl] == -INFINITY) continue;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; ++d) dot = fmaf(q_s[vl][d], k_s[kl][d], dot);
        acc += expf(dot - lse_s[vl]);
      }
    }
  }
  part_s[half][kl] = acc;
  __syncthreads();
  if (threadIdx.x < kKeys && key < p.score_stride) {
    p.scores[(static_cast<int64_t>(seq) * num_kv_heads + kv_head) * p.score_stride + key] =
        key < kv_len ? part_s[0][kl] + part_s[1][kl] : 0.0f;
  }
}

}  // namespace

cudaError_t LaunchScoreExport(const ScoreExportParams& params, cudaStream_t stream) {
  const PagedKv& kv = params.kv;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_seqs >= 0 && params.num_seqs <= 65535 &&
                                 kv.num_kv_heads > 0 && kv.num_kv_heads <= 65535 &&
                                 params.num_qo_heads % kv.num_kv_heads == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(kv.head_dim > 0 && kv.head_dim <= kMaxHeadDim &&
                                 kv.page_size > 0 && params.score_stride > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.q != nullptr && params.lse != nullptr &&
                                 params.row_indptr != nullptr && params.rows != nullptr &&
                                 params.row_last_key != nullptr && params.scores != nullptr);
  if (params.num_seqs == 0) return cudaSuccess;
  const dim3 grid((params.score_stride + kKeys - 1) / kKeys, kv.num_kv_heads, params.num_seqs);
  switch (params.dtype) {
    case DType::kF32:
      ScoreExportKernel<float><<<grid, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
    case DType::kBF16:
      ScoreExportKernel<bf16><<<grid, kThreads, 0, stream>>>(params);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace glimpse::kernels::cuda
