#include "kernels/cuda/verify_accept.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sampling_device.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::FindSequence;
using internal::kSampleThreads;
using internal::SampleScratch;

constexpr int kMaxNodes = 64;

// Grid: one block per node row.
__global__ void __launch_bounds__(kSampleThreads) VerifyStatsKernel(VerifyAcceptParams p) {
  __shared__ SampleScratch sc;
  const int32_t row = blockIdx.x;
  const int32_t seq = FindSequence(p.node_indptr, p.num_seqs, row);
  const SamplingConfig& c = p.config;
  const float temperature = c.temperature != nullptr ? c.temperature[seq] : 1.0f;
  const int32_t top_k = c.top_k != nullptr ? c.top_k[seq] : 0;
  const float top_p = c.top_p != nullptr ? c.top_p[seq] : 1.0f;
  const float min_p = c.min_p != nullptr ? c.min_p[seq] : 0.0f;
  const SamplingRowStats st = internal::ComputeRowStats(
      p.logits + static_cast<int64_t>(row) * p.vocab, p.vocab, temperature, top_k, top_p,
      min_p, sc);
  if (threadIdx.x == 0) p.stats[row] = st;
}

// Grid: one block per sequence. Thread 0 walks the tree (a few dozen O(1) probability
// lookups); the block then draws the final token if the walk ends in a sample.
__global__ void __launch_bounds__(kSampleThreads) VerifyWalkKernel(VerifyAcceptParams p) {
  __shared__ SampleScratch sc;
  __shared__ int32_t s_parent[kMaxNodes];
  __shared__ int32_t s_token[kMaxNodes];
  __shared__ int32_t s_excluded[kMaxNodes];
  __shared__ int32_t s_path[kMaxNodes];
  __shared__ int32_t s_num_excluded;
  __shared__ int32_t s_path_len;
  __shared__ int32_t s_final_node;
  __shared__ int32_t s_bonus;  // >= 0: decided without a draw
  const int32_t seq = blockIdx.x;
  const int32_t base = p.node_indptr[seq];
  const int32_t n = min(p.node_indptr[seq + 1] - base, kMaxNodes);
  if (n <= 0) {  // no root: nothing to verify (uniform over the block, before any barrier)
    if (threadIdx.x < kMaxNodes) {
      p.accepted_nodes[static_cast<int64_t>(seq) * kMaxNodes + threadIdx.x] = -1;
    }
    if (threadIdx.x == 0) {
      p.num_accepted[seq] = 0;
      p.bonus_tokens[seq] = -1;
    }
    return;
  }
  if (static_cast<int32_t>(threadIdx.x) < n) {
    s_parent[threadIdx.x] = p.parents[base + threadIdx.x];
    s_token[threadIdx.x] = p.node_tokens[base + threadIdx.x];
  }
  __syncthreads();
  const float* uniforms = p.uniforms + static_cast<int64_t>(seq) * kVerifyUniformsPerSeq;
  if (threadIdx.x == 0) {
    int32_t u = 0;
    int32_t path_len = 0;
    int32_t bonus = -1;
    int32_t num_excluded = 0;
    while (true) {
      const float* row = p.logits + static_cast<int64_t>(base + u) * p.vocab;
      const SamplingRowStats st = p.stats[base + u];
      int32_t accepted = -1;
      num_excluded = 0;
      if (st.greedy) {
        for (int32_t c = u + 1; c < n; ++c) {
          if (s_parent[c] == u && s_token[c] == st.argmax) {
            accepted = c;
            break;
          }
        }
        if (accepted < 0) bonus = st.argmax;
      } else {
        float excluded_mass = 0.0f;
        for (int32_t c = u + 1; c < n; ++c) {
          if (s_parent[c] != u) continue;
          const int32_t x = s_token[c];
          if (x < 0 || x >= p.vocab) continue;  // not a token: never accepted
          if (internal::IsExcluded(x, s_excluded, num_excluded)) continue;  // duplicate sibling
          const float px = internal::RowProb(row, st, x);
          const float residual = 1.0f - excluded_mass;
          const float ratio = residual > 0.0f ? px / residual : 0.0f;
          if (uniforms[c] < ratio) {
            accepted = c;
            break;
          }
          s_excluded[num_excluded++] = x;
          excluded_mass += px;
        }
      }
      if (accepted < 0) break;
      s_path[path_len++] = accepted;
      u = accepted;
    }
    s_num_excluded = num_excluded;
    s_path_len = path_len;
    s_final_node = u;
    s_bonus = bonus;
  }
  __syncthreads();
  int32_t bonus = s_bonus;
  if (bonus < 0) {  // uniform over the block: every thread takes part in the draw
    const int32_t u = s_final_node;
    const SamplingRowStats st = p.stats[base + u];
    bonus = internal::BlockSampleRow(p.logits + static_cast<int64_t>(base + u) * p.vocab,
                                     p.vocab, st, uniforms[0], s_excluded, s_num_excluded, sc);
    if (bonus < 0) {
      // Every kept token was rejected (possible only through rounding of ratios near 1):
      // keep the last rejected draft token rather than emit nothing.
      bonus = s_num_excluded > 0 ? s_excluded[s_num_excluded - 1] : st.argmax;
    }
  }
  if (threadIdx.x < kMaxNodes) {
    p.accepted_nodes[static_cast<int64_t>(seq) * kMaxNodes + threadIdx.x] =
        static_cast<int32_t>(threadIdx.x) < s_path_len ? s_path[threadIdx.x] : -1;
  }
  if (threadIdx.x == 0) {
    p.num_accepted[seq] = s_path_len;
    p.bonus_tokens[seq] = bonus;
  }
}

}  // namespace

cudaError_t LaunchVerifyAccept(const VerifyAcceptParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_seqs >= 0 && params.vocab > 0 &&
                                 params.vocab <= (1 << 24) && params.total_nodes >= 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.logits != nullptr && params.node_indptr != nullptr &&
                                 params.node_tokens != nullptr && params.parents != nullptr &&
                                 params.uniforms != nullptr && params.stats != nullptr &&
                                 params.accepted_nodes != nullptr &&
                                 params.num_accepted != nullptr &&
                                 params.bonus_tokens != nullptr);
  if (params.num_seqs == 0) return cudaSuccess;
  // With no nodes at all the walk kernel still runs: it writes the "nothing to verify"
  // outputs (num_accepted 0, bonus -1, path -1) of every sequence.
  if (params.total_nodes > 0) {
    VerifyStatsKernel<<<params.total_nodes, kSampleThreads, 0, stream>>>(params);
    GLIMPSE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  VerifyWalkKernel<<<params.num_seqs, kSampleThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
