#include "server/openai_request.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/openai_errors.h"
#include <nlohmann/json.hpp>

namespace glimpse::server::openai {
namespace {

namespace v1 = ::glimpse::v1;
using json = nlohmann::json;

constexpr int64_t kUint32Max = std::numeric_limits<uint32_t>::max();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// The value of `key` in `obj`, or nullptr when absent or null ("not given").
const json* Find(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status TypeError(const std::string& param, const char* expected, const json& got) {
  return InvalidParam(param, absl::StrCat("'", param, "' must be ", expected, ", got ",
                                          std::string(got.type_name()), "."));
}

absl::Status RangeError(const std::string& param, const std::string& range,
                        const std::string& got) {
  return InvalidParam(param,
                      absl::StrCat("'", param, "' must be in ", range, ", got ", got, "."));
}

// An integer in [lo, hi]. Integral floats (16.0) are accepted, as pydantic's lax mode does.
absl::Status ReadInt(const json& v, const std::string& param, int64_t lo, int64_t hi,
                     int64_t* out) {
  const std::string range = absl::StrCat("[", lo, ", ", hi, "]");
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return RangeError(param, range, absl::StrCat(u));
    *out = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    *out = v.get<int64_t>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) return TypeError(param, "an integer", v);
    if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
      return RangeError(param, range, absl::StrCat(d));
    }
    *out = static_cast<int64_t>(d);
  } else {
    return TypeError(param, "an integer", v);
  }
  if (*out < lo || *out > hi) return RangeError(param, range, absl::StrCat(*out));
  return absl::OkStatus();
}

// A number in [lo, hi], or (lo, hi] when `lo_open`.
absl::Status ReadNumber(const json& v, const std::string& param, double lo, double hi,
                        bool lo_open, double* out) {
  if (!v.is_number()) return TypeError(param, "a number", v);
  *out = v.get<double>();
  const bool below = lo_open ? !(*out > lo) : !(*out >= lo);
  if (!std::isfinite(*out) || below || *out > hi) {
    return RangeError(param, absl::StrCat(lo_open ? "(" : "[", lo, ", ", hi, "]"),
                      absl::StrCat(*out));
  }
  return absl::OkStatus();
}

absl::Status OptInt(const json& obj, const char* key, int64_t lo, int64_t hi,
                    std::optional<int64_t>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  int64_t value = 0;
  RETURN_IF_ERROR(ReadInt(*v, key, lo, hi, &value));
  *out = value;
  return absl::OkStatus();
}

absl::Status OptNumber(const json& obj, const char* key, double lo, double hi, bool lo_open,
                       std::optional<double>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  double value = 0;
  RETURN_IF_ERROR(ReadNumber(*v, key, lo, hi, lo_open, &value));
  *out = value;
  return absl::OkStatus();
}

absl::Status OptBool(const json& obj, const char* key, std::optional<bool>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return TypeError(key, "a boolean", *v);
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status OptString(const json& obj, const char* key, std::optional<std::string>* out) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return TypeError(key, "a string", *v);
  *out = v->get<std::string>();
  return absl::OkStatus();
}

// ---- prompt / messages --------------------------------------------------------------------

absl::Status ReadTokenIds(const json& array, const std::string& param,
                          std::vector<uint32_t>* out) {
  if (array.empty()) return InvalidParam(param, absl::StrCat("'", param, "' must not be empty."));
  for (const json& id : array) {
    int64_t value = 0;
    RETURN_IF_ERROR(ReadInt(id, param, 0, kUint32Max, &value));
    out->push_back(static_cast<uint32_t>(value));
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const json& body, std::vector<Prompt>* prompts) {
  constexpr char kForms[] =
      "a string, an array of strings, an array of token ids or an array of token-id arrays";
  const json* p = Find(body, "prompt");
  if (p == nullptr) return InvalidParam("prompt", "'prompt' is required.");
  if (p->is_string()) {
    prompts->push_back(Prompt::Text(p->get<std::string>()));
  } else if (p->is_array()) {
    if (p->empty()) return InvalidParam("prompt", "'prompt' must not be empty.");
    const json& first = p->front();
    if (first.is_number()) {  // One prompt of token ids.
      std::vector<uint32_t> ids;
      RETURN_IF_ERROR(ReadTokenIds(*p, "prompt", &ids));
      prompts->push_back(Prompt::Tokens(std::move(ids)));
    } else {
      for (const json& item : *p) {
        if (item.is_string()) {
          prompts->push_back(Prompt::Text(item.get<std::string>()));
        } else if (item.is_array()) {
          std::vector<uint32_t> ids;
          RETURN_IF_ERROR(ReadTokenIds(item, "prompt", &ids));
          prompts->push_back(Prompt::Tokens(std::move(ids)));
        } else {
          return TypeError("prompt", kForms, item);
        }
      }
    }
  } else {
    return TypeError("prompt", kForms, *p);
  }
  if (prompts->size() > kMaxBatchPrompts) {
    return InvalidParam("prompt", absl::StrCat("'prompt' may hold at most ", kMaxBatchPrompts,
                                               " prompts, got ", prompts->size(), "."));
  }
  for (const Prompt& prompt : *prompts) {
    if (!prompt.is_tokens && prompt.text.empty()) {
      return InvalidParam("prompt", "'prompt' must not be an empty string.");
    }
  }
  return absl::OkStatus();
}

// Content: a string, or an array of {type:"text", text} parts (joined).
absl::Status ParseContent(const json& content, const std::string& param, std::string* out) {
  if (content.is_string()) {
    *out = content.get<std::string>();
    return absl::OkStatus();
  }
  if (!content.is_array()) return TypeError(param, "a string or an array of text parts", content);
  for (size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string part_param = absl::StrCat(param, "[", j, "]");
    if (!part.is_object()) return TypeError(part_param, "an object", part);
    const json* type = Find(part, "type");
    if (type == nullptr || !type->is_string()) {
      return InvalidParam(absl::StrCat(part_param, ".type"),
                          absl::StrCat("'", part_param, ".type' must be the string \"text\"."));
    }
    if (type->get<std::string>() != "text") {
      return InvalidParam(absl::StrCat(part_param, ".type"),
                          absl::StrCat("'", part_param, ".type' \"", type->get<std::string>(),
                                       "\" is not supported; only \"text\" parts are."));
    }
    const json* text = Find(part, "text");
    if (text == nullptr || !text->is_string()) {
      const std::string text_param = absl::StrCat(part_param, ".text");
      return text == nullptr ? InvalidParam(text_param, absl::StrCat("'", text_param,
                                                                     "' is required."))
                             : TypeError(text_param, "a string", *text);
    }
    out->append(text->get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const json& body, std::vector<ChatMessageIn>* messages) {
  const json* m = Find(body, "messages");
  if (m == nullptr) return InvalidParam("messages", "'messages' is required.");
  if (!m->is_array()) return TypeError("messages", "an array", *m);
  if (m->empty()) return InvalidParam("messages", "'messages' must not be empty.");
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!msg.is_object()) return TypeError(param, "an object", msg);
    ChatMessageIn out;
    const json* role = Find(msg, "role");
    const std::string role_param = absl::StrCat(param, ".role");
    if (role == nullptr) return InvalidParam(role_param, absl::StrCat("'", role_param,
                                                                      "' is required."));
    if (!role->is_string()) return TypeError(role_param, "a string", *role);
    out.role = role->get<std::string>();
    if (out.role == "developer") out.role = "system";
    if (out.role != "system" && out.role != "user" && out.role != "assistant") {
      return InvalidParam(role_param,
                          absl::StrCat("'", role_param, "' must be one of \"system\", "
                                       "\"developer\", \"user\", \"assistant\", got \"",
                                       role->get<std::string>(), "\"."));
    }
    const json* content = Find(msg, "content");
    const std::string content_param = absl::StrCat(param, ".content");
    if (content == nullptr) {
      // OpenAI allows a null content only on assistant messages (which then carry tool calls).
      if (out.role != "assistant") {
        return InvalidParam(content_param, absl::StrCat("'", content_param, "' is required."));
      }
    } else {
      RETURN_IF_ERROR(ParseContent(*content, content_param, &out.content));
    }
    messages->push_back(std::move(out));
  }
  return absl::OkStatus();
}

// ---- option groups --------------------------------------------------------------------------

absl::Status ParseStop(const json& body, v1::StoppingOptions* stopping) {
  const json* stop = Find(body, "stop");
  if (stop == nullptr) return absl::OkStatus();
  std::vector<std::string> strings;
  if (stop->is_string()) {
    strings.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    for (const json& s : *stop) {
      if (!s.is_string()) return TypeError("stop", "a string or an array of strings", s);
      strings.push_back(s.get<std::string>());
    }
  } else {
    return TypeError("stop", "a string or an array of strings", *stop);
  }
  if (strings.size() > static_cast<size_t>(kMaxStopStrings)) {
    return InvalidParam("stop", absl::StrCat("'stop' may hold at most ", kMaxStopStrings,
                                             " strings, got ", strings.size(), "."));
  }
  for (std::string& s : strings) {
    if (!s.empty()) stopping->add_stop(std::move(s));  // An empty stop string is meaningless.
  }
  return absl::OkStatus();
}

absl::Status ParseLogitBias(const json& body, v1::SamplingParams* sampling) {
  const json* bias = Find(body, "logit_bias");
  if (bias == nullptr) return absl::OkStatus();
  if (!bias->is_object()) return TypeError("logit_bias", "an object", *bias);
  for (auto it = bias->begin(); it != bias->end(); ++it) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(std::string(it.key()), &id)) {
      return InvalidParam("logit_bias", absl::StrCat("'logit_bias' keys must be token ids, got \"",
                                                     std::string(it.key()), "\"."));
    }
    double value = 0;
    RETURN_IF_ERROR(ReadNumber(it.value(), "logit_bias", -100, 100, false, &value));
    (*sampling->mutable_logit_bias())[id] = static_cast<float>(value);
  }
  return absl::OkStatus();
}

absl::Status ParseSeed(const json& body, v1::SamplingParams* sampling) {
  const json* seed = Find(body, "seed");
  if (seed == nullptr) return absl::OkStatus();
  if (seed->is_number_unsigned()) {
    sampling->set_seed(seed->get<uint64_t>());
  } else if (seed->is_number_integer()) {
    sampling->set_seed(static_cast<uint64_t>(seed->get<int64_t>()));  // Two's complement wrap.
  } else {
    int64_t value = 0;  // Integral floats only.
    RETURN_IF_ERROR(ReadInt(*seed, "seed", std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max(), &value));
    sampling->set_seed(static_cast<uint64_t>(value));
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& body, ParsedRequest* out) {
  v1::SamplingParams* s = out->request.mutable_sampling();
  std::optional<double> d;
  std::optional<int64_t> i;
  RETURN_IF_ERROR(OptNumber(body, "temperature", 0, 2, false, &d));
  if (d) s->set_temperature(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(OptNumber(body, "top_p", 0, 1, /*lo_open=*/true, &d));
  if (d) s->set_top_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(OptNumber(body, "presence_penalty", -2, 2, false, &d));
  if (d) s->set_presence_penalty(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(OptNumber(body, "frequency_penalty", -2, 2, false, &d));
  if (d) s->set_frequency_penalty(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(OptNumber(body, "min_p", 0, 1, false, &d));
  if (d) s->set_min_p(static_cast<float>(*d));
  d.reset();
  RETURN_IF_ERROR(OptNumber(body, "repetition_penalty", 0, std::numeric_limits<double>::max(),
                            /*lo_open=*/true, &d));
  if (d) s->set_repetition_penalty(static_cast<float>(*d));
  RETURN_IF_ERROR(OptInt(body, "top_k", -1, kInt32Max, &i));
  if (i) s->set_top_k(static_cast<int32_t>(*i));
  i.reset();
  RETURN_IF_ERROR(OptInt(body, "n", 1, kMaxN, &i));
  if (i) {
    out->n = static_cast<int>(*i);
    s->set_n(static_cast<uint32_t>(*i));
  }
  RETURN_IF_ERROR(ParseSeed(body, s));
  return ParseLogitBias(body, s);
}

absl::Status ParseStopping(const json& body, ParsedRequest* out) {
  v1::StoppingOptions* st = out->request.mutable_stopping();
  std::optional<int64_t> max_tokens;
  RETURN_IF_ERROR(OptInt(body, "max_tokens", 1, kUint32Max, &max_tokens));
  if (out->chat()) {
    std::optional<int64_t> max_completion_tokens;
    RETURN_IF_ERROR(OptInt(body, "max_completion_tokens", 1, kUint32Max, &max_completion_tokens));
    if (max_completion_tokens) max_tokens = max_completion_tokens;
  } else if (!max_tokens) {
    max_tokens = kDefaultCompletionsMaxTokens;
  }
  if (max_tokens) st->set_max_tokens(static_cast<uint32_t>(*max_tokens));
  std::optional<int64_t> i;
  RETURN_IF_ERROR(OptInt(body, "min_tokens", 0, kUint32Max, &i));
  if (i) st->set_min_tokens(static_cast<uint32_t>(*i));
  i.reset();
  RETURN_IF_ERROR(OptInt(body, "truncate_prompt_tokens", -1, kInt32Max, &i));
  if (i) {
    if (*i == 0) return RangeError("truncate_prompt_tokens", "-1 or [1, 2147483647]", "0");
    st->set_truncate_prompt_tokens(static_cast<int32_t>(*i));
  }
  std::optional<bool> b;
  RETURN_IF_ERROR(OptBool(body, "ignore_eos", &b));
  if (b) st->set_ignore_eos(*b);
  b.reset();
  RETURN_IF_ERROR(OptBool(body, "include_stop_str_in_output", &b));
  if (b) st->set_include_stop_in_output(*b);
  if (const json* ids = Find(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "an array of token ids", *ids);
    for (const json& id : *ids) {
      int64_t value = 0;
      RETURN_IF_ERROR(ReadInt(id, "stop_token_ids", 0, kUint32Max, &value));
      st->add_stop_token_ids(static_cast<uint32_t>(value));
    }
  }
  return ParseStop(body, st);
}

// stream, stream_options, logprobs/top_logprobs, echo, and the output flags.
absl::Status ParseOutput(const json& body, ParsedRequest* out) {
  std::optional<bool> b;
  RETURN_IF_ERROR(OptBool(body, "stream", &b));
  out->stream = b.value_or(false);
  if (const json* so = Find(body, "stream_options"); so != nullptr) {
    if (!so->is_object()) return TypeError("stream_options", "an object", *so);
    if (!out->stream) {
      return InvalidParam("stream_options",
                          "'stream_options' is only allowed when 'stream' is true.");
    }
    if (const json* iu = Find(*so, "include_usage"); iu != nullptr) {
      if (!iu->is_boolean()) return TypeError("stream_options.include_usage", "a boolean", *iu);
      out->include_usage = iu->get<bool>();
    }
  }
  if (out->chat()) {
    std::optional<bool> logprobs;
    std::optional<int64_t> top;
    RETURN_IF_ERROR(OptBool(body, "logprobs", &logprobs));
    RETURN_IF_ERROR(OptInt(body, "top_logprobs", 0, kMaxChatTopLogprobs, &top));
    if (top && !logprobs.value_or(false)) {
      return InvalidParam("top_logprobs", "'top_logprobs' requires 'logprobs' to be true.");
    }
    if (logprobs.value_or(false)) out->logprobs = static_cast<int>(top.value_or(0));
  } else {
    std::optional<int64_t> logprobs;
    RETURN_IF_ERROR(OptInt(body, "logprobs", 0, kMaxCompletionLogprobs, &logprobs));
    if (logprobs) out->logprobs = static_cast<int>(*logprobs);
    b.reset();
    RETURN_IF_ERROR(OptBool(body, "echo", &b));
    out->echo = b.value_or(false);
  }
  v1::OutputOptions* o = out->request.mutable_output();
  o->set_detokenize(true);
  o->set_final_only(!out->stream);
  if (out->logprobs) o->set_logprobs(static_cast<uint32_t>(*out->logprobs));
  b.reset();
  RETURN_IF_ERROR(OptBool(body, "skip_special_tokens", &b));
  if (b) o->set_skip_special_tokens(*b);
  b.reset();
  RETURN_IF_ERROR(OptBool(body, "spaces_between_special_tokens", &b));
  if (b) o->set_spaces_between_special_tokens(*b);
  return absl::OkStatus();
}

absl::Status ParseSpeculation(const json& body, v1::GenerateRequest* request) {
  const json* spec = Find(body, "glimpse_speculation");
  if (spec == nullptr) return absl::OkStatus();
  const std::string param = "glimpse_speculation";
  auto set_mode = [&](const std::string& p, const std::string& mode) -> absl::Status {
    if (mode == "off") {
      request->mutable_speculation()->set_mode(v1::SPEC_MODE_OFF);
    } else if (mode == "on") {
      request->mutable_speculation()->set_mode(v1::SPEC_MODE_ON);
    } else if (mode == "auto") {
      request->mutable_speculation()->set_mode(v1::SPEC_MODE_UNSPECIFIED);
    } else {
      return InvalidParam(p, absl::StrCat("'", p, "' must be \"off\", \"on\" or \"auto\"."));
    }
    return absl::OkStatus();
  };
  if (spec->is_string()) return set_mode(param, spec->get<std::string>());
  if (!spec->is_object()) return TypeError(param, "\"off\", \"on\", \"auto\" or an object", *spec);
  for (auto it = spec->begin(); it != spec->end(); ++it) {
    const std::string key(it.key());
    const std::string p = absl::StrCat(param, ".", key);
    const json& v = it.value();
    if (v.is_null()) continue;
    if (key == "mode") {
      if (!v.is_string()) return TypeError(p, "a string", v);
      RETURN_IF_ERROR(set_mode(p, v.get<std::string>()));
    } else if (key == "max_draft_tokens") {
      int64_t n = 0;
      RETURN_IF_ERROR(ReadInt(v, p, 0, kUint32Max, &n));
      request->mutable_speculation()->set_max_draft_tokens(static_cast<uint32_t>(n));
    } else if (key == "drafter") {
      const std::string d = v.is_string() ? v.get<std::string>() : "";
      if (d == "suffix_tree") {
        request->mutable_speculation()->set_drafter(v1::DRAFTER_SUFFIX_TREE);
      } else if (d == "ngram") {
        request->mutable_speculation()->set_drafter(v1::DRAFTER_NGRAM);
      } else {
        return InvalidParam(p, absl::StrCat("'", p, "' must be \"suffix_tree\" or \"ngram\"."));
      }
    } else {
      // Our own knob: fail loudly on a typo rather than ignore it.
      return InvalidParam(p, absl::StrCat("unknown key '", p, "' (known: mode, "
                                          "max_draft_tokens, drafter)."));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseKv(const json& body, v1::GenerateRequest* request) {
  std::optional<int64_t> budget_tokens;
  std::optional<double> budget_ratio;
  RETURN_IF_ERROR(OptInt(body, "glimpse_kv_budget_tokens", 1, kUint32Max, &budget_tokens));
  RETURN_IF_ERROR(OptNumber(body, "glimpse_kv_budget_ratio", 0, 1, /*lo_open=*/true,
                            &budget_ratio));
  if (budget_tokens && budget_ratio) {
    return InvalidParam("glimpse_kv_budget_ratio", "'glimpse_kv_budget_tokens' and "
                                                   "'glimpse_kv_budget_ratio' are exclusive.");
  }
  if (budget_tokens) request->mutable_kv()->set_budget_tokens(static_cast<uint32_t>(*budget_tokens));
  if (budget_ratio) request->mutable_kv()->set_budget_ratio(static_cast<float>(*budget_ratio));
  std::optional<std::string> eviction;
  RETURN_IF_ERROR(OptString(body, "glimpse_kv_eviction", &eviction));
  if (eviction) {
    v1::EvictionPolicy policy = v1::EVICTION_POLICY_UNSPECIFIED;
    if (*eviction == "none") {
      policy = v1::EVICTION_POLICY_NONE;
    } else if (*eviction == "lookahead") {
      policy = v1::EVICTION_POLICY_LOOKAHEAD;
    } else if (*eviction == "snapkv") {
      policy = v1::EVICTION_POLICY_SNAPKV;
    } else if (*eviction == "streaming_llm") {
      policy = v1::EVICTION_POLICY_STREAMING_LLM;
    } else if (*eviction != "auto") {
      return InvalidParam("glimpse_kv_eviction",
                          "'glimpse_kv_eviction' must be \"auto\", \"none\", \"lookahead\", "
                          "\"snapkv\" or \"streaming_llm\".");
    }
    request->mutable_kv()->set_eviction(policy);
  }
  std::optional<std::string> salt;
  RETURN_IF_ERROR(OptString(body, "cache_salt", &salt));
  if (salt) request->mutable_kv()->set_cache_salt(*salt);
  return absl::OkStatus();
}

absl::Status ParseResponseFormat(const json& body, v1::GenerateRequest* request) {
  const json* rf = Find(body, "response_format");
  if (rf == nullptr) return absl::OkStatus();
  if (!rf->is_object()) return TypeError("response_format", "an object", *rf);
  const json* type = Find(*rf, "type");
  const std::string t = (type != nullptr && type->is_string()) ? type->get<std::string>() : "";
  if (t == "text") return absl::OkStatus();
  if (t == "json_object") {
    request->mutable_guided()->set_json_object(true);
    return absl::OkStatus();
  }
  if (t == "json_schema") {
    const json* js = Find(*rf, "json_schema");
    const json* schema = js != nullptr && js->is_object() ? Find(*js, "schema") : nullptr;
    if (schema == nullptr || !schema->is_object()) {
      return InvalidParam("response_format.json_schema.schema",
                          "'response_format.json_schema.schema' must be an object.");
    }
    request->mutable_guided()->set_json_schema(
        schema->dump(-1, ' ', false, json::error_handler_t::replace));
    return absl::OkStatus();
  }
  return InvalidParam("response_format.type", "'response_format.type' must be \"text\", "
                                              "\"json_object\" or \"json_schema\".");
}

// model, user, priority, add_special_tokens and the endpoint-specific leftovers.
absl::Status ParseMisc(const json& body, ParsedRequest* out) {
  std::optional<std::string> s;
  RETURN_IF_ERROR(OptString(body, "model", &s));
  out->model = s.value_or("");
  out->request.set_model(out->model);
  s.reset();
  RETURN_IF_ERROR(OptString(body, "user", &s));  // Accepted and ignored.
  std::optional<int64_t> priority;
  // Symmetric range so that negation cannot overflow.
  RETURN_IF_ERROR(OptInt(body, "priority", -kInt32Max, kInt32Max, &priority));
  if (priority) out->request.mutable_scheduling()->set_priority(static_cast<int32_t>(-*priority));
  std::optional<bool> b;
  RETURN_IF_ERROR(OptBool(body, "add_special_tokens", &b));
  // Chat: the rendered template carries its own BOS (vLLM's default false).
  if (b || out->chat()) out->request.set_add_special_tokens(b.value_or(false));
  if (out->chat()) {
    b.reset();
    RETURN_IF_ERROR(OptBool(body, "add_generation_prompt", &b));
    out->add_generation_prompt = b.value_or(true);
    return ParseResponseFormat(body, &out->request);
  }
  std::optional<int64_t> best_of;
  RETURN_IF_ERROR(OptInt(body, "best_of", 1, kMaxN, &best_of));
  if (best_of && *best_of != out->n) {
    return InvalidParam("best_of", "'best_of' is not supported unless it equals 'n'.");
  }
  s.reset();
  RETURN_IF_ERROR(OptString(body, "suffix", &s));
  if (s && !s->empty()) return InvalidParam("suffix", "'suffix' is not supported.");
  if (out->echo) {
    if (out->logprobs) {
      return InvalidParam("echo", "'echo' with 'logprobs' needs prompt logprobs, which are "
                                  "not supported.");
    }
    for (const Prompt& p : out->prompts) {
      if (p.is_tokens) {
        return InvalidParam("echo", "'echo' is supported only for string prompts.");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

int ParsedRequest::num_choices() const {
  return chat() ? n : static_cast<int>(prompts.size()) * n;
}

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body) {
  const json root = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return InvalidParam("body", "The request body is not valid JSON.");
  }
  if (!root.is_object()) return TypeError("body", "a JSON object", root);
  ParsedRequest out;
  out.endpoint = endpoint;
  if (out.chat()) {
    RETURN_IF_ERROR(ParseMessages(root, &out.messages));
  } else {
    RETURN_IF_ERROR(ParsePrompt(root, &out.prompts));
  }
  RETURN_IF_ERROR(ParseSampling(root, &out));
  RETURN_IF_ERROR(ParseStopping(root, &out));
  RETURN_IF_ERROR(ParseOutput(root, &out));
  RETURN_IF_ERROR(ParseSpeculation(root, &out.request));
  RETURN_IF_ERROR(ParseKv(root, &out.request));
  RETURN_IF_ERROR(ParseMisc(root, &out));
  return out;
}

glimpse::v1::GenerateRequest BuildGenerateRequest(const ParsedRequest& parsed,
                                                  size_t prompt_index,
                                                  const std::string& request_id) {
  v1::GenerateRequest request = parsed.request;
  request.set_request_id(request_id);
  if (prompt_index < parsed.prompts.size()) {
    const Prompt& prompt = parsed.prompts[prompt_index];
    if (prompt.is_tokens) {
      request.mutable_token_ids()->mutable_ids()->Add(prompt.token_ids.begin(),
                                                      prompt.token_ids.end());
    } else {
      request.set_text(prompt.text);
    }
  }
  return request;
}

}  // namespace glimpse::server::openai
