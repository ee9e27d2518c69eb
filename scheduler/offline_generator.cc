#include "scheduler/offline_generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::scheduler {
namespace {

// One request's progress. All tokens (prompt, then generated) live in `tokens`;
// num_computed of them have their KV in the cache.
struct Sequence {
  const GenerationRequest* request = nullptr;
  std::vector<int32_t> tokens;
  int32_t num_prompt = 0;
  int32_t num_computed = 0;
  std::vector<int32_t> blocks;
  std::unique_ptr<model::Sampler> sampler;
  GenerationResult result;
  bool finished = false;
};

}  // namespace

OfflineGenerator::OfflineGenerator(model::StepRunner& runner, kvcache::BlockPool& blocks,
                                   OfflineGeneratorOptions options)
    : OfflineGenerator(nullptr, &runner, blocks, options) {}

OfflineGenerator::OfflineGenerator(model::LlamaModel& model, model::KvCacheStorage& kv,
                                   kvcache::BlockPool& blocks, OfflineGeneratorOptions options)
    : OfflineGenerator(std::make_unique<model::LlamaStepRunner>(model, kv), nullptr, blocks,
                       options) {}

OfflineGenerator::OfflineGenerator(std::unique_ptr<model::StepRunner> owned_runner,
                                   model::StepRunner* runner, kvcache::BlockPool& blocks,
                                   OfflineGeneratorOptions options)
    : owned_runner_(std::move(owned_runner)),
      runner_(runner != nullptr ? *runner : *owned_runner_),
      blocks_(blocks),
      options_(options) {
  options_.prefill_chunk_tokens = std::max(1, options_.prefill_chunk_tokens);
  options_.max_step_tokens = std::max(1, options_.max_step_tokens);
}

absl::StatusOr<std::vector<GenerationResult>> OfflineGenerator::Run(
    const std::vector<GenerationRequest>& requests, const TokenCallback& on_token) {
  const model::LlamaConfig& config = runner_.config();
  const int32_t block_size = runner_.kv_block_size();
  std::vector<Sequence> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    if (r.prompt_tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, " has an empty prompt"));
    }
    if (r.max_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": max_tokens must be >= 1"));
    }
    const int64_t total = static_cast<int64_t>(r.prompt_tokens.size()) + r.max_tokens;
    if (total > config.context_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", i, ": prompt (", r.prompt_tokens.size(), " tokens) + max_tokens (",
          r.max_tokens, ") exceeds the model's context of ", config.context_length, " tokens"));
    }
    for (int32_t t : r.prompt_tokens) {
      if (t < 0 || t >= config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("request ", i, ": prompt token ", t, " is outside the vocabulary"));
      }
    }
    RETURN_IF_ERROR(model::ValidateSamplingParams(r.sampling, config.vocab_size));
    if (!r.report_logprobs && r.sampling.num_logprobs > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request ", i, ": num_logprobs ", r.sampling.num_logprobs, " without report_logprobs"));
    }
    Sequence& s = seqs[i];
    s.request = &r;
    s.tokens = r.prompt_tokens;
    s.num_prompt = static_cast<int32_t>(r.prompt_tokens.size());
    s.sampler = std::make_unique<model::Sampler>(
        r.sampling, config.vocab_size, options_.seed + static_cast<uint64_t>(i), r.report_logprobs);
    s.sampler->AddPromptTokens(r.prompt_tokens);
  }
  // Activations for this run's largest step now (every request may run at once, one logits
  // row each), as the Engine does at start: a later, larger step would move them and orphan
  // the CUDA graphs captured before it.
  runner_.ReserveActivations(options_.max_step_tokens, static_cast<int32_t>(requests.size()));

  auto release = [&](Sequence& s) {
    blocks_.ReleaseAll(s.blocks);
    s.blocks.clear();
  };
  auto fail = [&](absl::Status status) {
    for (Sequence& s : seqs) release(s);
    return status;
  };

  model::StepLogits step_logits;
  while (true) {
    model::StepBatch batch;
    std::vector<size_t> logits_owner;  // Sequence index of each logits row.
    std::vector<std::pair<size_t, int32_t>> scheduled;  // (sequence index, tokens) this step.
    const bool prefilling = std::any_of(seqs.begin(), seqs.end(), [](const Sequence& s) {
      return !s.finished && s.num_computed < s.num_prompt;
    });
    int32_t budget = options_.max_step_tokens;
    for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
      Sequence& s = seqs[i];
      if (s.finished) continue;
      int32_t n;
      if (s.num_computed < s.num_prompt) {
        n = std::min({s.num_prompt - s.num_computed, options_.prefill_chunk_tokens, budget});
      } else if (prefilling) {
        continue;  // Decodes wait until every prompt is in the cache.
      } else {
        n = 1;
      }
      const int32_t kv_len = s.num_computed + n;
      const int32_t pages = (kv_len + block_size - 1) / block_size;
      if (pages > static_cast<int32_t>(s.blocks.size())) {
        auto more = blocks_.Allocate(pages - static_cast<int32_t>(s.blocks.size()));
        if (!more.has_value()) {
          return fail(absl::ResourceExhaustedError(absl::StrCat(
              "the KV cache (", blocks_.num_blocks(), " blocks of ", block_size,
              " tokens) cannot hold this batch; give it more blocks or run fewer requests")));
        }
        s.blocks.insert(s.blocks.end(), more->begin(), more->end());
      }
      const bool wants_logits = kv_len >= s.num_prompt;
      batch.AddSequence(std::span<const int32_t>(s.tokens).subspan(s.num_computed, n),
                        s.num_computed, s.blocks, block_size, wants_logits);
      if (wants_logits) logits_owner.push_back(i);
      scheduled.emplace_back(i, n);
      budget -= n;
    }
    if (batch.num_tokens() == 0) break;

    // Only what the rows' samples need comes back (as the engine does).
    step_logits.Begin(options_.step_logits, config.vocab_size);
    for (size_t i : logits_owner) {
      step_logits.AddRow(seqs[i].request->sampling, seqs[i].request->report_logprobs);
    }
    step_logits.Finish();
    const auto start = std::chrono::steady_clock::now();
    const absl::Status step_status = step_logits.Forward(runner_, batch);
    if (!step_status.ok()) return fail(step_status);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++counters_.num_steps;
    (prefilling ? counters_.prefill_seconds : counters_.decode_seconds) += seconds;

    for (const auto& [i, n] : scheduled) {
      Sequence& s = seqs[i];
      (s.num_computed < s.num_prompt ? counters_.num_prefill_tokens
                                     : counters_.num_decode_tokens) += n;
      s.num_computed += n;
    }
    {
      // The few logits biased or penalised rows need besides their candidates, in one go.
      std::vector<size_t> rows(logits_owner.size());
      std::vector<model::Sampler*> samplers(logits_owner.size());
      for (size_t row = 0; row < logits_owner.size(); ++row) {
        rows[row] = row;
        samplers[row] = seqs[logits_owner[row]].sampler.get();
      }
      step_logits.Gather(rows, samplers);
    }
    for (size_t row = 0; row < logits_owner.size(); ++row) {
      Sequence& s = seqs[logits_owner[row]];
      model::Sampler::SampleResult sample = step_logits.Sample(*s.sampler, row);
      s.sampler->Accept(sample.token);
      s.tokens.push_back(sample.token);
      s.result.tokens.push_back(sample.token);
      if (on_token) on_token(logits_owner[row], sample);
      const bool is_stop =
          !s.request->ignore_eos &&
          std::find(s.request->stop_token_ids.begin(), s.request->stop_token_ids.end(),
                    sample.token) != s.request->stop_token_ids.end();
      s.result.samples.push_back(std::move(sample));
      if (is_stop || static_cast<int32_t>(s.result.tokens.size()) >= s.request->max_tokens) {
        s.result.finish_reason = is_stop ? FinishReason::kStopToken : FinishReason::kLength;
        s.finished = true;
        release(s);
      }
    }
  }

  counters_.num_nucleus_rows_decided += step_logits.num_nucleus_rows_decided();
  counters_.num_adjusted_rows_decided += step_logits.num_adjusted_rows_decided();
  counters_.num_rows_fetched += step_logits.num_rows_fetched();
  counters_.num_rows_gathered += step_logits.num_rows_gathered();
  std::vector<GenerationResult> results;
  results.reserve(seqs.size());
  for (Sequence& s : seqs) results.push_back(std::move(s.result));
  return results;
}

}  // namespace glimpse::scheduler
