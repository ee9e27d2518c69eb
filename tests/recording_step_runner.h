// A StepRunner that runs another one and records what was asked of it: the activation
// reservations and the largest step (tokens, logits rows) that followed. For tests that check a
// driver (the Engine, the OfflineGenerator) reserves activations for every step it then runs,
// which CUDA graphs need: a step larger than the reservation moves the buffers they captured.
//
// Ownership: borrows `inner`, which must outlive this. Thread-safety: as `inner` (one driving
// thread); the recorded values are read after the driver stops.
#ifndef GLIMPSE_TESTS_RECORDING_STEP_RUNNER_H_
#define GLIMPSE_TESTS_RECORDING_STEP_RUNNER_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "model/step_runner.h"

namespace glimpse::testing {

class RecordingStepRunner final : public model::StepRunner {
 public:
  explicit RecordingStepRunner(model::StepRunner& inner) : inner_(inner) {}

  // (max_step_tokens, max_logits_rows) of every ReserveActivations call, in order.
  const std::vector<std::pair<int32_t, int32_t>>& reservations() const { return reservations_; }
  int32_t max_step_tokens_run() const { return max_tokens_; }
  int32_t max_logits_rows_run() const { return max_logits_rows_; }
  int64_t num_steps() const { return num_steps_; }
  // Of those, the steps run through ForwardGreedy (the logits reduced where they are).
  int64_t num_greedy_steps() const { return num_greedy_steps_; }
  // And the steps run through ForwardTopK, with the k of each.
  const std::vector<int32_t>& top_k_steps() const { return top_k_steps_; }
  // ForwardTopK steps that also brought back the rows' softmax normalizers (for logprobs).
  int32_t num_normalizer_steps() const { return num_normalizer_steps_; }
  // Of those, the steps that also brought back the sums at temperature 1 (sums_t1).
  int32_t num_sums_t1_steps() const { return num_sums_t1_steps_; }
  // Rows fetched after a reduced step (CopyStepLogitsRow, CopyStepLogitsRows: samples the
  // reduction left open).
  int32_t num_logits_rows_copied() const { return num_logits_rows_copied_; }
  // Where the last whole rows went (Forward's logits, CopyStepLogitsRows'), and how many.
  const float* last_whole_rows() const { return last_whole_rows_; }
  size_t last_num_whole_rows() const { return last_num_whole_rows_; }
  // A few tokens' logits gathered after a reduced step (GatherStepLogits), calls.
  int32_t num_logits_gathers() const { return num_logits_gathers_; }
  // Called in each forward call, on the driving thread, with the host work handed to it
  // (OverlapNextForward; null: none) before the inner runner runs; what the hook leaves unrun
  // goes on to the inner runner (which, over a model, gives it to its backend).
  void set_overlap_hook(std::function<void(kernels::HostWork*)> hook) {
    overlap_hook_ = std::move(hook);
  }

  // Host memory from `backend` instead of the inner runner's (e.g. an instrumented one that
  // counts its allocations).
  void set_host_memory_backend(kernels::Backend* backend) { host_memory_backend_ = backend; }

  const model::LlamaConfig& config() const override { return inner_.config(); }
  kernels::Backend* host_memory_backend() override {
    return host_memory_backend_ != nullptr ? host_memory_backend_ : inner_.host_memory_backend();
  }
  int tensor_parallel_size() const override { return inner_.tensor_parallel_size(); }
  void AllocateKvCache(int32_t num_blocks, int32_t block_size, int32_t num_host_blocks) override {
    inner_.AllocateKvCache(num_blocks, block_size, num_host_blocks);
  }
  void ReserveActivations(int32_t max_step_tokens, int32_t max_logits_rows) override {
    reservations_.emplace_back(max_step_tokens, max_logits_rows);
    inner_.ReserveActivations(max_step_tokens, max_logits_rows);
  }
  int32_t kv_num_blocks() const override { return inner_.kv_num_blocks(); }
  int32_t kv_block_size() const override { return inner_.kv_block_size(); }
  size_t kv_element_bytes() const override { return inner_.kv_element_bytes(); }
  absl::Status Forward(const model::StepBatch& batch, float* logits) override {
    Record(batch);
    last_whole_rows_ = logits;
    last_num_whole_rows_ = batch.logits_rows.size();
    return inner_.Forward(batch, logits);
  }
  absl::Status ForwardGreedy(const model::StepBatch& batch, int32_t* tokens) override {
    Record(batch);
    ++num_greedy_steps_;
    return inner_.ForwardGreedy(batch, tokens);
  }
  absl::Status ForwardTopK(const model::StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           model::TopTokens* top) override {
    Record(batch);
    top_k_steps_.push_back(k);
    num_normalizer_steps_ += normalizer_temperatures.empty() ? 0 : 1;
    num_sums_t1_steps_ += sums_t1 ? 1 : 0;
    return inner_.ForwardTopK(batch, k, normalizer_temperatures, sums_t1, top);
  }
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override {
    ++num_logits_rows_copied_;
    return inner_.CopyStepLogitsRow(row, logits);
  }
  absl::Status CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) override {
    num_logits_rows_copied_ += static_cast<int32_t>(rows.size());
    last_whole_rows_ = logits;
    last_num_whole_rows_ = rows.size();
    return inner_.CopyStepLogitsRows(rows, logits);
  }
  absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                float* logits) override {
    ++num_logits_gathers_;
    return inner_.GatherStepLogits(rows, ids, logits);
  }
  void MoveKvBlocks(std::span<const model::KvBlockMove> moves) override {
    inner_.MoveKvBlocks(moves);
  }

 private:
  void Record(const model::StepBatch& batch) {
    kernels::HostWork* const work = TakeOverlapWork();
    if (overlap_hook_) overlap_hook_(work);
    inner_.OverlapNextForward(work);
    ++num_steps_;
    max_tokens_ = std::max(max_tokens_, batch.num_tokens());
    max_logits_rows_ = std::max(max_logits_rows_, static_cast<int32_t>(batch.logits_rows.size()));
  }

  model::StepRunner& inner_;
  kernels::Backend* host_memory_backend_ = nullptr;
  std::vector<std::pair<int32_t, int32_t>> reservations_;
  int32_t max_tokens_ = 0;
  int32_t max_logits_rows_ = 0;
  int64_t num_steps_ = 0;
  int64_t num_greedy_steps_ = 0;
  std::function<void(kernels::HostWork*)> overlap_hook_;
  std::vector<int32_t> top_k_steps_;
  int32_t num_normalizer_steps_ = 0;
  int32_t num_sums_t1_steps_ = 0;
  int32_t num_logits_rows_copied_ = 0;
  int32_t num_logits_gathers_ = 0;
  const float* last_whole_rows_ = nullptr;
  size_t last_num_whole_rows_ = 0;
};

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_RECORDING_STEP_RUNNER_H_
