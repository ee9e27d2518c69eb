// Runs a fixed set of generation requests to completion with plain (non-speculative)
// decoding, batching all of them step by step: the engine behind `glimpse generate`,
// `glimpse bench` and the model-level tests. The serving scheduler (issue #3) replaces its
// policy with continuous batching, admission and preemption; the step mechanics are the same
// (StepBatch in, logits out, one counter of computed tokens per sequence).
//
// Policy: prefill first. Each step packs prompt chunks (at most `prefill_chunk_tokens` per
// sequence, at most `max_step_tokens` in all) while any prompt is unfinished; afterwards every
// running sequence decodes one token per step.
//
// Ownership: borrows the step runner (or the model and KV storage it wraps in a runner of its
// own) and the block pool (all must outlive it). Thread-safety: one thread.
#ifndef GLIMPSE_SCHEDULER_OFFLINE_GENERATOR_H_
#define GLIMPSE_SCHEDULER_OFFLINE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kvcache/block_pool.h"
#include "model/kv_cache_storage.h"
#include "model/llama_model.h"
#include "model/sampler.h"
#include "model/sampling_params.h"
#include "model/step_logits.h"
#include "model/step_runner.h"

namespace glimpse::scheduler {

struct GenerationRequest {
  std::vector<int32_t> prompt_tokens;  // Including BOS if the model wants one.
  int32_t max_tokens = 16;
  model::SamplingParams sampling;
  // Token ids that end generation (EOS); ignored when ignore_eos.
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // false: samples carry the token alone (logprob NaN; sampling.num_logprobs must be 0), and a
  // greedy sample skips the raw row's log-softmax (Sampler's report_logprobs).
  bool report_logprobs = true;
};

enum class FinishReason { kLength, kStopToken };

struct GenerationResult {
  std::vector<int32_t> tokens;
  std::vector<model::Sampler::SampleResult> samples;  // One per token: logprobs.
  FinishReason finish_reason = FinishReason::kLength;
};

struct OfflineGeneratorOptions {
  int32_t prefill_chunk_tokens = 512;  // Per sequence per step; >= 1.
  int32_t max_step_tokens = 2048;      // Per step, all sequences; >= 1.
  uint64_t seed = 0;                   // Default seed for requests without one.
  // What a step brings back of its logits rows (the argmax, candidates or the rows; the same
  // tokens every way), as the serving engine.
  model::StepLogitsOptions step_logits;
};

// Work and time counters, cumulative over Run() calls.
struct GenerationCounters {
  int64_t num_steps = 0;
  int64_t num_prefill_tokens = 0;  // Prompt tokens run through the model.
  int64_t num_decode_tokens = 0;   // Generated tokens run through the model.
  double prefill_seconds = 0;      // Steps that ran prompt tokens.
  double decode_seconds = 0;       // Steps that ran only decode tokens.
  // Nucleus rows (no top-k: top-p, min-p or plain temperature) and rows with a logit bias or
  // penalties sampled from their candidates, and rows of either fetched after their step
  // because the candidates did not decide (model::StepLogits).
  int64_t num_nucleus_rows_decided = 0;
  int64_t num_adjusted_rows_decided = 0;
  int64_t num_rows_fetched = 0;
  int64_t num_rows_gathered = 0;  // biased or penalised rows that gathered a few logits
};

class OfflineGenerator {
 public:
  using TokenCallback =
      std::function<void(size_t request_index, const model::Sampler::SampleResult& sample)>;

  // Runs on `runner`, whose KV cache must already be allocated with at least
  // blocks.num_blocks() blocks (StepRunner::AllocateKvCache); `blocks` hands them out.
  OfflineGenerator(model::StepRunner& runner, kvcache::BlockPool& blocks,
                   OfflineGeneratorOptions options);
  // The unsplit `model` on `kv` (built for it, at least blocks.num_blocks() blocks).
  OfflineGenerator(model::LlamaModel& model, model::KvCacheStorage& kv,
                   kvcache::BlockPool& blocks, OfflineGeneratorOptions options);

  // Generates for every request; on_token (optional) sees each token as it is sampled.
  // InvalidArgument for bad requests (empty prompt, prompt + max_tokens over the context,
  // bad sampling values); ResourceExhausted if the KV pool cannot hold the batch.
  absl::StatusOr<std::vector<GenerationResult>> Run(const std::vector<GenerationRequest>& requests,
                                                    const TokenCallback& on_token = nullptr);

  const GenerationCounters& counters() const { return counters_; }

 private:
  // runner == nullptr: runs on owned_runner.
  OfflineGenerator(std::unique_ptr<model::StepRunner> owned_runner, model::StepRunner* runner,
                   kvcache::BlockPool& blocks, OfflineGeneratorOptions options);

  std::unique_ptr<model::StepRunner> owned_runner_;  // Set by the LlamaModel constructor.
  model::StepRunner& runner_;
  kvcache::BlockPool& blocks_;
  OfflineGeneratorOptions options_;
  GenerationCounters counters_;
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_OFFLINE_GENERATOR_H_
