// Tests of the glimpse.v1 wire contract: every option group survives a serialize/parse round
// trip, `optional` scalars keep "unset" apart from "set to zero", enums follow the *_UNSPECIFIED
// convention, and the service and router-facing field numbers are what the docs promise.

#include <cctype>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "proto/glimpse/v1/engine.pb.h"

namespace glimpse::v1 {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FileDescriptor;
using ::google::protobuf::MethodDescriptor;
using ::google::protobuf::ServiceDescriptor;
using ::google::protobuf::util::MessageDifferencer;

template <typename Message>
Message RoundTrip(const Message& in) {
  std::string wire;
  EXPECT_TRUE(in.SerializeToString(&wire));
  Message out;
  EXPECT_TRUE(out.ParseFromString(wire));
  return out;
}

// A request with every option group and most fields set to non-default values.
GenerateRequest FullRequest() {
  GenerateRequest r;
  r.set_request_id("req-1");
  r.set_model("tiny");
  r.mutable_token_ids()->add_ids(1);
  r.mutable_token_ids()->add_ids(15043);
  r.set_add_special_tokens(false);

  SamplingParams* s = r.mutable_sampling();
  s->set_temperature(0.7f);
  s->set_top_p(0.9f);
  s->set_top_k(40);
  s->set_min_p(0.05f);
  s->set_frequency_penalty(0.5f);
  s->set_presence_penalty(-0.5f);
  s->set_repetition_penalty(1.1f);
  s->set_seed(0xFFFFFFFFFFFFull);
  s->set_n(3);
  (*s->mutable_logit_bias())[13] = -100.0f;

  StoppingOptions* st = r.mutable_stopping();
  st->set_max_tokens(64);
  st->set_min_tokens(2);
  st->add_stop("\n\n");
  st->add_stop_token_ids(2);
  st->set_ignore_eos(true);
  st->set_include_stop_in_output(true);
  st->set_truncate_prompt_tokens(-1);

  OutputOptions* o = r.mutable_output();
  o->set_final_only(true);
  o->set_detokenize(true);
  o->set_skip_special_tokens(false);
  o->set_spaces_between_special_tokens(false);
  o->set_logprobs(5);
  o->set_prompt_logprobs(1);
  o->set_prompt_logprob_start(3);
  o->set_return_prompt_token_ids(true);
  o->set_usage_every_chunk(true);
  o->set_stream_interval_tokens(4);

  r.mutable_guided()->set_regex("[0-9]+");

  SpeculationOptions* sp = r.mutable_speculation();
  sp->set_mode(SPEC_MODE_ON);
  sp->set_max_draft_tokens(8);
  sp->set_drafter(DRAFTER_SUFFIX_TREE);
  sp->set_shape(DRAFT_SHAPE_TREE);
  sp->set_stop_threshold(0.3f);

  KvOptions* kv = r.mutable_kv();
  kv->set_eviction(EVICTION_POLICY_SNAPKV);
  kv->set_budget_ratio(0.25f);
  kv->set_observation_window_tokens(32);
  kv->set_sink_tokens(4);
  kv->set_recent_tokens(128);
  kv->set_refresh(REFRESH_MODE_ALWAYS);
  kv->set_refresh_budget_tokens(256);
  kv->set_cache_salt("tenant-a");
  kv->set_bypass_prefix_cache(true);

  SchedulingOptions* sc = r.mutable_scheduling();
  sc->set_priority(-1);
  sc->set_timeout_ms(30000);
  sc->set_ttft_target_ms(200);
  sc->set_tpot_target_ms(50);

  r.set_lora_name("");
  r.set_data_parallel_rank(0);
  (*r.mutable_extra()->mutable_fields())["x_probe"].set_number_value(1.0);
  return r;
}

TEST(GenerateRequestTest, EveryOptionGroupSurvivesRoundTrip) {
  const GenerateRequest in = FullRequest();
  const GenerateRequest out = RoundTrip(in);
  EXPECT_TRUE(MessageDifferencer::Equals(in, out)) << out.DebugString();

  // Spot checks, one per group, so a failure names the group.
  EXPECT_EQ(out.input_case(), GenerateRequest::kTokenIds);
  EXPECT_EQ(out.token_ids().ids_size(), 2);
  EXPECT_FLOAT_EQ(out.sampling().temperature(), 0.7f);
  EXPECT_EQ(out.sampling().seed(), 0xFFFFFFFFFFFFull);
  EXPECT_EQ(out.sampling().logit_bias().at(13), -100.0f);
  EXPECT_EQ(out.stopping().truncate_prompt_tokens(), -1);
  EXPECT_EQ(out.output().stream_interval_tokens(), 4u);
  EXPECT_EQ(out.guided().constraint_case(), GuidedDecoding::kRegex);
  EXPECT_EQ(out.speculation().drafter(), DRAFTER_SUFFIX_TREE);
  EXPECT_EQ(out.kv().budget_case(), KvOptions::kBudgetRatio);
  EXPECT_EQ(out.scheduling().priority(), -1);
  EXPECT_TRUE(out.has_data_parallel_rank());
  EXPECT_EQ(out.extra().fields().at("x_probe").number_value(), 1.0);
}

TEST(GenerateRequestTest, UnsetOptionalScalarsStayUnsetAfterRoundTrip) {
  GenerateRequest in;
  in.set_text("Hello");
  // Groups present but empty: every optional scalar inside must read as unset.
  in.mutable_sampling();
  in.mutable_stopping();
  in.mutable_output();
  in.mutable_speculation();
  in.mutable_kv();
  in.mutable_scheduling();
  const GenerateRequest out = RoundTrip(in);

  EXPECT_FALSE(out.has_add_special_tokens());
  EXPECT_FALSE(out.has_data_parallel_rank());
  const SamplingParams& s = out.sampling();
  EXPECT_FALSE(s.has_temperature());
  EXPECT_FALSE(s.has_top_p());
  EXPECT_FALSE(s.has_top_k());
  EXPECT_FALSE(s.has_min_p());
  EXPECT_FALSE(s.has_frequency_penalty());
  EXPECT_FALSE(s.has_presence_penalty());
  EXPECT_FALSE(s.has_repetition_penalty());
  EXPECT_FALSE(s.has_seed());
  EXPECT_FALSE(s.has_n());
  EXPECT_FALSE(out.stopping().has_max_tokens());
  EXPECT_FALSE(out.stopping().has_truncate_prompt_tokens());
  const OutputOptions& o = out.output();
  EXPECT_FALSE(o.has_detokenize());
  EXPECT_FALSE(o.has_skip_special_tokens());
  EXPECT_FALSE(o.has_spaces_between_special_tokens());
  EXPECT_FALSE(o.has_logprobs());
  EXPECT_FALSE(o.has_prompt_logprobs());
  EXPECT_FALSE(o.has_stream_interval_tokens());
  EXPECT_FALSE(out.speculation().has_max_draft_tokens());
  EXPECT_FALSE(out.speculation().has_stop_threshold());
  EXPECT_EQ(out.speculation().mode(), SPEC_MODE_UNSPECIFIED);
  const KvOptions& kv = out.kv();
  EXPECT_EQ(kv.budget_case(), KvOptions::BUDGET_NOT_SET);
  EXPECT_FALSE(kv.has_observation_window_tokens());
  EXPECT_FALSE(kv.has_sink_tokens());
  EXPECT_FALSE(kv.has_recent_tokens());
  EXPECT_FALSE(kv.has_refresh_budget_tokens());
  EXPECT_FALSE(out.scheduling().has_timeout_ms());
  EXPECT_FALSE(out.scheduling().has_ttft_target_ms());
  EXPECT_FALSE(out.scheduling().has_tpot_target_ms());
}

TEST(GenerateRequestTest, OptionalScalarsSetToZeroArePresentAfterRoundTrip) {
  // Zero is a meaningful value for each of these (greedy, logprob of the sampled token only,
  // detokenize off, ...), so it must not collapse into "unset" on the wire.
  GenerateRequest in;
  in.set_text("Hello");
  in.set_add_special_tokens(false);
  in.set_data_parallel_rank(0);
  SamplingParams* s = in.mutable_sampling();
  s->set_temperature(0.0f);
  s->set_top_p(0.0f);
  s->set_top_k(0);
  s->set_min_p(0.0f);
  s->set_frequency_penalty(0.0f);
  s->set_presence_penalty(0.0f);
  s->set_repetition_penalty(0.0f);
  s->set_seed(0);
  s->set_n(0);
  in.mutable_stopping()->set_max_tokens(0);
  in.mutable_stopping()->set_truncate_prompt_tokens(0);
  OutputOptions* o = in.mutable_output();
  o->set_detokenize(false);
  o->set_skip_special_tokens(false);
  o->set_spaces_between_special_tokens(false);
  o->set_logprobs(0);
  o->set_prompt_logprobs(0);
  o->set_stream_interval_tokens(0);
  in.mutable_speculation()->set_max_draft_tokens(0);
  in.mutable_speculation()->set_stop_threshold(0.0f);
  KvOptions* kv = in.mutable_kv();
  kv->set_budget_tokens(0);
  kv->set_observation_window_tokens(0);
  kv->set_sink_tokens(0);
  kv->set_recent_tokens(0);
  kv->set_refresh_budget_tokens(0);
  in.mutable_scheduling()->set_timeout_ms(0);
  in.mutable_scheduling()->set_ttft_target_ms(0);
  in.mutable_scheduling()->set_tpot_target_ms(0);

  const GenerateRequest out = RoundTrip(in);

  EXPECT_TRUE(out.has_add_special_tokens());
  EXPECT_FALSE(out.add_special_tokens());
  EXPECT_TRUE(out.has_data_parallel_rank());
  const SamplingParams& so = out.sampling();
  EXPECT_TRUE(so.has_temperature());
  EXPECT_EQ(so.temperature(), 0.0f);
  EXPECT_TRUE(so.has_top_p());
  EXPECT_TRUE(so.has_top_k());
  EXPECT_TRUE(so.has_min_p());
  EXPECT_TRUE(so.has_frequency_penalty());
  EXPECT_TRUE(so.has_presence_penalty());
  EXPECT_TRUE(so.has_repetition_penalty());
  EXPECT_TRUE(so.has_seed());
  EXPECT_TRUE(so.has_n());
  EXPECT_TRUE(out.stopping().has_max_tokens());
  EXPECT_TRUE(out.stopping().has_truncate_prompt_tokens());
  const OutputOptions& oo = out.output();
  EXPECT_TRUE(oo.has_detokenize());
  EXPECT_FALSE(oo.detokenize());
  EXPECT_TRUE(oo.has_skip_special_tokens());
  EXPECT_TRUE(oo.has_spaces_between_special_tokens());
  EXPECT_TRUE(oo.has_logprobs());
  EXPECT_EQ(oo.logprobs(), 0u);
  EXPECT_TRUE(oo.has_prompt_logprobs());
  EXPECT_TRUE(oo.has_stream_interval_tokens());
  EXPECT_TRUE(out.speculation().has_max_draft_tokens());
  EXPECT_TRUE(out.speculation().has_stop_threshold());
  EXPECT_EQ(out.kv().budget_case(), KvOptions::kBudgetTokens);
  EXPECT_TRUE(out.kv().has_observation_window_tokens());
  EXPECT_TRUE(out.kv().has_sink_tokens());
  EXPECT_TRUE(out.kv().has_recent_tokens());
  EXPECT_TRUE(out.kv().has_refresh_budget_tokens());
  EXPECT_TRUE(out.scheduling().has_timeout_ms());
  EXPECT_TRUE(out.scheduling().has_ttft_target_ms());
  EXPECT_TRUE(out.scheduling().has_tpot_target_ms());

  // And the two encodings differ on the wire.
  GenerateRequest unset;
  unset.set_text("Hello");
  unset.mutable_sampling();
  EXPECT_NE(RoundTrip(unset).SerializeAsString(), out.SerializeAsString());
}

TEST(GenerateRequestTest, ScalarsWithNonZeroDefaultsTrackPresence) {
  // The descriptor view of the same rule, so that a field turned back into a bare proto3 scalar
  // fails here even if nobody wrote a has_ check for it.
  const std::vector<std::pair<const Descriptor*, std::vector<std::string>>> must_track = {
      {GenerateRequest::descriptor(), {"add_special_tokens", "data_parallel_rank"}},
      {SamplingParams::descriptor(),
       {"temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
        "repetition_penalty", "seed", "n"}},
      {StoppingOptions::descriptor(), {"max_tokens", "truncate_prompt_tokens"}},
      {OutputOptions::descriptor(),
       {"detokenize", "skip_special_tokens", "spaces_between_special_tokens", "logprobs",
        "prompt_logprobs", "stream_interval_tokens"}},
      {SpeculationOptions::descriptor(), {"max_draft_tokens", "stop_threshold"}},
      {KvOptions::descriptor(),
       {"budget_tokens", "budget_ratio", "observation_window_tokens", "sink_tokens",
        "recent_tokens", "refresh_budget_tokens"}},
      {SchedulingOptions::descriptor(), {"timeout_ms", "ttft_target_ms", "tpot_target_ms"}},
      {TokenizeRequest::descriptor(), {"add_special_tokens"}},
      {ChatInput::descriptor(), {"add_generation_prompt", "chat_template"}},
      {DetokenizeRequest::descriptor(), {"skip_special_tokens"}},
      {TokenLogprob::descriptor(), {"logprob", "rank"}},
      {GetModelInfoResponse::descriptor(), {"bos_token_id", "pad_token_id"}},
      {GetLoadsRequest::descriptor(), {"dp_rank"}},
  };
  for (const auto& [message, names] : must_track) {
    for (const std::string& name : names) {
      const FieldDescriptor* field = message->FindFieldByName(name);
      ASSERT_NE(field, nullptr) << message->full_name() << "." << name;
      EXPECT_TRUE(field->has_presence()) << field->full_name() << " must be `optional`";
    }
  }
}

TEST(GenerateRequestTest, InputIsEitherTextOrTokenIds) {
  GenerateRequest r;
  EXPECT_EQ(r.input_case(), GenerateRequest::INPUT_NOT_SET);
  r.set_text("Hello");
  EXPECT_EQ(RoundTrip(r).input_case(), GenerateRequest::kText);
  r.mutable_token_ids()->add_ids(7);
  const GenerateRequest out = RoundTrip(r);
  EXPECT_EQ(out.input_case(), GenerateRequest::kTokenIds);
  EXPECT_TRUE(out.text().empty());
}

TEST(GenerateResponseTest, CarriesOneEventAndOneMatchedStop) {
  GenerateResponse r;
  r.set_request_id("req-1");
  GenerateResponse::Chunk* chunk = r.mutable_chunk();
  chunk->set_index(1);
  chunk->add_token_ids(42);
  chunk->set_text(" world");
  TokenLogprob* lp = chunk->add_logprobs();
  lp->set_token_id(42);
  lp->set_logprob(-0.25f);
  lp->set_rank(1);
  lp->set_token_bytes(std::string("\xE2", 1));
  TopLogprob* top = lp->add_top();
  top->set_token_id(43);
  top->set_logprob(-1.5f);
  chunk->mutable_usage()->set_completion_tokens(1);

  GenerateResponse out = RoundTrip(r);
  ASSERT_EQ(out.event_case(), GenerateResponse::kChunk);
  EXPECT_EQ(out.request_id(), "req-1");
  EXPECT_EQ(out.chunk().index(), 1u);
  EXPECT_EQ(out.chunk().logprobs(0).top(0).token_id(), 43u);
  EXPECT_EQ(out.chunk().logprobs(0).token_bytes(), std::string("\xE2", 1));

  GenerateResponse::Complete* done = r.mutable_complete();  // replaces the chunk
  done->set_index(1);
  done->set_finish_reason(FINISH_REASON_STOP);
  done->set_stop_str("\n\n");
  done->set_eos_token_id(2);  // replaces the stop string
  done->mutable_usage()->set_prompt_tokens(5);
  done->mutable_stats()->set_draft_tokens_accepted(3);
  out = RoundTrip(r);
  ASSERT_EQ(out.event_case(), GenerateResponse::kComplete);
  EXPECT_EQ(out.complete().finish_reason(), FINISH_REASON_STOP);
  EXPECT_EQ(out.complete().matched_stop_case(), GenerateResponse::Complete::kEosTokenId);
  EXPECT_EQ(out.complete().eos_token_id(), 2u);
  EXPECT_EQ(out.complete().stats().draft_tokens_accepted(), 3u);

  // Position 0 of the prompt has no logprob: unset, not 0 (which would mean probability 1).
  GenerateResponse::PromptInfo* prompt = r.mutable_prompt();
  prompt->add_prompt_logprobs()->set_token_id(1);
  prompt->add_prompt_logprobs()->set_logprob(0.0f);
  out = RoundTrip(r);
  ASSERT_EQ(out.event_case(), GenerateResponse::kPrompt);
  EXPECT_FALSE(out.prompt().prompt_logprobs(0).has_logprob());
  EXPECT_TRUE(out.prompt().prompt_logprobs(1).has_logprob());
}

// Calls f on every enum declared inside `message`, at any depth.
void ForEachEnum(const Descriptor* message, const std::function<void(const EnumDescriptor*)>& f) {
  for (int i = 0; i < message->enum_type_count(); ++i) f(message->enum_type(i));
  for (int i = 0; i < message->nested_type_count(); ++i) ForEachEnum(message->nested_type(i), f);
}

TEST(ConventionsTest, EveryEnumStartsWithUnspecifiedZero) {
  const FileDescriptor* file = GenerateRequest::descriptor()->file();
  int num_enums = 0;
  auto check = [&num_enums](const EnumDescriptor* e) {
    ++num_enums;
    const auto* zero = e->FindValueByNumber(0);
    ASSERT_NE(zero, nullptr) << e->full_name();
    // SpecMode -> SPEC_MODE_UNSPECIFIED.
    std::string prefix;
    for (char c : e->name()) {
      if (std::isupper(static_cast<unsigned char>(c)) && !prefix.empty()) prefix += '_';
      prefix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    EXPECT_EQ(zero->name(), prefix + "_UNSPECIFIED") << e->full_name();
    for (int i = 0; i < e->value_count(); ++i) {
      EXPECT_EQ(e->value(i)->name().rfind(prefix + "_", 0), 0u) << e->value(i)->full_name();
    }
  };
  for (int i = 0; i < file->enum_type_count(); ++i) check(file->enum_type(i));
  for (int i = 0; i < file->message_type_count(); ++i) ForEachEnum(file->message_type(i), check);
  EXPECT_GE(num_enums, 7);
}

TEST(ServiceTest, EngineHasExactlyTheDocumentedRpcs) {
  const ServiceDescriptor* service =
      GenerateRequest::descriptor()->file()->pool()->FindServiceByName("glimpse.v1.Engine");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(std::string(Engine::service_full_name()), "glimpse.v1.Engine");
  std::set<std::string> names;
  for (int i = 0; i < service->method_count(); ++i) {
    const MethodDescriptor* m = service->method(i);
    names.insert(m->name());
    EXPECT_FALSE(m->client_streaming()) << m->name();
    EXPECT_EQ(m->server_streaming(), m->name() == "Generate") << m->name();
  }
  EXPECT_EQ(names, (std::set<std::string>{"Generate", "Tokenize", "Detokenize", "Abort",
                                          "HealthCheck", "GetModelInfo", "GetServerInfo",
                                          "GetLoads"}));
}

TEST(ServiceTest, SchedulerLoadKeepsSglangFieldNumbers) {
  // Routers (SMG least_load / cache_aware) read these by number.
  const Descriptor* d = SchedulerLoad::descriptor();
  const std::vector<std::pair<std::string, int>> expected = {
      {"dp_rank", 1},          {"num_running_reqs", 2},
      {"num_waiting_reqs", 3}, {"num_total_reqs", 4},
      {"num_used_tokens", 5},  {"max_total_num_tokens", 6},
      {"token_usage", 7},      {"gen_throughput", 8},
      {"cache_hit_rate", 9},   {"utilization", 10},
      {"max_running_requests", 11}, {"num_waiting_uncached_tokens", 17},
  };
  for (const auto& [name, number] : expected) {
    const FieldDescriptor* f = d->FindFieldByName(name);
    ASSERT_NE(f, nullptr) << name;
    EXPECT_EQ(f->number(), number) << name;
  }
}

}  // namespace
}  // namespace glimpse::v1
