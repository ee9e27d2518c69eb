#include "server/openai_response.h"

#include <charconv>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include <nlohmann/json.hpp>

namespace glimpse::server::openai {

namespace v1 = ::glimpse::v1;
using json = nlohmann::ordered_json;
using internal::ChoiceState;
using internal::RequestState;
using LogprobList = google::protobuf::RepeatedPtrField<v1::TokenLogprob>;

namespace {

constexpr char kDone[] = "data: [DONE]\n\n";
constexpr double kNegInfLogprob = -9999.0;  // vLLM's stand-in for -inf (JSON has no -inf).

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string SseEvent(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

// `f` as the double with the shortest decimal form that round-trips to `f` (so that -0.1f is
// sent as -0.1, not -0.10000000149011612).
double ShortestDouble(float f) {
  if (std::isnan(f)) return 0.0;  // Never produced by the engine; keep the JSON valid.
  if (std::isinf(f)) return f < 0 ? kNegInfLogprob : 0.0;
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), f);
  if (ec != std::errc()) return f;
  double d = f;
  std::from_chars(buf, end, d);
  return d;
}

int64_t CodePoints(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

json Bytes(const std::string& token_bytes, const std::string& token) {
  const std::string& b = token_bytes.empty() ? token : token_bytes;
  json out = json::array();
  for (unsigned char c : b) out.push_back(static_cast<int>(c));
  return out;
}

json LogprobValue(const v1::TokenLogprob& lp) {
  return lp.has_logprob() ? json(ShortestDouble(lp.logprob())) : json(nullptr);
}

// Completions (legacy) shape. `text_offset` is advanced past the tokens.
json CompletionsLogprobs(const LogprobList& logprobs, int64_t* text_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    tokens.push_back(lp.token());
    token_logprobs.push_back(LogprobValue(lp));
    json alternatives = json::object();
    for (const v1::TopLogprob& t : lp.top()) {
      if (!alternatives.contains(t.token())) alternatives[t.token()] = ShortestDouble(t.logprob());
    }
    if (lp.has_logprob() && !alternatives.contains(lp.token())) {
      alternatives[lp.token()] = ShortestDouble(lp.logprob());
    }
    top.push_back(std::move(alternatives));
    offsets.push_back(*text_offset);
    *text_offset += CodePoints(lp.token());
  }
  json out;
  out["tokens"] = std::move(tokens);
  out["token_logprobs"] = std::move(token_logprobs);
  out["top_logprobs"] = std::move(top);
  out["text_offset"] = std::move(offsets);
  return out;
}

json ChatLogprobs(const LogprobList& logprobs) {
  json content = json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    json entry;
    entry["token"] = lp.token();
    entry["logprob"] = LogprobValue(lp);
    entry["bytes"] = Bytes(lp.token_bytes(), lp.token());
    json top = json::array();
    for (const v1::TopLogprob& t : lp.top()) {
      json alt;
      alt["token"] = t.token();
      alt["logprob"] = ShortestDouble(t.logprob());
      alt["bytes"] = Bytes(t.token_bytes(), t.token());
      top.push_back(std::move(alt));
    }
    entry["top_logprobs"] = std::move(top);
    content.push_back(std::move(entry));
  }
  json out;
  out["content"] = std::move(content);
  return out;
}

json LogprobsJson(const RequestState& state, const LogprobList& logprobs, ChoiceState& choice) {
  if (!state.options.logprobs) return nullptr;
  return state.options.endpoint == Endpoint::kChatCompletions
             ? ChatLogprobs(logprobs)
             : CompletionsLogprobs(logprobs, &choice.text_offset);
}

json StopReason(const v1::GenerateResponse::Complete& c) {
  switch (c.matched_stop_case()) {
    case v1::GenerateResponse::Complete::kStopStr:
      return c.stop_str();
    case v1::GenerateResponse::Complete::kStopTokenId:
      return c.stop_token_id();
    case v1::GenerateResponse::Complete::kEosTokenId:
    case v1::GenerateResponse::Complete::MATCHED_STOP_NOT_SET:
      return nullptr;
  }
  return nullptr;
}

json UsageJson(const RequestState& state) {
  uint64_t prompt = 0, cached = 0, completion = 0;
  for (const internal::PromptState& p : state.prompts) {
    prompt += p.prompt_tokens;
    cached += p.cached_tokens;
  }
  for (const ChoiceState& c : state.choices) completion += c.completion.usage().completion_tokens();
  json usage;
  usage["prompt_tokens"] = prompt;
  usage["completion_tokens"] = completion;
  usage["total_tokens"] = prompt + completion;
  usage["prompt_tokens_details"] = json{{"cached_tokens", cached}};
  return usage;
}

// The envelope shared by every chunk and body: id, object, created, model, choices.
json Envelope(const RequestState& state, const char* object, json choices) {
  json j;
  j["id"] = state.meta.id;
  j["object"] = object;
  j["created"] = state.meta.created;
  j["model"] = state.meta.model;
  j["choices"] = std::move(choices);
  return j;
}

bool IsChat(const RequestState& state) {
  return state.options.endpoint == Endpoint::kChatCompletions;
}

// One chunk event holding one choice.
std::string ChunkEvent(const RequestState& state, json choice) {
  json j = Envelope(state, IsChat(state) ? "chat.completion.chunk" : "text_completion",
                    json::array({std::move(choice)}));
  if (state.options.include_usage) j["usage"] = nullptr;
  return SseEvent(j);
}

std::string RoleEvent(const RequestState& state, int choice_index) {
  json choice;
  choice["index"] = choice_index;
  choice["delta"] = json{{"role", "assistant"}, {"content", ""}};
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = nullptr;
  return ChunkEvent(state, std::move(choice));
}

// Chat: the role delta before a choice's first event. Completions: the echoed prompt, which
// prefixes the choice's first text.
std::string StartChoice(RequestState& state, int choice_index, ChoiceState& choice,
                        std::string* text_prefix) {
  if (choice.started) return "";
  choice.started = true;
  if (IsChat(state)) return RoleEvent(state, choice_index);
  const size_t prompt_index = static_cast<size_t>(choice_index / state.options.n);
  if (prompt_index < state.options.echo_prompts.size()) {
    *text_prefix = state.options.echo_prompts[prompt_index];
    choice.text_offset = CodePoints(*text_prefix);
  }
  return "";
}

json ChoiceJson(const RequestState& state, int choice_index, const std::string& text,
                json logprobs, const ChoiceState* finished) {
  json choice;
  choice["index"] = choice_index;
  if (IsChat(state)) {
    choice["delta"] = text.empty() && finished != nullptr ? json::object()
                                                          : json{{"content", text}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = std::move(logprobs);
  if (finished == nullptr) {
    choice["finish_reason"] = nullptr;
  } else {
    choice["finish_reason"] = FinishReasonString(finished->completion.finish_reason());
    choice["stop_reason"] = StopReason(finished->completion);
  }
  return choice;
}

// Events for new output of one choice (a Chunk, or a final_only Complete's full output).
std::string ContentEvents(RequestState& state, int choice_index, ChoiceState& choice,
                          const std::string& text, const LogprobList& logprobs) {
  std::string prefix;
  std::string events = StartChoice(state, choice_index, choice, &prefix);
  const bool has_logprobs = state.options.logprobs && !logprobs.empty();
  if (prefix.empty() && text.empty() && !has_logprobs) return events;
  json lp = has_logprobs ? LogprobsJson(state, logprobs, choice) : json(nullptr);
  events += ChunkEvent(state, ChoiceJson(state, choice_index, prefix + text, std::move(lp),
                                         nullptr));
  return events;
}

}  // namespace

// ---- shared ---------------------------------------------------------------------------------

ResponseMeta NewResponseMeta(Endpoint endpoint, std::string model) {
  thread_local absl::BitGen gen;
  ResponseMeta meta;
  meta.id = absl::StrCat(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                         absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16),
                         absl::Hex(absl::Uniform<uint64_t>(gen), absl::kZeroPad16));
  meta.created = absl::ToUnixSeconds(absl::Now());
  meta.model = std::move(model);
  return meta;
}

ResponseOptions ResponseOptionsFor(const ParsedRequest& parsed) {
  ResponseOptions options;
  options.endpoint = parsed.endpoint;
  options.n = parsed.n;
  options.num_prompts = parsed.chat() ? 1 : static_cast<int>(parsed.prompts.size());
  options.include_usage = parsed.include_usage;
  options.logprobs = parsed.logprobs.has_value();
  if (parsed.echo && !parsed.chat()) {
    for (const Prompt& p : parsed.prompts) {
      options.echo_prompts.push_back(p.is_tokens ? "" : p.text);
    }
  }
  return options;
}

std::string FinishReasonString(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
    case v1::FINISH_REASON_TIMEOUT:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    case v1::FINISH_REASON_UNSPECIFIED:
    case v1::FinishReason_INT_MIN_SENTINEL_DO_NOT_USE_:
    case v1::FinishReason_INT_MAX_SENTINEL_DO_NOT_USE_:
      break;
  }
  return "stop";  // Never sent by a conforming replica.
}

namespace internal {

RequestState::RequestState(ResponseOptions options_in, ResponseMeta meta_in)
    : options(std::move(options_in)), meta(std::move(meta_in)) {
  if (options.n < 1) options.n = 1;
  if (options.num_prompts < 1) options.num_prompts = 1;
  choices.resize(static_cast<size_t>(options.n) * static_cast<size_t>(options.num_prompts));
  prompts.resize(static_cast<size_t>(options.num_prompts));
}

ChoiceState* RequestState::Choice(int prompt_index, uint32_t index) {
  if (prompt_index < 0 || prompt_index >= options.num_prompts) return nullptr;
  if (index >= static_cast<uint32_t>(options.n)) return nullptr;
  return &choices[static_cast<size_t>(prompt_index) * options.n + index];
}

void RequestState::NotePromptTokens(int prompt_index, uint32_t prompt_tokens,
                                    uint32_t cached_tokens) {
  if (prompt_index < 0 || prompt_index >= options.num_prompts) return;
  PromptState& p = prompts[static_cast<size_t>(prompt_index)];
  if (prompt_tokens > p.prompt_tokens) p.prompt_tokens = prompt_tokens;
  if (cached_tokens > p.cached_tokens) p.cached_tokens = cached_tokens;
}

bool RequestState::AllComplete() const {
  for (const ChoiceState& c : choices) {
    if (!c.complete) return false;
  }
  return true;
}

}  // namespace internal

// ---- StreamTranslator -----------------------------------------------------------------------

StreamTranslator::StreamTranslator(ResponseOptions options, ResponseMeta meta)
    : state_(std::move(options), std::move(meta)) {}

std::string StreamTranslator::Start() {
  if (!IsChat(state_)) return "";
  std::string events;
  for (size_t i = 0; i < state_.choices.size(); ++i) {
    std::string unused;
    events += StartChoice(state_, static_cast<int>(i), state_.choices[i], &unused);
  }
  return events;
}

std::string StreamTranslator::Feed(const v1::GenerateResponse& message, int prompt_index) {
  switch (message.event_case()) {
    case v1::GenerateResponse::kPrompt:
      state_.NotePromptTokens(prompt_index, message.prompt().prompt_tokens(),
                              message.prompt().cached_tokens());
      return "";
    case v1::GenerateResponse::kChunk: {
      const v1::GenerateResponse::Chunk& chunk = message.chunk();
      ChoiceState* choice = state_.Choice(prompt_index, chunk.index());
      if (choice == nullptr || choice->complete) return "";
      const int index = prompt_index * state_.options.n + static_cast<int>(chunk.index());
      return ContentEvents(state_, index, *choice, chunk.text(), chunk.logprobs());
    }
    case v1::GenerateResponse::kComplete: {
      const v1::GenerateResponse::Complete& complete = message.complete();
      ChoiceState* choice = state_.Choice(prompt_index, complete.index());
      if (choice == nullptr || choice->complete) return "";
      const int index = prompt_index * state_.options.n + static_cast<int>(complete.index());
      state_.NotePromptTokens(prompt_index, complete.usage().prompt_tokens(),
                              complete.usage().cached_tokens());
      // final_only output (not used when streaming, but harmless) goes out as content first.
      std::string events =
          ContentEvents(state_, index, *choice, complete.text(), complete.logprobs());
      choice->complete = true;
      choice->completion = complete;
      events += ChunkEvent(state_, ChoiceJson(state_, index, "", nullptr, choice));
      return events;
    }
    case v1::GenerateResponse::EVENT_NOT_SET:
      return "";
  }
  return "";
}

std::string StreamTranslator::Finish() {
  std::string events;
  if (state_.options.include_usage) {
    json j = Envelope(state_, IsChat(state_) ? "chat.completion.chunk" : "text_completion",
                      json::array());
    j["usage"] = UsageJson(state_);
    events += SseEvent(j);
  }
  events += kDone;
  return events;
}

std::string StreamTranslator::ErrorEvents(const OpenAiError& error) {
  return absl::StrCat("data: ", ToJson(error), "\n\n", kDone);
}

// ---- Aggregator -----------------------------------------------------------------------------

Aggregator::Aggregator(ResponseOptions options, ResponseMeta meta)
    : state_(std::move(options), std::move(meta)) {}

void Aggregator::Add(const v1::GenerateResponse& message, int prompt_index) {
  switch (message.event_case()) {
    case v1::GenerateResponse::kPrompt:
      state_.NotePromptTokens(prompt_index, message.prompt().prompt_tokens(),
                              message.prompt().cached_tokens());
      return;
    case v1::GenerateResponse::kChunk: {
      const v1::GenerateResponse::Chunk& chunk = message.chunk();
      ChoiceState* choice = state_.Choice(prompt_index, chunk.index());
      if (choice == nullptr || choice->complete) return;
      choice->text += chunk.text();
      choice->logprobs.insert(choice->logprobs.end(), chunk.logprobs().begin(),
                              chunk.logprobs().end());
      return;
    }
    case v1::GenerateResponse::kComplete: {
      const v1::GenerateResponse::Complete& complete = message.complete();
      ChoiceState* choice = state_.Choice(prompt_index, complete.index());
      if (choice == nullptr || choice->complete) return;
      state_.NotePromptTokens(prompt_index, complete.usage().prompt_tokens(),
                              complete.usage().cached_tokens());
      choice->text += complete.text();  // Non-empty only with final_only.
      choice->logprobs.insert(choice->logprobs.end(), complete.logprobs().begin(),
                              complete.logprobs().end());
      choice->complete = true;
      choice->completion = complete;
      return;
    }
    case v1::GenerateResponse::EVENT_NOT_SET:
      return;
  }
}

std::string Aggregator::Finish() const {
  const bool chat = IsChat(state_);
  json choices = json::array();
  for (size_t i = 0; i < state_.choices.size(); ++i) {
    ChoiceState c = state_.choices[i];  // A copy: text_offset advances while rendering.
    std::string text = c.text;
    const size_t prompt_index = i / static_cast<size_t>(state_.options.n);
    if (!chat && prompt_index < state_.options.echo_prompts.size()) {
      c.text_offset = CodePoints(state_.options.echo_prompts[prompt_index]);
      text = state_.options.echo_prompts[prompt_index] + text;
    }
    LogprobList logprobs(c.logprobs.begin(), c.logprobs.end());
    json choice;
    choice["index"] = i;
    if (chat) {
      choice["message"] = json{{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = LogprobsJson(state_, logprobs, c);
    if (c.complete) {
      choice["finish_reason"] = FinishReasonString(c.completion.finish_reason());
      choice["stop_reason"] = StopReason(c.completion);
    } else {
      choice["finish_reason"] = nullptr;
    }
    choices.push_back(std::move(choice));
  }
  json j = Envelope(state_, chat ? "chat.completion" : "text_completion", std::move(choices));
  j["usage"] = UsageJson(state_);
  return Dump(j);
}

}  // namespace glimpse::server::openai
