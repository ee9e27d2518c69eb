#include "server/request_conversion.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "model/sampling_params.h"

namespace glimpse::server {
namespace {

namespace v1 = ::glimpse::v1;
using scheduler::EngineRequest;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// Checks lo <= v <= hi (finite), naming the field and the range in the error.
absl::Status CheckRange(const std::string& field, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Invalid(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

// (0, hi]: for top_p, repetition_penalty, budget_ratio, stop_threshold.
absl::Status CheckOpenLow(const std::string& field, double v, double hi) {
  if (!std::isfinite(v) || v <= 0 || v > hi) {
    return Invalid(field, absl::StrCat("must be in (0, ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenId(const std::string& field, uint32_t id, int32_t vocab_size) {
  if (id >= static_cast<uint32_t>(vocab_size)) {
    return Invalid(field, absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                       vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::Status ConvertSampling(const v1::SamplingParams& in, int32_t vocab_size,
                             EngineRequest& out) {
  model::SamplingParams& s = out.sampling;
  if (in.has_temperature()) {
    RETURN_IF_ERROR(CheckRange("sampling.temperature", in.temperature(), 0, model::kMaxTemperature));
    s.temperature = in.temperature();
  }
  if (in.has_top_p()) {
    RETURN_IF_ERROR(CheckOpenLow("sampling.top_p", in.top_p(), 1));
    s.top_p = in.top_p();
  }
  if (in.has_top_k()) {
    if (in.top_k() < -1 || in.top_k() > vocab_size) {
      return Invalid("sampling.top_k", absl::StrCat("must be -1 or in [0, ", vocab_size,
                                                    "] (0 and -1 mean off), got ", in.top_k()));
    }
    s.top_k = std::max(0, in.top_k());
  }
  if (in.has_min_p()) {
    RETURN_IF_ERROR(CheckRange("sampling.min_p", in.min_p(), 0, 1));
    s.min_p = in.min_p();
  }
  if (in.has_frequency_penalty()) {
    RETURN_IF_ERROR(CheckRange("sampling.frequency_penalty", in.frequency_penalty(),
                               -model::kMaxAbsFrequencyPenalty, model::kMaxAbsFrequencyPenalty));
    s.frequency_penalty = in.frequency_penalty();
  }
  if (in.has_presence_penalty()) {
    RETURN_IF_ERROR(CheckRange("sampling.presence_penalty", in.presence_penalty(),
                               -model::kMaxAbsPresencePenalty, model::kMaxAbsPresencePenalty));
    s.presence_penalty = in.presence_penalty();
  }
  if (in.has_repetition_penalty()) {
    RETURN_IF_ERROR(CheckOpenLow("sampling.repetition_penalty", in.repetition_penalty(), 2));
    s.repetition_penalty = in.repetition_penalty();
  }
  if (in.has_seed()) s.seed = in.seed();
  if (in.has_n()) {
    if (in.n() < 1 || in.n() > kMaxN) {
      return Invalid("sampling.n", absl::StrCat("must be in [1, ", kMaxN, "], got ", in.n()));
    }
    out.n = static_cast<int32_t>(in.n());
  }
  if (in.logit_bias_size() > static_cast<int>(kMaxLogitBiasEntries)) {
    return Invalid("sampling.logit_bias", absl::StrCat("at most ", kMaxLogitBiasEntries,
                                                       " entries, got ", in.logit_bias_size()));
  }
  for (const auto& [id, bias] : in.logit_bias()) {
    RETURN_IF_ERROR(CheckTokenId("sampling.logit_bias", id, vocab_size));
    RETURN_IF_ERROR(CheckRange(absl::StrCat("sampling.logit_bias[", id, "]"), bias,
                               -model::kMaxAbsLogitBias, model::kMaxAbsLogitBias));
    s.logit_bias.emplace_back(static_cast<int32_t>(id), bias);
  }
  // Deterministic order (proto maps have none), so that equal requests sample alike.
  std::sort(s.logit_bias.begin(), s.logit_bias.end());
  return absl::OkStatus();
}

// Resolves the prompt (text or ids, truncation) into out.prompt_tokens.
absl::Status ConvertPrompt(const v1::GenerateRequest& in, const ServedModelInfo& model,
                           EngineRequest& out) {
  switch (in.input_case()) {
    case v1::GenerateRequest::kText:
      if (in.text().empty()) return Invalid("text", "the prompt is empty");
      // Special-token text ("</s>") is parsed as the token, as HF tokenizers and llama.cpp's
      // server do.
      out.prompt_tokens = model.tokenizer->Encode(
          in.text(), in.has_add_special_tokens() ? in.add_special_tokens() : true,
          /*parse_special=*/true);
      if (out.prompt_tokens.empty()) return Invalid("text", "the prompt has no tokens");
      break;
    case v1::GenerateRequest::kTokenIds:
      if (in.token_ids().ids().empty()) return Invalid("token_ids.ids", "the prompt is empty");
      for (int i = 0; i < in.token_ids().ids_size(); ++i) {
        RETURN_IF_ERROR(CheckTokenId(absl::StrCat("token_ids.ids[", i, "]"),
                                     in.token_ids().ids(i), model.vocab_size));
      }
      out.prompt_tokens.assign(in.token_ids().ids().begin(), in.token_ids().ids().end());
      break;
    case v1::GenerateRequest::INPUT_NOT_SET:
      return Invalid("input", "exactly one of text or token_ids is required");
  }
  const int32_t max_input = model.max_req_input_len();
  if (in.stopping().has_truncate_prompt_tokens()) {
    const int32_t t = in.stopping().truncate_prompt_tokens();
    if (t == 0 || t < -1) {
      return Invalid("stopping.truncate_prompt_tokens",
                     absl::StrCat("must be -1 or >= 1, got ", t));
    }
    const size_t keep = static_cast<size_t>(t == -1 ? max_input : t);
    if (out.prompt_tokens.size() > keep) {
      out.prompt_tokens.erase(out.prompt_tokens.begin(),
                              out.prompt_tokens.end() - static_cast<ptrdiff_t>(keep));
    }
  }
  const int64_t prompt = static_cast<int64_t>(out.prompt_tokens.size());
  if (prompt > max_input) {
    return Invalid("prompt", absl::StrCat("context_length_exceeded: the prompt has ", prompt,
                                          " tokens, more than the ", max_input,
                                          " accepted (context ", model.context_length,
                                          " tokens, KV pool ", model.kv_pool_tokens, " tokens)"));
  }
  return absl::OkStatus();
}

absl::Status ConvertStopping(const v1::StoppingOptions& in, const ServedModelInfo& model,
                             EngineRequest& out) {
  scheduler::StoppingOptions& s = out.stopping;
  const int64_t prompt = static_cast<int64_t>(out.prompt_tokens.size());
  const int64_t room = model.context_length - prompt;
  if (in.has_max_tokens()) {
    if (in.max_tokens() < 1 || in.max_tokens() > room) {
      return Invalid("stopping.max_tokens",
                     absl::StrCat(in.max_tokens() > room ? "context_length_exceeded: " : "",
                                  "must be in [1, ", room, "] (context ", model.context_length,
                                  " − ", prompt, " prompt tokens), got ", in.max_tokens()));
    }
    s.max_tokens = static_cast<int32_t>(in.max_tokens());
  } else {
    s.max_tokens = static_cast<int32_t>(room);  // > 0: the prompt passed max_req_input_len.
  }
  if (in.min_tokens() > static_cast<uint32_t>(s.max_tokens)) {
    return Invalid("stopping.min_tokens", absl::StrCat("must be in [0, max_tokens = ",
                                                       s.max_tokens, "], got ", in.min_tokens()));
  }
  s.min_tokens = static_cast<int32_t>(in.min_tokens());
  if (in.stop_size() > static_cast<int>(kMaxStopStrings)) {
    return Invalid("stopping.stop", absl::StrCat("at most ", kMaxStopStrings,
                                                 " stop strings, got ", in.stop_size()));
  }
  for (int i = 0; i < in.stop_size(); ++i) {
    if (in.stop(i).empty()) return Invalid(absl::StrCat("stopping.stop[", i, "]"), "is empty");
    s.stop_strings.push_back(in.stop(i));
  }
  for (int i = 0; i < in.stop_token_ids_size(); ++i) {
    RETURN_IF_ERROR(CheckTokenId(absl::StrCat("stopping.stop_token_ids[", i, "]"),
                                 in.stop_token_ids(i), model.vocab_size));
    s.stop_token_ids.push_back(static_cast<int32_t>(in.stop_token_ids(i)));
  }
  s.ignore_eos = in.ignore_eos();
  s.include_stop_in_output = in.include_stop_in_output();
  return absl::OkStatus();
}

absl::Status ConvertOutput(const v1::GenerateRequest& in, ConvertedRequest& out) {
  const v1::OutputOptions& o = in.output();
  scheduler::OutputOptions& e = out.engine_request.output;
  ResponseOptions& r = out.response;
  const bool text_input = in.input_case() == v1::GenerateRequest::kText;
  r.final_only = e.final_only = o.final_only();
  r.detokenize = e.detokenize = o.has_detokenize() ? o.detokenize() : text_input;
  e.skip_special_tokens = o.has_skip_special_tokens() ? o.skip_special_tokens() : true;
  // spaces_between_special_tokens: accepted; the SPM detokenizer renders no text for control
  // tokens, so there is nothing to space.
  if (o.has_logprobs()) {
    if (o.logprobs() > static_cast<uint32_t>(model::kMaxNumLogprobs)) {
      return Invalid("output.logprobs", absl::StrCat("must be in [0, ", model::kMaxNumLogprobs,
                                                     "], got ", o.logprobs()));
    }
    e.num_logprobs = static_cast<int32_t>(o.logprobs());
    r.with_logprobs = true;
  }
  if (o.has_prompt_logprobs()) {
    return absl::UnimplementedError("output.prompt_logprobs: prompt logprobs are not supported "
                                    "yet (GetModelInfo capabilities)");
  }
  e.return_prompt_token_ids = o.return_prompt_token_ids();
  r.send_prompt_info = text_input || o.return_prompt_token_ids();
  r.usage_every_chunk = o.usage_every_chunk();
  if (o.has_stream_interval_tokens()) {
    if (o.stream_interval_tokens() < 1 || o.stream_interval_tokens() > (1u << 20)) {
      return Invalid("output.stream_interval_tokens",
                     absl::StrCat("must be >= 1, got ", o.stream_interval_tokens()));
    }
    r.stream_interval_tokens = static_cast<int32_t>(o.stream_interval_tokens());
  }
  return absl::OkStatus();
}

absl::Status ValidateSpeculation(const v1::SpeculationOptions& in) {
  if (!v1::SpecMode_IsValid(in.mode())) {
    return Invalid("speculation.mode", absl::StrCat("unknown value ", in.mode()));
  }
  if (!v1::Drafter_IsValid(in.drafter())) {
    return Invalid("speculation.drafter", absl::StrCat("unknown value ", in.drafter()));
  }
  if (!v1::DraftShape_IsValid(in.shape())) {
    return Invalid("speculation.shape", absl::StrCat("unknown value ", in.shape()));
  }
  if (in.has_max_draft_tokens() && in.max_draft_tokens() > kMaxDraftTokens) {
    return Invalid("speculation.max_draft_tokens",
                   absl::StrCat("must be in [0, ", kMaxDraftTokens, "], got ",
                                in.max_draft_tokens()));
  }
  if (in.has_stop_threshold()) {
    RETURN_IF_ERROR(CheckOpenLow("speculation.stop_threshold", in.stop_threshold(), 1));
  }
  return absl::OkStatus();
}

// Eviction and refresh are validated and ignored (capabilities.eviction.supported = false);
// cache_salt and bypass_prefix_cache are acted on.
absl::Status ConvertKv(const v1::KvOptions& in, EngineRequest& out) {
  if (!v1::EvictionPolicy_IsValid(in.eviction())) {
    return Invalid("kv.eviction", absl::StrCat("unknown value ", in.eviction()));
  }
  if (in.budget_case() == v1::KvOptions::kBudgetTokens &&
      in.budget_tokens() < kMinEvictionBudgetTokens) {
    return Invalid("kv.budget_tokens", absl::StrCat("must be >= ", kMinEvictionBudgetTokens,
                                                    ", got ", in.budget_tokens()));
  }
  if (in.budget_case() == v1::KvOptions::kBudgetRatio) {
    RETURN_IF_ERROR(CheckOpenLow("kv.budget_ratio", in.budget_ratio(), 1));
  }
  if (in.has_observation_window_tokens()) {
    RETURN_IF_ERROR(CheckRange("kv.observation_window_tokens", in.observation_window_tokens(),
                               1, 4096));
  }
  if (in.has_sink_tokens()) RETURN_IF_ERROR(CheckRange("kv.sink_tokens", in.sink_tokens(), 0, 1024));
  if (in.has_recent_tokens()) {
    RETURN_IF_ERROR(CheckRange("kv.recent_tokens", in.recent_tokens(), 0, 65536));
  }
  if (!v1::RefreshMode_IsValid(in.refresh())) {
    return Invalid("kv.refresh", absl::StrCat("unknown value ", in.refresh()));
  }
  if (in.has_refresh_budget_tokens() && in.refresh_budget_tokens() < 1) {
    return Invalid("kv.refresh_budget_tokens", "must be >= 1, got 0");
  }
  if (in.cache_salt().size() > kMaxCacheSaltBytes) {
    return Invalid("kv.cache_salt", absl::StrCat("at most ", kMaxCacheSaltBytes, " bytes, got ",
                                                 in.cache_salt().size()));
  }
  out.kv.cache_salt = in.cache_salt();
  out.kv.bypass_prefix_cache = in.bypass_prefix_cache();
  return absl::OkStatus();
}

absl::Status ConvertScheduling(const v1::SchedulingOptions& in,
                               std::optional<scheduler::Clock::time_point> deadline,
                               EngineRequest& out) {
  out.scheduling.priority = in.priority();
  if (in.has_timeout_ms()) {
    if (in.timeout_ms() < 1) return Invalid("scheduling.timeout_ms", "must be >= 1, got 0");
    out.scheduling.timeout = std::chrono::milliseconds(in.timeout_ms());
  }
  if (in.has_ttft_target_ms() && in.ttft_target_ms() < 1) {
    return Invalid("scheduling.ttft_target_ms", "must be >= 1, got 0");
  }
  if (in.has_tpot_target_ms() && in.tpot_target_ms() < 1) {
    return Invalid("scheduling.tpot_target_ms", "must be >= 1, got 0");
  }
  out.scheduling.deadline = deadline;
  return absl::OkStatus();
}

// Fields checked before the prompt is even tokenized: identity, routing and reserved features.
absl::Status CheckEnvelope(const v1::GenerateRequest& in, const ServedModelInfo& model) {
  if (!in.model().empty() && in.model() != model.served_model_name) {
    return absl::NotFoundError(absl::StrCat("model '", in.model(), "' is not served here; this ",
                                            "server serves '", model.served_model_name, "'"));
  }
  if (in.request_id().size() > kMaxRequestIdBytes) {
    return Invalid("request_id", absl::StrCat("at most ", kMaxRequestIdBytes, " bytes, got ",
                                              in.request_id().size()));
  }
  if (!in.lora_name().empty()) {
    return absl::UnimplementedError("lora_name: LoRA adapters are not supported");
  }
  const v1::GuidedDecoding& g = in.guided();
  if (g.constraint_case() != v1::GuidedDecoding::CONSTRAINT_NOT_SET &&
      !(g.constraint_case() == v1::GuidedDecoding::kJsonObject && !g.json_object())) {
    return absl::UnimplementedError("guided: guided decoding is not supported yet");
  }
  if (in.has_data_parallel_rank() && in.data_parallel_rank() != 0) {
    return Invalid("data_parallel_rank", absl::StrCat("this server has one rank (0), got ",
                                                      in.data_parallel_rank()));
  }
  if (!in.extra().fields().empty()) {
    std::vector<std::string> keys;
    for (const auto& [key, value] : in.extra().fields()) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    return Invalid("extra", absl::StrCat("unknown key '", keys.front(),
                                         "' (no experimental options are defined)"));
  }
  return absl::OkStatus();
}

}  // namespace

int32_t ServedModelInfo::max_req_input_len() const {
  // The prompt needs room for at least one generated token, in the context and in the pool.
  return static_cast<int32_t>(
      std::max<int64_t>(0, std::min<int64_t>(context_length, kv_pool_tokens) - 1));
}

absl::StatusOr<ConvertedRequest> ConvertGenerateRequest(
    const v1::GenerateRequest& request, const ServedModelInfo& model,
    std::optional<scheduler::Clock::time_point> deadline) {
  RETURN_IF_ERROR(CheckEnvelope(request, model));
  ConvertedRequest out;
  EngineRequest& e = out.engine_request;
  e.request_id = request.request_id().empty() ? GenerateRequestId() : request.request_id();
  RETURN_IF_ERROR(ConvertPrompt(request, model, e));
  RETURN_IF_ERROR(ConvertSampling(request.sampling(), model.vocab_size, e));
  RETURN_IF_ERROR(ConvertStopping(request.stopping(), model, e));
  RETURN_IF_ERROR(ConvertOutput(request, out));
  RETURN_IF_ERROR(ValidateSpeculation(request.speculation()));
  RETURN_IF_ERROR(ConvertKv(request.kv(), e));
  RETURN_IF_ERROR(ConvertScheduling(request.scheduling(), deadline, e));
  // Backstop: the model's own checks (same ranges, so this only fires on a bug above).
  RETURN_IF_ERROR(model::ValidateSamplingParams(e.sampling, model.vocab_size));
  out.response.request_id = e.request_id;
  out.response.num_prompt_tokens = static_cast<int32_t>(e.prompt_tokens.size());
  return out;
}

std::string GenerateRequestId() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen ABSL_GUARDED_BY(mu) = new absl::BitGen();
  uint64_t hi, lo;
  {
    absl::MutexLock lock(&mu);
    hi = absl::Uniform<uint64_t>(*gen);
    lo = absl::Uniform<uint64_t>(*gen);
  }
  hi = (hi & ~0xF000ull) | 0x4000ull;                             // Version 4.
  lo = (lo & ~(0xC0ull << 56)) | (0x80ull << 56);                 // Variant 10xx.
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx",
                static_cast<unsigned>(hi >> 32), static_cast<unsigned>((hi >> 16) & 0xFFFF),
                static_cast<unsigned>(hi & 0xFFFF), static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFull));
  return buf;
}

std::string SanitizeUtf8(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= bytes.size();
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (static_cast<unsigned char>(bytes[i + k]) & 0xC0) == 0x80;
    }
    if (ok && len > 1) {
      // Reject overlong encodings, surrogates and code points above U+10FFFF.
      uint32_t cp = c & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (bytes[i + k] & 0x3F);
      const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      out.append(bytes, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

v1::FinishReason ToProtoFinishReason(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case scheduler::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case scheduler::FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
    case scheduler::FinishReason::kTimeout:
      return v1::FINISH_REASON_TIMEOUT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

ResponseBuilder::ResponseBuilder(ResponseOptions options, const model::Tokenizer& tokenizer)
    : options_(std::move(options)), tokenizer_(tokenizer) {}

void ResponseBuilder::Append(const scheduler::RequestOutput& output,
                             std::vector<v1::GenerateResponse>& messages) {
  if (output.prompt.has_value()) {
    cached_tokens_ = output.prompt->cached_tokens;
    if (options_.send_prompt_info) {
      v1::GenerateResponse& m = messages.emplace_back();
      m.set_request_id(options_.request_id);
      v1::GenerateResponse::PromptInfo* p = m.mutable_prompt();
      p->mutable_token_ids()->Add(output.prompt->token_ids.begin(),
                                  output.prompt->token_ids.end());
      p->set_prompt_tokens(static_cast<uint32_t>(output.prompt->prompt_tokens));
      p->set_cached_tokens(static_cast<uint32_t>(output.prompt->cached_tokens));
      p->set_queue_time_us(static_cast<uint64_t>(std::max<int64_t>(0, output.prompt->queue_time_us)));
    }
  }
  for (const scheduler::SequenceDelta& delta : output.deltas) AppendDelta(delta, messages);
}

void ResponseBuilder::AppendDelta(const scheduler::SequenceDelta& delta,
                                  std::vector<v1::GenerateResponse>& messages) {
  if (delta.index < 0) return;
  if (static_cast<size_t>(delta.index) >= pending_.size()) pending_.resize(delta.index + 1);
  if (!options_.final_only) {
    PendingChunk& p = pending_[delta.index];
    p.token_ids.insert(p.token_ids.end(), delta.token_ids.begin(), delta.token_ids.end());
    if (options_.detokenize) p.text += delta.text;
    if (options_.with_logprobs) {
      p.logprobs.insert(p.logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
    }
    p.completion_tokens += static_cast<int32_t>(delta.token_ids.size());
    if (delta.finished ||
        static_cast<int32_t>(p.token_ids.size()) >= options_.stream_interval_tokens) {
      FlushChunk(delta.index, messages);
    }
  }
  if (delta.finished) messages.push_back(Complete(delta));
}

void ResponseBuilder::FlushChunk(int32_t index, std::vector<v1::GenerateResponse>& messages) {
  PendingChunk& p = pending_[index];
  if (p.token_ids.empty() && p.text.empty()) return;
  v1::GenerateResponse& m = messages.emplace_back();
  m.set_request_id(options_.request_id);
  v1::GenerateResponse::Chunk* c = m.mutable_chunk();
  c->set_index(static_cast<uint32_t>(index));
  c->mutable_token_ids()->Add(p.token_ids.begin(), p.token_ids.end());
  c->set_text(std::move(p.text));
  for (const scheduler::TokenLogprob& lp : p.logprobs) FillLogprob(lp, c->add_logprobs());
  if (options_.usage_every_chunk) {
    scheduler::Usage usage;
    usage.prompt_tokens = options_.num_prompt_tokens;
    usage.completion_tokens = p.completion_tokens;
    usage.cached_tokens = cached_tokens_;
    FillUsage(usage, c->mutable_usage());
  }
  p.token_ids.clear();
  p.text.clear();
  p.logprobs.clear();
}

v1::GenerateResponse ResponseBuilder::Complete(const scheduler::SequenceDelta& delta) const {
  v1::GenerateResponse m;
  m.set_request_id(options_.request_id);
  v1::GenerateResponse::Complete* c = m.mutable_complete();
  c->set_index(static_cast<uint32_t>(delta.index));
  c->set_finish_reason(ToProtoFinishReason(delta.finish_reason));
  if (delta.finish_reason == scheduler::FinishReason::kStop) {
    const scheduler::StopMatch& stop = delta.matched_stop;
    switch (stop.kind) {
      case scheduler::StopMatch::Kind::kNone:
        break;
      case scheduler::StopMatch::Kind::kEosToken:
        c->set_eos_token_id(static_cast<uint32_t>(stop.token_id));
        break;
      case scheduler::StopMatch::Kind::kStopToken:
        c->set_stop_token_id(static_cast<uint32_t>(stop.token_id));
        break;
      case scheduler::StopMatch::Kind::kStopString:
        c->set_stop_str(stop.stop_string);
        break;
    }
  }
  if (options_.final_only) {
    // With final_only the engine's finished delta holds the whole output.
    c->mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
    if (options_.detokenize) c->set_text(delta.text);
    if (options_.with_logprobs) {
      for (const scheduler::TokenLogprob& lp : delta.logprobs) FillLogprob(lp, c->add_logprobs());
    }
  }
  FillUsage(delta.usage, c->mutable_usage());
  v1::GenerationStats* s = c->mutable_stats();
  s->set_queue_time_us(static_cast<uint64_t>(std::max<int64_t>(0, delta.stats.queue_time_us)));
  s->set_ttft_us(static_cast<uint64_t>(std::max<int64_t>(0, delta.stats.ttft_us)));
  s->set_e2e_us(static_cast<uint64_t>(std::max<int64_t>(0, delta.stats.e2e_us)));
  s->set_peak_kv_blocks(static_cast<uint32_t>(std::max(0, delta.stats.peak_kv_blocks)));
  s->set_num_preemptions(static_cast<uint32_t>(std::max(0, delta.stats.num_preemptions)));
  // No speculation or eviction yet: the effective plan is "none" (never UNSPECIFIED).
  s->set_drafter(v1::DRAFTER_NONE);
  s->set_eviction(v1::EVICTION_POLICY_NONE);
  if (delta.finish_reason == scheduler::FinishReason::kAbort ||
      delta.finish_reason == scheduler::FinishReason::kTimeout) {
    c->set_message(delta.message);
  }
  return m;
}

void ResponseBuilder::FillUsage(const scheduler::Usage& usage, v1::Usage* out) const {
  out->set_prompt_tokens(static_cast<uint32_t>(usage.prompt_tokens));
  out->set_completion_tokens(static_cast<uint32_t>(usage.completion_tokens));
  out->set_cached_tokens(static_cast<uint32_t>(usage.cached_tokens));
  out->set_total_tokens(static_cast<uint32_t>(usage.prompt_tokens + usage.completion_tokens));
}

void ResponseBuilder::FillLogprob(const scheduler::TokenLogprob& in, v1::TokenLogprob* out) const {
  out->set_token_id(static_cast<uint32_t>(in.token_id));
  out->set_logprob(in.logprob);
  for (size_t i = 0; i < in.top.size(); ++i) {
    if (in.top[i].first == in.token_id) out->set_rank(static_cast<uint32_t>(i + 1));
  }
  if (options_.detokenize) {
    const std::string piece = tokenizer_.TokenToPiece(in.token_id);
    out->set_token(SanitizeUtf8(piece));
    out->set_token_bytes(piece);
  }
  for (const auto& [id, logprob] : in.top) {
    v1::TopLogprob* t = out->add_top();
    t->set_token_id(static_cast<uint32_t>(id));
    t->set_logprob(logprob);
    if (options_.detokenize) {
      const std::string piece = tokenizer_.TokenToPiece(id);
      t->set_token(SanitizeUtf8(piece));
      t->set_token_bytes(piece);
    }
  }
}

}  // namespace glimpse::server
