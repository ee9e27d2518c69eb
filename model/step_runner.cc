#include "model/step_runner.h"

#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace glimpse::model {

void LlamaStepRunner::AllocateKvCache(int32_t num_blocks, int32_t block_size,
                                      int32_t num_host_blocks) {
  kv_ = nullptr;
  owned_kv_.reset();  // Free the old cache before allocating the new one.
  owned_kv_ = std::make_unique<KvCacheStorage>(model_.backend(), model_.config(), num_blocks,
                                               block_size, model_.shard().tp);
  owned_kv_->SetNumHostBlocks(num_host_blocks);
  kv_ = owned_kv_.get();
}

absl::Status LlamaStepRunner::CheckRunnable() const {
  if (kv_ == nullptr) return absl::FailedPreconditionError("Forward before AllocateKvCache");
  if (model_.shard().tp.size != 1) {
    // A rank's model computes only its slice of the logits (TensorParallelModel joins them).
    return absl::FailedPreconditionError(
        "LlamaStepRunner runs the unsplit model; a tensor-parallel rank needs "
        "TensorParallelModel");
  }
  return absl::OkStatus();
}

absl::Status LlamaStepRunner::ForwardGreedy(const StepBatch& batch, int32_t* tokens) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  RETURN_IF_ERROR(CheckRunnable());
  model_.OverlapNextForward(overlap);
  argmax_values_.resize(batch.logits_rows.size());
  return model_.ForwardArgMax(batch, *kv_, tokens, argmax_values_.data());
}

absl::Status LlamaStepRunner::ForwardTopK(const StepBatch& batch, int32_t k,
                                          std::span<const float> normalizer_temperatures,
                                          bool sums_t1, TopTokens* top) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  RETURN_IF_ERROR(CheckRunnable());
  const bool normalizers = !normalizer_temperatures.empty();
  CHECK(!normalizers || normalizer_temperatures.size() == batch.logits_rows.size());
  CHECK(!sums_t1 || normalizers);
  top->Resize(batch.logits_rows.size(), k, normalizers, sums_t1);
  model_.OverlapNextForward(overlap);
  return model_.ForwardTopK(batch, *kv_, k, top->count.data(), top->ids.data(), top->logits.data(),
                            top->row_max_data(), top->row_exp_sum_data(),
                            normalizers ? normalizer_temperatures.data() : nullptr,
                            top->row_exp_sum_t1_data());
}

absl::Status StepRunner::CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) {
  const size_t vocab = static_cast<size_t>(config().vocab_size);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0) return absl::OutOfRangeError(absl::StrCat("logits row ", rows[i]));
    RETURN_IF_ERROR(CopyStepLogitsRow(static_cast<size_t>(rows[i]), logits + i * vocab));
  }
  return absl::OkStatus();
}

absl::Status StepRunner::GatherStepLogits(std::span<const int32_t> rows,
                                          std::span<const int32_t> ids, float* logits) {
  const int32_t vocab = config().vocab_size;
  if (rows.size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits to gather: ", rows.size(), " rows for ", ids.size(), " token ids"));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " to gather is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  std::vector<float> whole(static_cast<size_t>(vocab));
  int64_t copied = -1;  // the row in `whole`
  for (size_t i = 0; i < ids.size(); ++i) {
    if (rows[i] < 0) return absl::OutOfRangeError(absl::StrCat("logits row ", rows[i]));
    if (rows[i] != copied) {
      RETURN_IF_ERROR(CopyStepLogitsRow(static_cast<size_t>(rows[i]), whole.data()));
      copied = rows[i];
    }
    logits[i] = whole[ids[i]];
  }
  return absl::OkStatus();
}

absl::Status LlamaStepRunner::CopyStepLogitsRow(size_t row, float* logits) {
  return model_.CopyStepLogitsRow(static_cast<int64_t>(row), logits);
}

absl::Status LlamaStepRunner::CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) {
  return model_.CopyStepLogitsRows(rows, logits);
}

absl::Status LlamaStepRunner::GatherStepLogits(std::span<const int32_t> rows,
                                               std::span<const int32_t> ids, float* logits) {
  return model_.GatherStepLogits(rows, ids, logits);
}

absl::Status LlamaStepRunner::Forward(const StepBatch& batch, float* logits) {
  kernels::HostWork* const overlap = TakeOverlapWork();
  RETURN_IF_ERROR(CheckRunnable());
  model_.OverlapNextForward(overlap);
  return model_.Forward(batch, *kv_, logits);
}

void LlamaStepRunner::MoveKvBlocks(std::span<const KvBlockMove> moves) {
  if (!moves.empty()) kv_->ApplyMoves(moves);
}

}  // namespace glimpse::model
