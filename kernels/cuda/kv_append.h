// Writes new tokens' keys and values into the paged KV cache (layout: kv_layout.h), and copies
// slots inside the cache (compaction of an accepted draft path after tree verification).
//
// dtypes: inputs and cache both bf16 or both fp32 (no conversion on the way in), or fp32
// inputs into a bf16 cache (KvAppendParams::fp32_input: the CUDA backend's fp32 activations,
// rounded to the nearest bf16, ties to even).
#ifndef GLIMPSE_KERNELS_CUDA_KV_APPEND_H_
#define GLIMPSE_KERNELS_CUDA_KV_APPEND_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "kernels/cuda/dtype.h"

namespace glimpse::kernels::cuda {

struct KvAppendParams {
  DType dtype = DType::kBF16;  // the cache's, and the inputs' unless fp32_input
  // With dtype kBF16: k and v are fp32 and are rounded to bf16 on the way in.
  bool fp32_input = false;
  // Head h of token t starts at k + t * token_stride + h * head_dim (elements); same for v.
  // Strides let k and v be read straight out of a fused QKV projection output.
  const void* k = nullptr;  // [num_tokens][token_stride], heads [num_kv_heads][head_dim]
  const void* v = nullptr;  // [num_tokens][token_stride], heads [num_kv_heads][head_dim]
  int64_t token_stride = 0;
  // Flat slot id of token t: page * page_size + slot; negative = skip (padding token).
  const int32_t* slot_mapping = nullptr;  // device, [num_tokens]
  void* k_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  void* v_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  int32_t num_tokens = 0;
  int32_t num_kv_heads = 0;
  int32_t page_size = 0;
  int32_t head_dim = 0;
};

// One thread per 16 bytes when head_dim, token_stride and pointers allow, else per element.
cudaError_t LaunchKvAppend(const KvAppendParams& params, cudaStream_t stream);

struct KvCopySlotsParams {
  DType dtype = DType::kBF16;
  void* k_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  void* v_cache = nullptr;  // [num_blocks][num_kv_heads][page_size][head_dim]
  // Copy i moves every head's key and value from flat slot src_slots[i] to dst_slots[i].
  // Destinations must be distinct and no destination may be another copy's source (the copies
  // of one launch run concurrently, in no order). Compaction of an accepted path to the slots
  // right after the prefix often breaks this: accepted nodes 0, 2, 5 give the copies 2 -> 1
  // and 5 -> 2, and the second may overwrite slot 2 before the first reads it. Drop copies
  // with src == dst and split the rest into rounds (one launch each) in which no destination
  // is a source, e.g. round r = the r-th remaining copy of every sequence, in path order
  // (sequential forward copies are correct because dst <= src and both increase).
  const int32_t* src_slots = nullptr;  // device, [num_copies]
  const int32_t* dst_slots = nullptr;  // device, [num_copies]
  int32_t num_copies = 0;
  int32_t num_kv_heads = 0;
  int32_t page_size = 0;
  int32_t head_dim = 0;
};

cudaError_t LaunchKvCopySlots(const KvCopySlotsParams& params, cudaStream_t stream);

// One LaunchKvCopySlots launch of a plan: copy i moves src[i] to dst[i].
struct KvCopySlotsRound {
  std::vector<int32_t> src;
  std::vector<int32_t> dst;
};

// Orders slot copies into rounds that LaunchKvCopySlots may run one after another, so that
// every destination ends up with its source's content from before the first round (as if all
// copies read before any wrote): copies with src == dst are dropped, and a copy runs only once
// no later copy still reads its destination. Compacting accepted draft paths (dst < src along
// each path, as in the KvCopySlotsParams example) always orders; `*rounds` is cleared first.
// cudaErrorInvalidValue when two copies share a destination or the copies form a cycle
// (a -> b and b -> a), which no order of plain copies can do.
cudaError_t PlanKvCopySlotRounds(const std::vector<int32_t>& src, const std::vector<int32_t>& dst,
                                 std::vector<KvCopySlotsRound>* rounds);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_KV_APPEND_H_
