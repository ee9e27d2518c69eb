#include "model/tensor_parallel.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace glimpse::model {

absl::StatusOr<LlamaShard> LlamaShardOf(const LlamaConfig& config, TensorParallelRank tp) {
  if (tp.size < 1 || tp.rank < 0 || tp.rank >= tp.size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor-parallel rank ", tp.rank, " of ",
                                                   tp.size, " is not a valid rank"));
  }
  const std::string why = kernels::CheckHeadSplit(config.num_heads, config.num_kv_heads, tp.size);
  if (!why.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot split model '", config.name, "' (", config.num_heads,
                     " query heads, ", config.num_kv_heads, " KV heads) over ", tp.size,
                     " tensor-parallel ranks: ", why));
  }
  if (config.ffn_dim < tp.size) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split model '", config.name,
                                                   "': its FFN of ", config.ffn_dim,
                                                   " features is narrower than ", tp.size,
                                                   " tensor-parallel ranks"));
  }
  LlamaShard shard;
  shard.tp = tp;
  const kernels::HeadShard heads =
      kernels::HeadShardOf(config.num_heads, config.num_kv_heads, tp.rank, tp.size);
  shard.q_heads = heads.q_heads;
  shard.kv_heads = heads.kv_heads;
  shard.ffn = kernels::ShardOf(config.ffn_dim, tp.rank, tp.size);
  shard.vocab = kernels::ShardOf(config.vocab_size, tp.rank, tp.size);
  return shard;
}

}  // namespace glimpse::model
