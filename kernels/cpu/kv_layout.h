// The CPU backend's KV layout within one layer (fp32):
//
//   k[block][kv_head][head_dim][slot]   keys transposed inside a block, so the scores of one
//                                       query against a block are sums of contiguous rows
//   v[block][kv_head][slot][head_dim]   values by slot, so the output accumulates rows
//
// `slot` is the position within the block (position % block_size).
#ifndef GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_
#define GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_

#include <cstdint>

#include "kernels/backend.h"

namespace glimpse::kernels::cpu {

// Start of the [head_dim][block_size] key tile of (block, kv_head).
inline float* KeyTile(const KvLayerView& kv, int64_t block, int32_t kv_head) {
  return static_cast<float*>(kv.k) + (block * kv.num_kv_heads + kv_head) * static_cast<int64_t>(kv.head_dim) * kv.block_size;
}

// Start of the [block_size][head_dim] value tile of (block, kv_head).
inline float* ValueTile(const KvLayerView& kv, int64_t block, int32_t kv_head) {
  return static_cast<float*>(kv.v) + (block * kv.num_kv_heads + kv_head) * static_cast<int64_t>(kv.head_dim) * kv.block_size;
}

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_
