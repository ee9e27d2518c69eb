// How a Llama model is split over the ranks of a tensor-parallel group (issue #5, Megatron-style).
// Every rank runs the whole forward on the whole batch with the full residual stream; only the
// attention heads and the FFN features are divided, and two all-reduces per layer
// (kernels::Backend::AllReduceSum) turn the ranks' partial projections into the full ones.
//
//   x [T][dim], replicated --RmsNorm--> xn [T][dim], replicated
//      |
//      |  column-parallel: a rank keeps the ROWS of W for its heads / features
//      v
//   wq      [dim][dim]   rows q_heads  * head_dim  --> q   [T][q_local]   \ RoPE; attention over
//   wk, wv  [kv][dim]    rows kv_heads * head_dim  --> k,v [T][kv_local]  / the rank's KV heads
//      |
//      |  row-parallel: a rank keeps the COLUMNS of W for the same heads / features
//      v
//   wo      [dim][dim]   cols q_heads * head_dim --> partial [T][dim] --AllReduceSum--> x += it
//   gate,up [ffn][dim]   rows ffn range          --> silu(gate) * up [T][ffn_local]
//   down    [dim][ffn]   cols ffn range          --> partial [T][dim] --AllReduceSum--> x += it
//
//   output  [vocab][dim] rows vocab range        --> logits [R][vocab_local] (vocab-parallel:
//                                                    TensorParallelModel places each rank's
//                                                    columns into the [R][vocab] answer)
//
//   replicated on every rank: token_embd and the norms. Each rank holds 1/N of every matrix,
//   the output head too: at batch 1 a decode step reads (weights / N) bytes per device.
//
// Two ranks, GQA with 6 query heads over 2 KV heads (3 per group), ffn 512:
//
//   query heads | 0 1 2 | 3 4 5 |    KV heads | 0 | 1 |    ffn features | 0..255 | 256..511 |
//                 rank0   rank1                 r0  r1                     rank0    rank1
//
// Heads split in whole GQA groups (kernels::HeadShardOf) so attention needs no communication
// and a rank's KV cache holds only its KV heads (KvCacheStorage sized with the same rank).
// Row splits of a row-major matrix are contiguous in the file and pack straight from the
// mapping; column splits are gathered into a host copy first (MatrixView has no row stride).
// Q8_0 stores 32-column blocks with one scale each, so a column split must fall on a block
// boundary: LlamaModel::Load refuses a Q8_0 split that does not, rather than dequantizing
// (which would change the stored type and quadruple that shard's memory).
#ifndef GLIMPSE_MODEL_TENSOR_PARALLEL_H_
#define GLIMPSE_MODEL_TENSOR_PARALLEL_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/tensor_parallel_shard.h"
#include "model/llama_config.h"

namespace glimpse::model {

// Which rank of how many a model (or its KV cache) is. {0, 1} is the unsplit model.
struct TensorParallelRank {
  int rank = 0;
  int size = 1;
};

// The parts of the model rank `rank` owns (ranges index heads and FFN features of the full
// model).
struct LlamaShard {
  TensorParallelRank tp;
  kernels::ShardRange q_heads;
  kernels::ShardRange kv_heads;
  kernels::ShardRange ffn;
  kernels::ShardRange vocab;  // rows of the output head (logits columns) this rank computes

  int32_t num_heads() const { return static_cast<int32_t>(q_heads.size()); }
  int32_t num_kv_heads() const { return static_cast<int32_t>(kv_heads.size()); }
  int32_t ffn_dim() const { return static_cast<int32_t>(ffn.size()); }
};

// The shard of `tp.rank`. InvalidArgument (saying why and what would work) when the size is
// < 1, the rank is out of range, the KV heads do not split evenly (kernels::CheckHeadSplit) or
// a rank would get no FFN features. Q8_0 block alignment depends on the stored types and is
// checked by LlamaModel::Load.
absl::StatusOr<LlamaShard> LlamaShardOf(const LlamaConfig& config, TensorParallelRank tp);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_TENSOR_PARALLEL_H_
