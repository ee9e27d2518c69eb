// Device-side description of one block of the prefill / tree-verification attention kernels
// (prefill_attention.h): which sequence, packed query rows, KV chunk and keys it covers, and
// which keys each of its rows may see. Shared by the tensor-core kernels
// (prefill_attention.cu) and the fp32 CUDA-core kernel (prefill_attention_f32.cu), so that
// both read the plan's work items and apply the causal and tree masks the same way.
#ifndef GLIMPSE_KERNELS_CUDA_PREFILL_WORK_CUH_
#define GLIMPSE_KERNELS_CUDA_PREFILL_WORK_CUH_

#include <cstdint>

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/kv_layout.h"
#include "kernels/cuda/merge_states.cuh"
#include "kernels/cuda/prefill_attention.h"

namespace glimpse::kernels::cuda::internal {

// Packed query rows per block of PrefillKernel::kMmaSync's plan (PlanPrefillAttention), which
// the fp32 kernel runs too: both kernels' blocks are built on it.
constexpr int kMmaSyncBlockRows = 64;

// Blocks of a launch: one per work item and kv head (PrefillBlockOf says which is which);
// LaunchPrefillAttention has checked that they fit a grid's int32 x dimension.
inline int32_t PrefillGridBlocks(const PrefillAttentionParams& p) {
  return p.num_work_items * p.kv.num_kv_heads;
}

// The end of the keys that block (m_tile, chunk) of a sequence reads, from chunk * chunk_keys
// on: its chunk, and under the causal mask nothing past its last packed row's token. Host and
// device: the plan sizes its work items with it (PlanPrefillAttention).
GLIMPSE_HOST_DEVICE inline int32_t BlockKeyEnd(bool causal, int32_t qo_len, int32_t kv_len,
                                               int32_t group, int32_t block_rows, int32_t m_tile,
                                               int32_t chunk, int32_t chunk_keys) {
  const int32_t chunk_end = (chunk + 1) * chunk_keys;
  const int32_t end = kv_len < chunk_end ? kv_len : chunk_end;
  if (!causal) return end;
  const int32_t rows_end = (m_tile + 1) * block_rows;
  const int32_t last_row = (rows_end < qo_len * group ? rows_end : qo_len * group) - 1;
  const int32_t causal_end = kv_len - qo_len + last_row / group + 1;
  return end < causal_end ? end : causal_end;
}

// What one block computes: its work item (sequence, tile of `block_rows` packed query rows,
// KV chunk) and kv head, and the keys that tile reads.
struct BlockWork {
  int32_t qo_start;
  int32_t qo_len;
  int32_t page_begin;
  int32_t num_rows;  // packed rows of the sequence: qo_len * group
  int32_t row_base;  // the block's first packed row
  int32_t prefix;    // KV index of query token 0
  int32_t chunk;
  int32_t chunk_start;
  int32_t key_end;       // keys [chunk_start, key_end) are read
  int32_t unmasked_end;  // keys below this are visible to every row of the block
  int32_t num_tiles;     // tiles of `tile_keys` keys from chunk_start to key_end
  int group;
  int kv_head;
  bool tree;
};

// The work of block blockIdx.x when its kernel walks the keys in tiles of `tile_keys`.
__device__ __forceinline__ BlockWork DescribeBlock(const PrefillAttentionParams& p,
                                                   int32_t block_rows, int32_t tile_keys) {
  BlockWork w;
  const PrefillBlockAssignment a = PrefillBlockOf(
      static_cast<int32_t>(blockIdx.x), p.num_work_items, p.kv.num_kv_heads, p.heads_per_pass);
  const int32_t* item = p.work_items + 3 * static_cast<int64_t>(a.work_item);
  const int32_t seq = item[0];
  const int32_t m_tile = item[1];
  w.chunk = item[2];
  w.kv_head = a.kv_head;
  w.group = p.num_qo_heads / p.kv.num_kv_heads;
  w.tree = p.mask_mode == AttentionMaskMode::kTree;
  w.qo_start = p.qo_indptr[seq];
  w.qo_len = p.qo_indptr[seq + 1] - w.qo_start;
  w.page_begin = p.kv.kv_indptr[seq];
  const int32_t kv_len =
      KvLength(p.kv.kv_indptr[seq + 1] - w.page_begin, p.kv.kv_last_page_len[seq], p.kv.page_size);
  w.num_rows = w.qo_len * w.group;
  w.row_base = m_tile * block_rows;
  w.prefix = kv_len - w.qo_len;
  w.chunk_start = w.chunk * p.chunk_keys;
  w.key_end =
      BlockKeyEnd(!w.tree, w.qo_len, kv_len, w.group, block_rows, m_tile, w.chunk, p.chunk_keys);
  w.unmasked_end = min(w.key_end, w.tree ? w.prefix : w.prefix + w.row_base / w.group + 1);
  w.num_tiles =
      w.key_end > w.chunk_start ? (w.key_end - w.chunk_start + tile_keys - 1) / tile_keys : 0;
  return w;
}

// Query token of block-relative packed row `row` (clamped: padding rows past num_rows compute
// with the last token and are never written).
__device__ __forceinline__ int32_t RowToken(const BlockWork& w, int32_t row) {
  return min((w.row_base + row) / w.group, w.qo_len - 1);
}

// The keys one query token sees: causal, keys up to its own KV index; tree, the whole prefix
// and the tree nodes on its path (its ancestor mask).
struct RowMask {
  int32_t last_key;    // causal: the token's KV index
  uint64_t ancestors;  // tree: bit j = tree key j (KV index prefix + j) is visible
};

__device__ __forceinline__ RowMask RowMaskOf(const PrefillAttentionParams& p, const BlockWork& w,
                                             int32_t token) {
  return {w.prefix + token, w.tree ? p.tree_mask[w.qo_start + token] : uint64_t{0}};
}

__device__ __forceinline__ bool KeyVisible(const BlockWork& w, const RowMask& m, int32_t key) {
  return key < w.key_end &&
         (w.tree ? (key < w.prefix || ((m.ancestors >> (key - w.prefix)) & 1u) != 0)
                 : key <= m.last_key);
}

// One online-softmax step of a row (FlashAttention-2, log2 units): folds the tile's maximum
// score into the running max m and rescales the running sum l by exp2(old m - new m); returns
// that factor (O's row takes it too) and sets m_use to what the tile's exponentials subtract
// (0 while the row has seen no key, so that masked scores give exp2(-inf) = 0, not NaN).
__device__ __forceinline__ float FoldTileMax(float tile_max, float& m, float& l, float& m_use) {
  const float m_new = fmaxf(m, tile_max);
  m_use = m_new == -INFINITY ? 0.0f : m_new;
  const float rescale = FastExp2(m - m_use);
  m = m_new;
  l *= rescale;
  return rescale;
}

// Packed row `pr` (< w.num_rows) of the block's sequence as a row of q, o and lse: query
// token pr / group, qo head kv_head * group + pr % group; returns token * num_qo_heads + head.
__device__ __forceinline__ int64_t PackedRowState(const PrefillAttentionParams& p,
                                                  const BlockWork& w, int32_t pr) {
  const int32_t token = pr / w.group;
  const int32_t j = pr - token * w.group;
  return static_cast<int64_t>(w.qo_start + token) * p.num_qo_heads + w.kv_head * w.group + j;
}

// What a finished row writes: packed row `pr` (< w.num_rows) of the block's sequence, whose
// online softmax ended with running max `m_log2` (log2 units; -inf when it saw no key) and
// sum `l` (the whole row's).
struct RowResult {
  int64_t state;  // index of (query token, qo head) in o / lse: token * num_qo_heads + head
  int64_t slot;   // with a split plan, the index of that state in this chunk's workspace
  float inv_l;    // the factor O's row takes: 1 / l, 0 for a row that saw no key
  float lse;      // natural log of the sum of exp, -inf for a row that saw no key
};

__device__ __forceinline__ RowResult FinishRow(const PrefillAttentionParams& p, const BlockWork& w,
                                               int32_t pr, float m_log2, float l) {
  RowResult r;
  r.state = PackedRowState(p, w, pr);
  r.slot = static_cast<int64_t>(w.chunk) * p.total_q * p.num_qo_heads + r.state;
  const bool empty = m_log2 == -INFINITY;
  r.inv_l = empty ? 0.0f : 1.0f / l;
  r.lse = empty ? -INFINITY : (m_log2 + log2f(l)) * kLn2;
  return r;
}

// The split plan's workspace (attention_common.h): partial outputs [num_chunks][total_q]
// [num_qo_heads][head_dim], then their lses.
__device__ __forceinline__ float* SplitPartialO(const PrefillAttentionParams& p) {
  return static_cast<float*>(p.workspace);
}
__device__ __forceinline__ float* SplitPartialLse(const PrefillAttentionParams& p, int head_dim) {
  return SplitPartialO(p) +
         static_cast<int64_t>(p.num_chunks) * p.total_q * p.num_qo_heads * head_dim;
}

// Whether the block's rows go to the workspace as its chunk's partial state: with a split
// plan, unless the launch merges in the kernel (merge_counters) and the sequence is one chunk,
// whose block's rows are then the result (o and lse, no count, no merge).
__device__ __forceinline__ bool StoresPartialState(const PrefillAttentionParams& p,
                                                   const BlockWork& w) {
  return p.num_chunks > 1 &&
         (p.merge_counters == nullptr || NumKvChunks(w.prefix + w.qo_len, p.chunk_keys) > 1);
}

// Merges chunks 0 .. kv_chunks - 1 of packed rows row_base .. row_base + num_rows - 1 of
// one (sequence, kv head) (MergeTileChunksIfLast), `tid` of `num_threads` threads. Out of
// line, and taking scalars: inlined, its loop made the 128-row kernel at head_dim 128, at
// 255 registers already, spill in its main loop (ptxas, sm_90a).
template <typename Out, int kHeadDim>
__device__ GLIMPSE_DEVICE_NOINLINE void MergeTileRows(
    const float* partial_o, const float* partial_lse, int64_t chunk_stride, int32_t kv_chunks,
    int64_t first_state, int32_t group, int32_t num_qo_heads, int32_t row_base, int32_t num_rows,
    Out* o, float* lse, int tid, int num_threads) {
  const int32_t elements = num_rows * kHeadDim;
  for (int32_t idx = tid; idx < elements; idx += num_threads) {
    const int32_t pr = row_base + idx / kHeadDim;
    const int d = idx % kHeadDim;
    const int32_t token = pr / group;
    const int64_t state =
        first_state + static_cast<int64_t>(token) * num_qo_heads + (pr - token * group);
    const MergedElement merged = MergeChunkStates</*kFromL2=*/true>(
        partial_o, partial_lse, chunk_stride, state, d, kHeadDim, kv_chunks);
    o[state * kHeadDim + d] = FromFloat<Out>(merged.o);
    if (d == 0 && lse != nullptr) lse[state] = merged.lse;
  }
}

// With a split plan and PrefillAttentionParams::merge_counters: counts this block's chunk of
// (sequence, query tile, kv head) as stored; the block that counts the last of the sequence's
// NumKvChunks chunks merges them all into o and lse (as LaunchMergeAttentionStates would, one
// launch later) and sets the counter back to 0 for the next launch. The tile's counter is
// that of its first packed row across the launch's sequences, (qo_start * group + row_base) *
// num_kv_heads + kv_head, below PrefillMergeCounters(total_q, num_qo_heads).
//
// Called by the `num_threads` threads of the block that stored its rows (`tid` 0 ..
// num_threads - 1), once each has; `sync` is a barrier over exactly those threads (the
// pipelined kernels' producer warp has left by then).
template <typename Out, int kHeadDim, class Sync>
__device__ __forceinline__ void MergeTileChunksIfLast(const PrefillAttentionParams& p,
                                                      const BlockWork& w, int32_t block_rows,
                                                      int tid, int num_threads, Sync sync) {
  __shared__ int s_last;
  const int32_t kv_chunks = NumKvChunks(w.prefix + w.qo_len, p.chunk_keys);
  if (kv_chunks == 1) return;  // stored as the result (StoresPartialState)
  // This thread's partial stores, visible device-wide before the block is counted.
  __threadfence();
  sync();
  if (tid == 0) {
    const int64_t tile = static_cast<int64_t>(w.qo_start) * w.group + w.row_base;
    int* counter = p.merge_counters + tile * p.kv.num_kv_heads + w.kv_head;
    const bool last = atomicAdd(counter, 1) == kv_chunks - 1;
    // The other chunks' stores, visible to this block's reads below (published by the barrier).
    __threadfence();
    if (last) *counter = 0;  // no block of the tile is left to count
    s_last = last;
  }
  sync();
  if (!s_last) return;
  // State of packed row 0 of the sequence: query token qo_start, qo head kv_head * group.
  const int64_t first_state =
      static_cast<int64_t>(w.qo_start) * p.num_qo_heads + w.kv_head * w.group;
  MergeTileRows<Out, kHeadDim>(SplitPartialO(p), SplitPartialLse(p, kHeadDim),
                               static_cast<int64_t>(p.total_q) * p.num_qo_heads, kv_chunks,
                               first_state, w.group, p.num_qo_heads, w.row_base,
                               min(block_rows, w.num_rows - w.row_base), static_cast<Out*>(p.o),
                               p.lse, tid, num_threads);
}

// Whether a block of this launch merges its tile's chunks itself (MergeTileChunksIfLast).
__device__ __forceinline__ bool MergesInKernel(const PrefillAttentionParams& p) {
  return p.num_chunks > 1 && p.merge_counters != nullptr;
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_PREFILL_WORK_CUH_
