#include "kernels/cuda/tree_attention.h"

namespace glimpse::kernels::cuda {

bool AncestorMasksFromParents(const int32_t* parents, int32_t num_nodes, uint64_t* masks) {
  if (num_nodes < 0 || num_nodes > kMaxTreeNodes) return false;
  for (int32_t i = 0; i < num_nodes; ++i) {
    const int32_t parent = parents[i];
    if (i == 0 ? parent != -1 : (parent < 0 || parent >= i)) return false;
    masks[i] = (uint64_t{1} << i) | (i == 0 ? 0 : masks[parent]);
  }
  return true;
}

cudaError_t LaunchTreeAttention(const PrefillAttentionParams& params, cudaStream_t stream) {
  PrefillAttentionParams tree = params;
  tree.mask_mode = AttentionMaskMode::kTree;
  return LaunchPrefillAttention(tree, stream);
}

}  // namespace glimpse::kernels::cuda
