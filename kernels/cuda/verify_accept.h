// Verification / acceptance of draft trees (algorithms.md §1.2 and §1.4, deterministic drafts).
//
// Each sequence's draft tree (format: tree_attention.h; node 0 = root) has one logits row per
// node: row u gives the target distribution p(.|u) after the sampling filters (sampling.h).
// Walk from the root:
//
//   greedy (temperature <= 0):  y = argmax p(.|u); descend into the first child (lowest node
//                               index) whose token is y; otherwise emit y as the bonus token.
//   stochastic (SpecInfer multi-step speculative sampling with q = delta):
//       S = {}, for each child c of u in node-index order, skipping tokens already in S:
//           accept c  iff  uniforms[c] < p(x_c) / (1 - p(S))     (p(x_c | residual))
//           else S += {x_c}   (residual: p with S zeroed, renormalized)
//       if a child was accepted: descend into it and repeat;
//       else emit a draw from the residual (a leaf's residual is p itself) with uniforms[0].
//
// So the emitted tokens are those of accepted_nodes followed by the bonus token: num_accepted
// + 1 tokens per sequence, distributed exactly as sampling from the target model.
//
// dtypes: logits fp32 [total_nodes][vocab].
#ifndef GLIMPSE_KERNELS_CUDA_VERIFY_ACCEPT_H_
#define GLIMPSE_KERNELS_CUDA_VERIFY_ACCEPT_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/sampling.h"

namespace glimpse::kernels::cuda {

// Uniforms per sequence: index 0 for the final draw, index c (1..63) for node c's test.
constexpr int32_t kVerifyUniformsPerSeq = 65;

struct VerifyAcceptParams {
  const float* logits = nullptr;  // [total_nodes][vocab], node i of seq s at node_indptr[s] + i
  int32_t vocab = 0;
  int32_t num_seqs = 0;
  const int32_t* node_indptr = nullptr;  // device, [num_seqs + 1]; 1 <= nodes per seq <= 64
  const int32_t* node_tokens = nullptr;  // device, [total_nodes]; the root's entry is unused
  const int32_t* parents = nullptr;      // device, [total_nodes]; -1 for the root, parent < node
  SamplingConfig config;                 // indexed by sequence
  const float* uniforms = nullptr;       // device, [num_seqs][kVerifyUniformsPerSeq], in [0, 1)
  SamplingRowStats* stats = nullptr;     // device scratch, [total_nodes]
  int32_t total_nodes = 0;               // node_indptr[num_seqs]
  // Outputs (device).
  int32_t* accepted_nodes = nullptr;  // [num_seqs][64]: accepted path (node indices), then -1
  int32_t* num_accepted = nullptr;    // [num_seqs]
  int32_t* bonus_tokens = nullptr;    // [num_seqs]
};

// Two launches: distribution statistics for every node row, then one block per sequence
// walks its tree (the final residual draw is block-parallel over the vocabulary).
cudaError_t LaunchVerifyAccept(const VerifyAcceptParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_VERIFY_ACCEPT_H_
