// The CUDA backend's paged KV cache layout (one layer; K and V are two separate tensors of the
// same shape):
//
//   k_cache[num_blocks][num_kv_heads][page_size][head_dim]      dtype bf16 or fp32
//   v_cache[num_blocks][num_kv_heads][page_size][head_dim]
//
//   block b (contiguous, S = num_kv_heads * page_size * head_dim elements)
//   ┌──────────────────────────── kv_head 0 ─────────────────────────────┬─ kv_head 1 ─┬ ...
//   │ slot 0: d0 d1 ... d(D-1) │ slot 1: d0 ... d(D-1) │ ... │ slot P-1 │     ...     │
//   └──────────────────────────────────────────────────────────────────────┴─────────────┴
//
// Why this order:
//   - block outermost: a block is one contiguous range [b*S, (b+1)*S) of each tensor, so
//     blocks are copied, swapped to the host tier and compacted whole (KvLayerView contract in
//     kernels/backend.h);
//   - kv_head before slot: the P keys of one head in one page are one contiguous
//     page_size*head_dim run (4 KiB at P=16, D=128, bf16), which a warp reads fully coalesced
//     with 16-byte vectors and which cp.async streams straight into a shared-memory tile;
//   - head_dim innermost: a key row is the unit of a dot product and of an ldmatrix row.
// (The CPU backend transposes K inside a block instead; see kernels/cpu/kv_layout.h.)
//
// Page tables are CSR, int32, in device memory (FlashInfer's convention):
//   the pages of sequence s are kv_indices[kv_indptr[s] .. kv_indptr[s+1]), in order;
//   its last page holds kv_last_page_len[s] valid slots (1 ≤ last ≤ page_size), so
//   kv_len(s) = (num_pages(s) - 1) * page_size + kv_last_page_len[s]   (0 when no pages).
// Key number j of sequence s (j < kv_len) lives in page kv_indices[kv_indptr[s] + j / P] at
// slot j % P. A flat "slot id" (as used by KV append) is page * page_size + slot.
#ifndef GLIMPSE_KERNELS_CUDA_KV_LAYOUT_H_
#define GLIMPSE_KERNELS_CUDA_KV_LAYOUT_H_

#include <cstdint>

#if defined(__CUDACC__)
#define GLIMPSE_HOST_DEVICE __host__ __device__
#else
#define GLIMPSE_HOST_DEVICE
#endif

namespace glimpse::kernels::cuda {

// Element offset of (page, kv_head, slot, 0) in k_cache / v_cache.
GLIMPSE_HOST_DEVICE inline int64_t KvOffset(int64_t page, int32_t kv_head, int32_t slot,
                                            int32_t num_kv_heads, int32_t page_size,
                                            int32_t head_dim) {
  return ((page * num_kv_heads + kv_head) * page_size + slot) * static_cast<int64_t>(head_dim);
}

// Element offset of (key `key`, kv_head, 0) of the sequence whose page list starts at
// `seq_pages` (= kv_indices + kv_indptr[s]); key < kv_len(s).
GLIMPSE_HOST_DEVICE inline int64_t PagedKeyOffset(const int32_t* seq_pages, int32_t key,
                                                  int32_t kv_head, int32_t num_kv_heads,
                                                  int32_t page_size, int32_t head_dim) {
  const int32_t page_idx = key / page_size;
  return KvOffset(seq_pages[page_idx], kv_head, key - page_idx * page_size, num_kv_heads,
                  page_size, head_dim);
}

// Number of valid keys of a sequence with `num_pages` pages.
GLIMPSE_HOST_DEVICE inline int32_t KvLength(int32_t num_pages, int32_t last_page_len,
                                            int32_t page_size) {
  return num_pages == 0 ? 0 : (num_pages - 1) * page_size + last_page_len;
}

// A paged KV cache of one layer as the attention kernels see it. All pointers are device
// memory; the page table arrays describe `num_seqs` sequences.
struct PagedKv {
  const void* k_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  const void* v_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  const int32_t* kv_indptr = nullptr;         // [num_seqs + 1]
  const int32_t* kv_indices = nullptr;        // [kv_indptr[num_seqs]]
  const int32_t* kv_last_page_len = nullptr;  // [num_seqs]
  int32_t num_kv_heads = 0;
  int32_t page_size = 0;
  int32_t head_dim = 0;
};

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_KV_LAYOUT_H_
