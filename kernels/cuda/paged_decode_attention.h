// Paged decode attention: one query token per sequence against that sequence's paged KV
// (layout: kv_layout.h), GQA-aware and split over the sequence for long contexts / small
// batches.
//
//   q[b][h][:]  attends to keys 0 .. kv_len(b)-1 of kv head h / group, group = Hq / Hkv
//   o[b][h][:] = sum_j softmax_j(sm_scale * q·k_j) v_j      (o = 0, lse = -inf if kv_len = 0)
//
// Two kernels (PagedDecodeParams::kernel, decode_kernel.h), one block of 4 warps per (kv
// chunk, kv head, sequence) in both, so every K/V byte is read once per kv head and shared by
// the group's query heads:
//
// kCudaCores (paged_decode_attention.cu), fp32 FMAs:
//
//   block ──┬─ warp 0: keys [it*32 + 0 .. 8)   ┐  each warp splits into lane groups of
//           ├─ warp 1: keys [it*32 + 8 .. 16)  │  TPR = head_dim/8 lanes (bf16); a lane group
//           ├─ warp 2: ...                     │  owns one key row at a time, each lane 16
//           └─ warp 3: ...                     ┘  bytes of it, for all `group` query heads
//
// Each lane group keeps its own online-softmax state; states merge through shuffles and
// shared memory at the end of the chunk.
//
// kMmaSync (paged_decode_mma.cu), tensor cores, a bf16 cache only: the group's query heads are
// the rows of an m16 tile; warp w takes the chunk's 16-key tiles w, w + 4, ..., streamed into
// its own cp.async ring (2-3 tiles) in shared memory, and runs S = Q·Kᵀ and O += P·V as
// mma.m16n8k16 with ldmatrix operands. q and the probabilities are rounded to bf16 (as in the
// prefill kernels); fp32 accumulation. Per K/V byte it issues a third (GQA 1) to a tenth
// (GQA 8) of the instructions of kCudaCores (counted: kernels/cuda/BENCHMARKS.md), whose fp32
// dot products, shuffle reductions and per-key exponentials need about as many issue slots
// as an H200 has to stream its HBM at GQA 4, and more at GQA 8.
//
// Both merge the warps' states at the end of the chunk; chunks merge in the last block of
// their (sequence, kv head) to finish (PagedDecodeParams::merge_counters: an atomic count per
// pair), or in LaunchMergeAttentionStates.
//
// dtypes: q, o and the KV cache all bf16, or all fp32 (kCudaCores only), or a bf16 cache with
// fp32 q and o (PagedDecodeParams::fp32_q_and_o: the CUDA backend's fp32 activations; q is
// used unrounded by kCudaCores); fp32 accumulation. head_dim 32, 64 or 128; group size 1..8;
// any page_size >= 1.
#ifndef GLIMPSE_KERNELS_CUDA_PAGED_DECODE_ATTENTION_H_
#define GLIMPSE_KERNELS_CUDA_PAGED_DECODE_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/decode_kernel.h"
#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"

namespace glimpse::kernels::cuda {

// Host-side plan, made once per step from the host copy of the page table and reused by
// every layer.
struct PagedDecodePlan {
  int32_t chunk_keys = 0;  // keys per split chunk, a multiple of page_size
  int32_t num_chunks = 1;  // chunks of the longest sequence; 1 = no split, no workspace
};

// kv_indptr_host: host copy of the page table's indptr, [batch + 1]. num_sms: the device's
// multiprocessor count (cudaDevAttrMultiProcessorCount).
PagedDecodePlan PlanPagedDecode(const int32_t* kv_indptr_host, int32_t batch,
                                int32_t num_kv_heads, int32_t page_size, int32_t num_sms);

// Workspace bytes a run with `plan` needs (0 when plan.num_chunks == 1).
size_t PagedDecodeWorkspaceBytes(const PagedDecodePlan& plan, int32_t batch,
                                 int32_t num_qo_heads, int32_t head_dim);

struct PagedDecodeParams {
  DecodeKernel kernel = DecodeKernel::kCudaCores;  // kMmaSync: dtype kBF16, sm_80+
  DType dtype = DType::kBF16;  // k_cache, v_cache, and q and o unless fp32_q_and_o
  bool fp32_q_and_o = false;   // with dtype kBF16: q and o are fp32
  const void* q = nullptr;     // [batch][num_qo_heads][head_dim]
  void* o = nullptr;           // [batch][num_qo_heads][head_dim]
  float* lse = nullptr;        // [batch][num_qo_heads], natural log; may be null
  PagedKv kv;                  // page table over `batch` sequences
  int32_t batch = 0;
  int32_t num_qo_heads = 0;
  float sm_scale = 1.0f;
  PagedDecodePlan plan;
  void* workspace = nullptr;  // device, PagedDecodeWorkspaceBytes(...) bytes, 16-byte aligned
  size_t workspace_bytes = 0;
  // With a split plan: null, and a second launch (LaunchMergeAttentionStates) merges the
  // chunks; or device int32 [batch][num_kv_heads], all 0, and the last block of each (sequence,
  // kv head) to finish merges its chunks in the same launch (one launch per call instead of
  // two), leaving every counter 0 again for the next launch.
  int32_t* merge_counters = nullptr;
  // Optional, with fp32 o (dtype kF32 or fp32_q_and_o): o rounded to bf16 (nearest even,
  // bitwise what a cast of o gives), [batch][num_qo_heads][head_dim], written beside o for a
  // bf16 GEMM that reads it next (the CUDA backend's decode graphs: the o projection's cast
  // folded into the attention). cudaErrorInvalidValue with a split plan merged in a second
  // launch (no merge_counters).
  void* o_bf16 = nullptr;
};

cudaError_t LaunchPagedDecode(const PagedDecodeParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_PAGED_DECODE_ATTENTION_H_
