// OpenAI response bodies built from glimpse.v1 GenerateResponse messages: the SSE stream of
// /v1/completions and /v1/chat/completions (StreamTranslator) and their non-streamed JSON
// (Aggregator).
//
// Wire shapes (OpenAI's; key order as OpenAI sends them):
//   completions  {"id":"cmpl-…","object":"text_completion","created":S,"model":M,
//                 "choices":[{"index","text","logprobs","finish_reason"(,"stop_reason")}],
//                 "usage":{…}}
//   chat         {"id":"chatcmpl-…","object":"chat.completion",…,"choices":[{"index",
//                 "message":{"role":"assistant","content"},"logprobs","finish_reason"
//                 (,"stop_reason")}],"usage":{…}}
//   chat chunk   "object":"chat.completion.chunk", choices[].delta instead of message
//   usage        {"prompt_tokens","completion_tokens","total_tokens",
//                 "prompt_tokens_details":{"cached_tokens"}}
//   logprobs     completions {"tokens","token_logprobs","top_logprobs":[{tok:lp}],"text_offset"}
//                (top_logprobs dicts hold the top N plus the sampled token, as vLLM);
//                chat {"content":[{"token","logprob","bytes","top_logprobs":[{"token","logprob",
//                "bytes"}]}]}. A logprob of -inf is sent as -9999.0 (vLLM).
//
// Streaming rules: each event is "data: <json>\n\n". Chat: every choice's first event is the
// role delta {"role":"assistant","content":""}. Content events carry "finish_reason": null; each
// choice ends with its own event whose delta is {} (chat) or text "" (completions) and whose
// finish_reason is set (the Complete of that index; the replica sends it after the last Chunk).
// With include_usage every chunk has "usage": null and Finish() adds a chunk with "choices": []
// and the usage; Finish() always ends with "data: [DONE]\n\n". Chunks with no text and no
// logprobs (text held back by the replica) produce no event.
//
// finish_reason: STOP → "stop", LENGTH → "length", TIMEOUT (glimpse's soft timeout_ms) →
// "length" (output truncated by a limit, as clients expect), ABORT → "abort" (vLLM's value;
// OpenAI has none). "stop_reason" (vLLM extension) appears with finish_reason: the matched stop
// string, the stop token id, or null (EOS / not a stop).
//
// Batched prompts (completions): feed each prompt's stream with its prompt_index; choice index =
// prompt_index * n + index. Usage: prompt tokens summed over prompts, completion tokens over
// choices.
//
// Thread-safety: none; one object per HTTP request, used by one thread at a time.
#ifndef GLIMPSE_SERVER_OPENAI_RESPONSE_H_
#define GLIMPSE_SERVER_OPENAI_RESPONSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "proto/glimpse/v1/engine.pb.h"
#include "server/openai_errors.h"
#include "server/openai_request.h"

namespace glimpse::server::openai {

// What identifies one response.
struct ResponseMeta {
  std::string id;        // "cmpl-<32 hex>" / "chatcmpl-<32 hex>".
  int64_t created = 0;   // Unix seconds.
  std::string model;     // The model name to report (the served model's name).
};

// A fresh id for `endpoint`, created = now. Thread-safe.
ResponseMeta NewResponseMeta(Endpoint endpoint, std::string model);

// How to render the response (read from the request).
struct ResponseOptions {
  Endpoint endpoint = Endpoint::kCompletions;
  int n = 1;
  int num_prompts = 1;
  bool include_usage = false;  // Streaming only.
  bool logprobs = false;
  std::vector<std::string> echo_prompts;  // Per prompt index when echo; empty otherwise.
};
ResponseOptions ResponseOptionsFor(const ParsedRequest& parsed);

// OpenAI's finish_reason for a glimpse.v1 FinishReason (see the table above).
std::string FinishReasonString(glimpse::v1::FinishReason reason);

namespace internal {
// Per-choice progress.
struct ChoiceState {
  bool started = false;   // Role delta (chat) / echo text (completions) sent.
  bool complete = false;  // Its Complete was seen.
  std::string text;                                   // Aggregator: the whole output text.
  std::vector<glimpse::v1::TokenLogprob> logprobs;    // Aggregator: every token's logprob.
  int64_t text_offset = 0;  // Completions logprobs: code points of text so far (echo included).
  glimpse::v1::GenerateResponse::Complete completion;  // Valid once `complete`.
};
struct PromptState {
  uint32_t prompt_tokens = 0;
  uint32_t cached_tokens = 0;
};
// Bookkeeping shared by StreamTranslator and Aggregator.
struct RequestState {
  ResponseOptions options;
  ResponseMeta meta;
  std::vector<ChoiceState> choices;  // num_prompts × n.
  std::vector<PromptState> prompts;  // num_prompts.
  RequestState(ResponseOptions options, ResponseMeta meta);
  // The choice for (prompt_index, index), or nullptr when out of range (a misbehaving replica).
  ChoiceState* Choice(int prompt_index, uint32_t index);
  void NotePromptTokens(int prompt_index, uint32_t prompt_tokens, uint32_t cached_tokens);
  bool AllComplete() const;
};
}  // namespace internal

// Translates a request's GenerateResponse stream(s) into SSE events.
class StreamTranslator {
 public:
  StreamTranslator(ResponseOptions options, ResponseMeta meta);

  // Events to send right after the headers: chat's role delta for every choice (empty for
  // completions). Optional: Feed sends a choice's role delta before its first content anyway.
  std::string Start();
  // Events for one message of prompt `prompt_index`'s stream (possibly empty).
  std::string Feed(const glimpse::v1::GenerateResponse& message, int prompt_index = 0);
  // The usage chunk (with include_usage) and "data: [DONE]\n\n". Call once, after every stream
  // ended OK.
  std::string Finish();
  // True once every choice has seen its Complete.
  bool AllComplete() const { return state_.AllComplete(); }

  // An error after the stream started (the status is already 200): "data: {"error":{…}}\n\n"
  // followed by "data: [DONE]\n\n", as vLLM does; OpenAI SDKs raise it as an APIError.
  static std::string ErrorEvents(const OpenAiError& error);

 private:
  internal::RequestState state_;
};

// Accumulates a request's GenerateResponse messages (streamed chunks or final_only Completes)
// into the non-streamed response body.
class Aggregator {
 public:
  Aggregator(ResponseOptions options, ResponseMeta meta);

  void Add(const glimpse::v1::GenerateResponse& message, int prompt_index = 0);
  // True once every choice has seen its Complete.
  bool AllComplete() const { return state_.AllComplete(); }
  // The JSON body. Choices without a Complete have "finish_reason": null.
  std::string Finish() const;

 private:
  internal::RequestState state_;
};

}  // namespace glimpse::server::openai

#endif  // GLIMPSE_SERVER_OPENAI_RESPONSE_H_
