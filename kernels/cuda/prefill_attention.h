// Attention of many query tokens per sequence over the paged KV cache (layout: kv_layout.h),
// on tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation; FlashAttention-2
// style online softmax). One kernel serves two masks:
//
//   kCausal (prefill, chunked prefill): the qo_len query tokens of a sequence are its last
//       qo_len KV entries (KV append ran first); query t (0-based) at KV index
//       kv_len - qo_len + t sees keys 0 .. kv_len - qo_len + t.
//   kTree (speculative verification, see tree_attention.h): the qo_len <= 64 query tokens are
//       draft-tree nodes stored as the last qo_len KV entries in node order; node i sees the
//       whole prefix (keys 0 .. kv_len - qo_len - 1) and tree key j (KV index
//       kv_len - qo_len + j) iff bit j of tree_mask[i] is set.
//
// GQA packing: for one kv head the query rows of all `group` query heads of a token are
// packed into consecutive rows, packed row r = token * group + j, so a block's 64 rows share
// every K/V tile it loads:
//
//   block (work item = sequence, 64-row tile, kv chunk; and a kv head), 4 warps
//   ┌ warp 0: packed rows  0..15 ┐   Q tile [64][D] → registers (A fragments) once
//   │ warp 1: packed rows 16..31 │   loop over 64-key tiles of the chunk, double-buffered
//   │ warp 2: packed rows 32..47 │   with cp.async straight from the pages:
//   └ warp 3: packed rows 48..63 ┘     S = Q·Kᵀ (mma), mask, online softmax, O += P·V (mma)
//
// Launch order (PlanPrefillAttention, PrefillBlockOf): the GPU starts blocks roughly in
// block-index order, so the plan sorts its work items by the key tiles they read, longest
// first (the causal mask makes a sequence's last query tiles read the most keys), and block
// indices run over the kv heads of an item before the next item: every head's longest blocks
// start in the first wave and the short ones fill the tail. The kv heads are taken in passes
// of as many as keep the KV read at once within half the L2 (FlashAttention-3's scheduler
// does the same), so the blocks in flight share K/V tiles in L2.
//
// Shared memory rows are padded by 16 bytes (row stride head_dim + 8 elements), which makes
// every ldmatrix of 8 rows hit 8 different 16-byte bank groups.
//
// dtypes: bf16 q, o and KV on tensor cores, fp32 accumulation and softmax; or, with
// PrefillAttentionParams::dtype = DType::kF32, fp32 q, o and KV on CUDA cores in fp32
// throughout (the exact path; prefill_attention_f32.cu: the same 64-row blocks and plan as
// kMmaSync, 32-key tiles). head_dim 32, 64 or 128; group size 1..8; any page_size >= 1. Long
// KV with few query rows is split into chunks of plan.chunk_keys keys and merged
// (attention_common.h): by the last block of each (sequence, query tile, kv head) to finish,
// in the same launch, given PrefillAttentionParams::merge_counters; else in a second launch.
//
// Four kernels for the same results (PrefillAttentionParams::kernel; the plan is made for one,
// PrefillPlanInput::kernel):
//   kMmaSync (default; sm_80+): ldmatrix + mma.sync.m16n8k16 per warp, as drawn above.
//   kMmaSyncWide (sm_80+): 128-row blocks, each warp 16 rows of each 64-row half; every K or
//       V fragment a warp loads from shared memory feeds two mma instead of one: 0.25
//       fragment loads per mma instead of 0.5 (0.31 at head_dim 128, whose Q fragments no
//       longer fit in registers and are reloaded per k-step), the shared-memory traffic that
//       bounds mma.sync on Hopper, for twice the accumulator registers and half the blocks.
//       Not yet run on a GPU; kernel_bench measures it beside kMmaSync.
//   kWgmma (sm_90a, head_dim 64 or 128): the block's 4 warps are one warpgroup; S = Q·Kᵀ is
//       8 (head_dim 128) wgmma.m64n64k16 with Q from registers and K from a 128-byte-swizzled
//       shared tile, and O += P·V is 4 wgmma.m64n{head_dim}k16 with P from registers and V
//       read MN-major, in place of 2 x 64 (S) and 4 x 16 (P·V) ldmatrix + mma pairs per warp.
//       Checked on the CPU emulation of CUDA (whose wgmma follows the PTX ISA's descriptor
//       layouts); not yet run on a GPU, hence not the default.
//   kWgmmaPipelined (sm_90a, head_dim 64 or 128, page_size with gcd(page_size, 64) >= 8):
//       FlashAttention-3's structure. 128-row blocks of three warpgroups: a producer warp
//       streams K/V tiles with TMA (cp.async.bulk.tensor from tensor maps over the caches,
//       one box per page run, landing in wgmma's swizzle) into a 3-stage ring guarded by
//       "full"/"empty" mbarriers, while two consumer warpgroups (64 rows each, Q in
//       registers) run the same wgmma products and softmax as kWgmma, each softmax overlapped
//       with the consumer's previous P·V, and take turns issuing their products (ping-pong
//       over two named barriers), so that one's softmax runs under the other's products.
//       Loads run ahead of the math and neither consumer issues a load. Checked on the
//       emulation (mbarriers, TMA and named barriers emulated after the PTX ISA); not yet
//       run on a GPU.
//   kWgmmaPipelined128 (as kWgmmaPipelined, page_size with gcd(page_size, 128) >= 8):
//       kWgmmaPipelined with FlashAttention-3's head_dim-128 tile: 128-key K/V tiles (a
//       tile's scores and P fragments take 96 registers per consumer thread), so each
//       consumer's 64 Q rows live in shared memory and S = Q·Kᵀ is wgmma.m64n128k16 with both
//       operands read through descriptors. Every per-tile cost (mbarrier waits and arrivals,
//       the ping-pong turn, the softmax's row reductions, the rescale of O) is paid per 128
//       keys. 230 KB of shared memory at head_dim 128 (3 stages of 64 KB and the Q tiles).
//       Emulated only, as kWgmmaPipelined.
#ifndef GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_H_
#define GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"
#include "kernels/cuda/prefill_kernel.h"

namespace glimpse::kernels::cuda {

enum class AttentionMaskMode { kCausal, kTree };

// Whether the wgmma kernels (kWgmma, kWgmmaPipelined, kWgmmaPipelined128) exist for this head_dim
// (they also need a compute capability 9.0 device, checked at launch).
inline bool WgmmaPrefillSupported(int32_t head_dim) { return head_dim == 64 || head_dim == 128; }

// Dynamic shared memory one block of `kernel` takes at `head_dim` (32, 64 or 128).
size_t PrefillSharedMemoryBytes(PrefillKernel kernel, int32_t head_dim);

// The kernel to run when `requested` is asked for at `head_dim` and `page_size` on a device
// of compute capability `compute_major` granting `max_shared_memory_per_block` bytes
// (sharedMemPerBlockOptin): `requested` where it runs there, else kMmaSync (wgmma: sm_90 and
// head_dim 64/128 only; the 128-row kernel: 104 KB at head_dim 128, over the 99 KB of
// sm_86/sm_89 GPUs), or kWgmma for the pipelined kernels at a page size their TMA boxes
// cannot tile, or kWgmmaPipelined for kWgmmaPipelined128 where its 230 KB of shared memory
// do not fit. When it falls back and `why` is not null, *why says why, for a person.
PrefillKernel PrefillKernelFor(PrefillKernel requested, int32_t head_dim, int32_t page_size,
                               int compute_major, size_t max_shared_memory_per_block,
                               std::string* why = nullptr);

// Host-side plan, made once per step from host copies of the index arrays and reused by every
// layer (upload work_items once per step).
struct PrefillPlan {
  int32_t block_rows = 64;  // packed query rows per block: 128 for kMmaSyncWide and the
                            // pipelined kernels, else 64
  int32_t total_q = 0;      // qo_indptr[num_seqs]
  int32_t chunk_keys = 0;   // keys per split chunk, a multiple of the kernel's tile (64, or
                            // 128 for kWgmmaPipelined128)
  int32_t num_chunks = 1;  // chunks of the longest sequence; 1 = no split, no workspace
  int32_t heads_per_pass = 0;  // kv heads whose blocks are launched together (PrefillBlockOf)
  // Three int32 per work item: (sequence, block_rows-row tile, kv chunk), ordered by the key
  // tiles each reads, most first (ties keep sequence order).
  std::vector<int32_t> work_items;
  int32_t num_work_items() const { return static_cast<int32_t>(work_items.size() / 3); }
};

struct PrefillPlanInput {
  const int32_t* qo_indptr = nullptr;         // host, [num_seqs + 1]
  const int32_t* kv_indptr = nullptr;         // host, [num_seqs + 1]
  const int32_t* kv_last_page_len = nullptr;  // host, [num_seqs]
  int32_t num_seqs = 0;
  int32_t num_qo_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t page_size = 0;
  AttentionMaskMode mask_mode = AttentionMaskMode::kCausal;
  int32_t num_sms = 132;  // cudaDevAttrMultiProcessorCount
  PrefillKernel kernel = PrefillKernel::kMmaSync;  // the kernel the plan's tiles are for
  // For heads_per_pass: bytes of K and V one key of one kv head takes (2 * head_dim * element
  // size) and the device's L2 (cudaDevAttrL2CacheSize). Either 0: all heads in one pass.
  int64_t kv_bytes_per_key = 0;
  int64_t l2_cache_bytes = 0;
};

// cudaErrorInvalidValue when a sequence has qo_len > kv_len, or qo_len > 64 in kTree mode.
// Work item order and heads_per_pass: see "Launch order" above.
cudaError_t PlanPrefillAttention(const PrefillPlanInput& input, PrefillPlan* plan);

size_t PrefillWorkspaceBytes(const PrefillPlan& plan, int32_t num_qo_heads, int32_t head_dim);

struct PrefillAttentionParams {
  // Element type of q, o and the caches: kBF16 (the tensor-core kernels) or kF32 (the fp32
  // CUDA-core kernel, which takes kernel = kMmaSync and its plan; cudaErrorInvalidValue for
  // any other kernel).
  DType dtype = DType::kBF16;
  const void* q = nullptr;  // dtype [total_q][num_qo_heads][head_dim]
  void* o = nullptr;        // dtype [total_q][num_qo_heads][head_dim]
  float* lse = nullptr;     // [total_q][num_qo_heads], natural log of sum exp; may be null
  PagedKv kv;               // dtype caches, page table over num_seqs sequences
  const int32_t* qo_indptr = nullptr;  // device, [num_seqs + 1]
  int32_t num_seqs = 0;
  int32_t num_qo_heads = 0;
  float sm_scale = 1.0f;
  AttentionMaskMode mask_mode = AttentionMaskMode::kCausal;
  // kWgmma(Pipelined): cudaErrorInvalidValue unless WgmmaPrefillSupported(head_dim) on an
  // sm_90 device (and, pipelined, PrefillKernelFor keeps it at this page size).
  PrefillKernel kernel = PrefillKernel::kMmaSync;
  // kTree: bit j of tree_mask[t] set iff node j is node t or an ancestor of it (t is the
  // node index within its sequence; the array is indexed by global query token).
  const uint64_t* tree_mask = nullptr;  // device, [total_q]
  // From the plan: its scalars and a device copy of plan.work_items. cudaErrorInvalidValue
  // when the plan was made for another kernel's tiles (block_rows).
  int32_t block_rows = 64;
  int32_t total_q = 0;
  int32_t chunk_keys = 0;
  int32_t num_chunks = 1;
  const int32_t* work_items = nullptr;  // device, [3 * num_work_items]
  int32_t num_work_items = 0;
  int32_t heads_per_pass = 0;  // 0 (or >= kv.num_kv_heads): all kv heads in one pass
  void* workspace = nullptr;  // device, PrefillWorkspaceBytes(...) bytes when num_chunks > 1
  size_t workspace_bytes = 0;
  // With a split plan: null, and a second launch (LaunchMergeAttentionStates) merges the
  // chunks; or device int32 counters, PrefillMergeCounters(...) of them, all 0, and the last
  // block of each (sequence, query tile, kv head) to finish merges that tile's chunks in the
  // same launch (one launch per call instead of two), leaving every counter 0 again for the
  // next launch. cudaErrorInvalidValue when num_merge_counters is too small.
  int32_t* merge_counters = nullptr;
  int64_t num_merge_counters = 0;
};

// The merge counters a split launch over `total_q` query tokens of `num_qo_heads` heads
// indexes (PrefillAttentionParams::merge_counters): one per packed query row and kv head, of
// which each block's first row uses one. At most 2 * num_sms * 128 with a split plan, whose
// blocks fill fewer than two waves.
inline int64_t PrefillMergeCounters(int32_t total_q, int32_t num_qo_heads) {
  return static_cast<int64_t>(total_q) * num_qo_heads;
}

// Fills the plan-derived fields of `params` (all but work_items, which must point to a device
// copy of plan.work_items).
void ApplyPrefillPlan(const PrefillPlan& plan, PrefillAttentionParams* params);

cudaError_t LaunchPrefillAttention(const PrefillAttentionParams& params, cudaStream_t stream);

// What block `block` of a launch over num_work_items * num_kv_heads blocks computes: work
// item work_item for kv head kv_head. Blocks go pass by pass over groups of heads_per_pass kv
// heads (the last group may be narrower; heads_per_pass 0 = all heads), and within a pass
// item by item, each item's heads side by side, so the plan's longest-first order holds
// across heads.
struct PrefillBlockAssignment {
  int32_t work_item;
  int32_t kv_head;
};

GLIMPSE_HOST_DEVICE inline PrefillBlockAssignment PrefillBlockOf(int32_t block,
                                                                 int32_t num_work_items,
                                                                 int32_t num_kv_heads,
                                                                 int32_t heads_per_pass) {
  const int32_t width =
      heads_per_pass > 0 && heads_per_pass < num_kv_heads ? heads_per_pass : num_kv_heads;
  const int32_t pass_blocks = num_work_items * width;
  const int32_t pass = block / pass_blocks;
  const int32_t first_head = pass * width;
  const int32_t heads_left = num_kv_heads - first_head;
  const int32_t pass_width = heads_left < width ? heads_left : width;
  const int32_t in_pass = block - pass * pass_blocks;
  const int32_t item = in_pass / pass_width;
  return {item, first_head + (in_pass - item * pass_width)};
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_PREFILL_ATTENTION_H_
