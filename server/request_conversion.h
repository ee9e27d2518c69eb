// Translation between the glimpse.v1 wire format and the engine's plain request/output types:
// GenerateRequest → scheduler::EngineRequest (with every validation proto/glimpse/v1/engine.proto
// promises, so that errors name the proto field and its valid range), and
// scheduler::RequestOutput → the GenerateResponse messages of one call (PromptInfo, Chunk deltas,
// one Complete per index).
//
// No gRPC here: the functions are plain and unit-tested without a server
// (request_conversion_test.cc). The gRPC service (grpc_service.h) and, later, the OpenAI gateway
// share them.
#ifndef GLIMPSE_SERVER_REQUEST_CONVERSION_H_
#define GLIMPSE_SERVER_REQUEST_CONVERSION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/tokenizer.h"
#include "proto/glimpse/v1/engine.pb.h"
#include "scheduler/request.h"

namespace glimpse::server {

// Per-request limits the server advertises in GetModelInfoResponse.capabilities.
inline constexpr uint32_t kMaxN = 16;                     // The engine's limit on n.
inline constexpr uint32_t kMaxStopStrings = 32;
inline constexpr uint32_t kMaxLogitBiasEntries = 1024;
inline constexpr size_t kMaxRequestIdBytes = 256;
inline constexpr size_t kMaxCacheSaltBytes = 256;
inline constexpr uint32_t kMaxDraftTokens = 16;           // SpeculationCapabilities.max_draft_tokens.
inline constexpr uint32_t kMinEvictionBudgetTokens = 16;  // EvictionCapabilities.min_budget_tokens.

// What request conversion needs to know about the served model and the engine.
struct ServedModelInfo {
  std::string served_model_name;
  const model::Tokenizer* tokenizer = nullptr;  // Not owned; must outlive every use.
  int32_t vocab_size = 0;
  int32_t context_length = 0;  // Prompt + output tokens.
  int64_t kv_pool_tokens = 0;  // KV blocks × block size of the device pool.

  // GetModelInfoResponse.max_req_input_len: the longest prompt accepted.
  int32_t max_req_input_len() const;
};

// How the service must render one request's outputs (read from OutputOptions and the input
// kind; the engine does not need these).
struct ResponseOptions {
  std::string request_id;
  bool send_prompt_info = false;  // Text input, or return_prompt_token_ids.
  bool detokenize = true;         // Text on Chunk/Complete/TokenLogprob.
  bool final_only = false;
  bool usage_every_chunk = false;
  int32_t stream_interval_tokens = 1;
  bool with_logprobs = false;
  int32_t num_prompt_tokens = 0;
};

struct ConvertedRequest {
  scheduler::EngineRequest engine_request;
  ResponseOptions response;
};

// Validates `request` and converts it. `deadline` is the RPC's hard deadline, if it has one
// (it becomes SchedulingOptions.deadline). An empty request_id gets a fresh UUID.
// Errors: NOT_FOUND for another model; UNIMPLEMENTED for lora_name, guided decoding and
// prompt_logprobs; INVALID_ARGUMENT naming the field otherwise (prompts over the context or the
// KV pool say "context_length_exceeded").
absl::StatusOr<ConvertedRequest> ConvertGenerateRequest(
    const glimpse::v1::GenerateRequest& request, const ServedModelInfo& model,
    std::optional<scheduler::Clock::time_point> deadline);

// A random RFC 4122 version-4 UUID, e.g. "1b4e28ba-2fa1-4d2e-883f-0016d3cca427". Thread-safe.
std::string GenerateRequestId();

// `bytes` with every invalid UTF-8 sequence replaced by U+FFFD (one per invalid byte).
std::string SanitizeUtf8(const std::string& bytes);

// Turns the RequestOutputs of one request, in stream order, into GenerateResponse messages.
// Keeps per-index state for stream_interval_tokens batching and usage_every_chunk.
// Thread-safety: none; one builder per call, used by one thread at a time.
class ResponseBuilder {
 public:
  // `tokenizer` is not owned and must outlive the builder.
  ResponseBuilder(ResponseOptions options, const model::Tokenizer& tokenizer);

  // Appends the messages for `output` (possibly none) to `messages`.
  void Append(const scheduler::RequestOutput& output,
              std::vector<glimpse::v1::GenerateResponse>& messages);

  const ResponseOptions& options() const { return options_; }

 private:
  // A chunk being batched up to stream_interval_tokens, per index.
  struct PendingChunk {
    std::vector<int32_t> token_ids;
    std::string text;
    std::vector<scheduler::TokenLogprob> logprobs;
    int32_t completion_tokens = 0;  // Cumulative, for usage_every_chunk.
  };

  void AppendDelta(const scheduler::SequenceDelta& delta,
                   std::vector<glimpse::v1::GenerateResponse>& messages);
  void FlushChunk(int32_t index, std::vector<glimpse::v1::GenerateResponse>& messages);
  glimpse::v1::GenerateResponse Complete(const scheduler::SequenceDelta& delta) const;
  void FillUsage(const scheduler::Usage& usage, glimpse::v1::Usage* out) const;
  void FillLogprob(const scheduler::TokenLogprob& in, glimpse::v1::TokenLogprob* out) const;

  const ResponseOptions options_;
  const model::Tokenizer& tokenizer_;
  int32_t cached_tokens_ = 0;  // From PromptInfo, for usage_every_chunk.
  std::vector<PendingChunk> pending_;  // Indexed by completion index.
};

// The engine's FinishReason as the proto enum.
glimpse::v1::FinishReason ToProtoFinishReason(scheduler::FinishReason reason);

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_REQUEST_CONVERSION_H_
