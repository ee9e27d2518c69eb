// What a front end hands the engine (EngineRequest, already validated and tokenized) and what
// the engine hands back (RequestOutput, streamed through a RequestStream). Plain data: the
// gRPC service and the HTTP gateway translate their wire formats to and from these.
#ifndef GLIMPSE_SCHEDULER_REQUEST_H_
#define GLIMPSE_SCHEDULER_REQUEST_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "model/sampling_params.h"

namespace glimpse::scheduler {

using Clock = std::chrono::steady_clock;

struct StoppingOptions {
  int32_t max_tokens = 16;  // >= 1; prompt + max_tokens must fit the context.
  int32_t min_tokens = 0;   // Stops (EOS, stop ids, stop strings) are ignored before this.
  std::vector<std::string> stop_strings;  // Matched on detokenized text.
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_in_output = false;
};

struct OutputOptions {
  bool final_only = false;         // One complete result per sequence instead of deltas.
  bool detokenize = true;          // Produce text deltas.
  bool skip_special_tokens = true;
  int32_t num_logprobs = -1;       // -1: none; 0: the sampled token's; N: plus top N.
  bool return_prompt_token_ids = false;
};

struct SchedulingOptions {
  int32_t priority = 0;  // Higher runs first; waiting requests age upwards.
  // Soft deadline from arrival: the request finishes with kTimeout and partial output.
  std::optional<std::chrono::milliseconds> timeout;
  // Hard deadline (the RPC's): the request is cancelled with DEADLINE_EXCEEDED.
  std::optional<Clock::time_point> deadline;
};

struct KvRequestOptions {
  std::string cache_salt;  // Prefix-cache namespace.
  bool bypass_prefix_cache = false;
};

struct EngineRequest {
  std::string request_id;             // Unique among in-flight requests.
  std::vector<int32_t> prompt_tokens;  // Tokenized, BOS included when wanted.
  int32_t n = 1;                      // Completions sharing the prompt.
  model::SamplingParams sampling;
  StoppingOptions stopping;
  OutputOptions output;
  SchedulingOptions scheduling;
  KvRequestOptions kv;
};

enum class FinishReason { kStop, kLength, kAbort, kTimeout };

// Why a sequence stopped with kStop.
struct StopMatch {
  enum class Kind { kNone, kEosToken, kStopToken, kStopString };
  Kind kind = Kind::kNone;
  int32_t token_id = -1;
  std::string stop_string;
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // Most likely first.
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // Prompt tokens served from the prefix cache.
};

// Deterministic work counts and timings of one sequence, reported with its completion.
struct GenerationStats {
  int64_t queue_time_us = 0;
  int64_t ttft_us = 0;
  int64_t e2e_us = 0;
  int32_t num_preemptions = 0;
  int32_t peak_kv_blocks = 0;
};

// New output of one sequence (index < n) since the last delta.
struct SequenceDelta {
  int32_t index = 0;
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<TokenLogprob> logprobs;  // One per token when asked for.
  bool finished = false;
  // Set when finished:
  FinishReason finish_reason = FinishReason::kLength;
  StopMatch matched_stop;
  std::string message;  // Why, for kAbort / kTimeout.
  Usage usage;
  GenerationStats stats;
};

struct PromptInfo {
  std::vector<int32_t> token_ids;  // When return_prompt_token_ids.
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;
  int64_t queue_time_us = 0;
};

// One message on a request's stream. The stream ends after a message with `done` set:
// either every sequence finished (status OK) or the request failed (status not OK, e.g.
// DEADLINE_EXCEEDED when the hard deadline passed, CANCELLED when the client went away).
struct RequestOutput {
  std::optional<PromptInfo> prompt;
  std::vector<SequenceDelta> deltas;
  bool done = false;
  absl::Status status;
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_REQUEST_H_
