// Parsing of OpenAI request bodies (POST /v1/completions, POST /v1/chat/completions) into
// glimpse.v1 GenerateRequests.
//
// What is checked here: JSON well-formedness, the type of every known field and the ranges
// OpenAI (or, for its extras, vLLM) documents. A bad field is INVALID_ARGUMENT carrying the
// OpenAI field name (openai_errors.h: InvalidParam → "param" in the error JSON). Limits that
// depend on the model (vocabulary, context, max_draft_tokens, KV budget minimum) are left to the
// replica's own validation (server/request_conversion.h). Unknown fields are ignored, as OpenAI
// does; `null` means "not given" for every optional field.
//
// Parameters (both endpoints unless marked):
//   model                    string; empty/absent = the served model
//   prompt (completions)     string | [string] | [int] | [[int]]; an array of several prompts is
//                            a batch (one GenerateRequest each, ≤ kMaxBatchPrompts); choice index
//                            = prompt_index * n + i
//   messages (chat)          [{role: system|developer|user|assistant, content: string |
//                            [{type:"text", text}], name?}]; "developer" is treated as "system";
//                            assistant content may be null
//   max_tokens               int ≥ 1. Completions default 16 (OpenAI legacy); chat default unset
//                            (the rest of the context). Chat prefers max_completion_tokens.
//   temperature [0,2] (default 1), top_p (0,1] (default 1), n [1,16] (default 1),
//   presence_penalty / frequency_penalty [-2,2], logit_bias {"<token id>": [-100,100]},
//   seed int (negative values wrap to uint64), user string (ignored),
//   stream bool, stream_options.include_usage bool (stream_options only with stream=true),
//   stop string | [string] (≤ 32 — vLLM's leniency over OpenAI's 4; empty strings dropped)
//   logprobs: completions int [0,5] (top N); chat bool, with top_logprobs int [0,20]
//   echo (completions) bool: string prompts only, not with logprobs
//   best_of (completions) must equal n if given; suffix (completions) must be empty
//   response_format (chat) {type: text|json_object|json_schema} → GuidedDecoding (the replica
//                            answers UNIMPLEMENTED/501 until guided decoding exists)
//   vLLM extras: top_k int ≥ -1, min_p [0,1], repetition_penalty > 0, ignore_eos bool,
//     min_tokens int ≥ 0, priority int (lower = sooner; glimpse.v1 priority = -priority),
//     stop_token_ids [int], include_stop_str_in_output bool, skip_special_tokens bool,
//     spaces_between_special_tokens bool, truncate_prompt_tokens int, add_special_tokens bool,
//     add_generation_prompt (chat) bool (default true), cache_salt string
//   glimpse knobs:
//     glimpse_speculation       "off" | "on" | "auto" | {"max_draft_tokens": int ≥ 0,
//                               "drafter": "suffix_tree"|"ngram"}  → SpeculationOptions
//     glimpse_kv_budget_tokens  int ≥ 1     → KvOptions.budget_tokens
//     glimpse_kv_budget_ratio   (0,1]       → KvOptions.budget_ratio (not with the above)
//     glimpse_kv_eviction       "none"|"lookahead"|"snapkv"|"streaming_llm" → KvOptions.eviction
//
// Always set on the GenerateRequest: output.detokenize = true (the gateway needs text, also for
// token-id prompts) and output.final_only = !stream.
//
// Thread-safety: plain functions, no state.
#ifndef GLIMPSE_SERVER_OPENAI_REQUEST_H_
#define GLIMPSE_SERVER_OPENAI_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/glimpse/v1/engine.pb.h"

namespace glimpse::server::openai {

inline constexpr int kMaxN = 16;                 // = server::kMaxN (the engine's limit).
inline constexpr int kMaxStopStrings = 32;       // = server::kMaxStopStrings (vLLM-lenient).
inline constexpr int kMaxCompletionLogprobs = 5;  // OpenAI's legacy completions limit.
inline constexpr int kMaxChatTopLogprobs = 20;    // OpenAI's chat limit.
inline constexpr size_t kMaxBatchPrompts = 64;    // Prompts in one completions batch.
inline constexpr int kDefaultCompletionsMaxTokens = 16;  // OpenAI legacy default.

enum class Endpoint { kCompletions, kChatCompletions };

// One chat message after parsing: text parts concatenated, "developer" already "system".
struct ChatMessageIn {
  std::string role;     // "system", "user" or "assistant".
  std::string content;  // Text parts joined with no separator (as vLLM).
};

// One prompt: text, or token ids used as given.
struct Prompt {
  bool is_tokens = false;
  std::string text;                 // When !is_tokens.
  std::vector<uint32_t> token_ids;  // When is_tokens.

  static Prompt Text(std::string text) { return Prompt{false, std::move(text), {}}; }
  static Prompt Tokens(std::vector<uint32_t> ids) { return Prompt{true, {}, std::move(ids)}; }
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // As sent; empty = the served model.

  // Every option; no input (`text`/`token_ids`) and no request_id set. BuildGenerateRequest adds
  // the prompt.
  glimpse::v1::GenerateRequest request;

  // Completions: one or more prompts (a batch). Chat: empty; the gateway renders `messages` with
  // the chat template and stores the result here (one text prompt) before BuildGenerateRequest.
  std::vector<Prompt> prompts;
  std::vector<ChatMessageIn> messages;  // Chat only.
  bool add_generation_prompt = true;    // Chat only (vLLM extra).

  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage.
  int n = 1;
  bool echo = false;  // Completions only: prefix each choice's text with its (text) prompt.
  // Top-N alternatives per output token, when logprobs were asked for (completions `logprobs`;
  // chat `top_logprobs`, 0 when only `logprobs: true`). Unset: no logprobs.
  std::optional<int> logprobs;

  bool chat() const { return endpoint == Endpoint::kChatCompletions; }
  // Choices in the response: prompts × n (chat: n).
  int num_choices() const;
};

// Parses `body` for `endpoint`. Errors are INVALID_ARGUMENT with the field as InvalidParam's
// payload ("body" for malformed JSON or a non-object).
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body);

// The GenerateRequest for prompt `prompt_index` (< prompts.size()): `request` plus the prompt
// as `text` or `token_ids`, and `request_id` (may be empty: the replica assigns one).
glimpse::v1::GenerateRequest BuildGenerateRequest(const ParsedRequest& parsed,
                                                  size_t prompt_index,
                                                  const std::string& request_id);

}  // namespace glimpse::server::openai

#endif  // GLIMPSE_SERVER_OPENAI_REQUEST_H_
