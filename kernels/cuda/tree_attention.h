// Tree-verification attention: the draft-tree nodes of each sequence attend to the sequence's
// committed prefix and to their own ancestors. It is the prefill kernel
// (prefill_attention.h) with AttentionMaskMode::kTree; this header fixes the tree format.
//
// Draft tree of one sequence (n <= 64 nodes, node 0 is the root = the last committed token,
// whose KV is written in this pass like every node's):
//
//   KV:  [ prefix: prefix_len keys | node 0 | node 1 | ... | node n-1 ]   kv_len = prefix_len + n
//   RoPE position of node i:  prefix_len + depth(i)        (root depth 0)
//   ancestor mask of node i:  bit j set iff node j is i or an ancestor of i
//
//        0            mask[0] = 0b00001
//       / \           mask[1] = 0b00011
//      1   2          mask[2] = 0b00101
//      |              mask[3] = 0b01011
//      3   (4 under 2) mask[4] = 0b10101
//
// Nodes are numbered so that a parent precedes its children (topological order), which makes
// every ancestor mask's highest set bit the node itself.
//
// dtypes: as prefill (bf16 on tensor cores, or fp32 with PrefillAttentionParams::dtype). Use
// PlanPrefillAttention with mask_mode = kTree.
#ifndef GLIMPSE_KERNELS_CUDA_TREE_ATTENTION_H_
#define GLIMPSE_KERNELS_CUDA_TREE_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/prefill_attention.h"

namespace glimpse::kernels::cuda {

constexpr int32_t kMaxTreeNodes = 64;

// Host helper: ancestor masks from a parent array (parent[0] = -1, parent[i] < i), for tests
// and for the runner. Returns false if the parent array is not a topologically ordered tree
// of at most kMaxTreeNodes nodes.
bool AncestorMasksFromParents(const int32_t* parents, int32_t num_nodes, uint64_t* masks);

// LaunchPrefillAttention with mask_mode forced to kTree (tree_mask required).
cudaError_t LaunchTreeAttention(const PrefillAttentionParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_TREE_ATTENTION_H_
