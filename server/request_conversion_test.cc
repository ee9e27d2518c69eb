// GenerateRequest validation and conversion, and RequestOutput → GenerateResponse mapping, on a
// hand-made vocabulary (no model file, no server).
#include "server/request_conversion.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

namespace v1 = ::glimpse::v1;
using scheduler::FinishReason;
using scheduler::RequestOutput;
using scheduler::SequenceDelta;

class RequestConversionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::TokenizerVocab vocab;
    // 0 unk, 1 BOS, 2 EOS, 3 "▁hello", 4 "▁world", 5 "<0xE2>", 6 "h", then the merge chains
    // SPM needs to build the two words.
    const std::string sp = "\xE2\x96\x81";
    vocab.pieces = {"<unk>",      "<s>",       "</s>",       sp + "hello", sp + "world",
                    "<0xE2>",     "h",         sp + "h",     sp + "he",    sp + "hel",
                    sp + "hell",  sp + "w",    sp + "wo",    sp + "wor",   sp + "worl"};
    vocab.types.assign(vocab.pieces.size(), model::TokenType::kNormal);
    vocab.types[0] = model::TokenType::kUnknown;
    vocab.types[1] = vocab.types[2] = model::TokenType::kControl;
    vocab.types[5] = model::TokenType::kByte;
    auto t = model::Tokenizer::FromVocab(std::move(vocab));
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
    info_.served_model_name = "tiny";
    info_.tokenizer = tokenizer_.get();
    info_.vocab_size = tokenizer_->vocab_size();
    info_.context_length = 64;
    info_.kv_pool_tokens = 1024;
  }

  static v1::GenerateRequest Ids(std::vector<uint32_t> ids) {
    v1::GenerateRequest r;
    r.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
    return r;
  }

  absl::StatusOr<ConvertedRequest> Convert(const v1::GenerateRequest& r) {
    return ConvertGenerateRequest(r, info_, std::nullopt);
  }

  // Expects `code` and a message containing `needle` (the field name).
  void ExpectError(const v1::GenerateRequest& r, absl::StatusCode code, const std::string& needle) {
    absl::StatusOr<ConvertedRequest> c = Convert(r);
    ASSERT_FALSE(c.ok()) << "expected an error naming " << needle;
    EXPECT_EQ(c.status().code(), code) << c.status();
    EXPECT_NE(std::string(c.status().message()).find(needle), std::string::npos) << c.status();
  }

  std::unique_ptr<model::Tokenizer> tokenizer_;
  ServedModelInfo info_;
};

TEST_F(RequestConversionTest, UnsetFieldsGetServerDefaults) {
  auto c = Convert(Ids({1, 3, 4}));
  ASSERT_TRUE(c.ok()) << c.status();
  const scheduler::EngineRequest& e = c->engine_request;
  EXPECT_EQ(e.prompt_tokens, (std::vector<int32_t>{1, 3, 4}));
  EXPECT_EQ(e.sampling.temperature, 1.0f);
  EXPECT_EQ(e.sampling.top_k, 0);
  EXPECT_EQ(e.sampling.top_p, 1.0f);
  EXPECT_FALSE(e.sampling.seed.has_value());
  EXPECT_EQ(e.n, 1);
  EXPECT_EQ(e.stopping.max_tokens, 64 - 3);  // Up to the context limit.
  EXPECT_EQ(e.output.num_logprobs, -1);
  EXPECT_FALSE(e.scheduling.deadline.has_value());
  EXPECT_FALSE(e.scheduling.timeout.has_value());
  EXPECT_EQ(e.request_id.size(), 36u);  // A UUID.
  EXPECT_EQ(e.request_id[14], '4');
  EXPECT_EQ(c->response.request_id, e.request_id);
  // Token-id input: no text, no PromptInfo by default.
  EXPECT_FALSE(c->response.detokenize);
  EXPECT_FALSE(c->response.send_prompt_info);
  EXPECT_NE(GenerateRequestId(), GenerateRequestId());
}

TEST_F(RequestConversionTest, ZeroIsZeroWhenSet) {
  v1::GenerateRequest r = Ids({1, 3});
  r.set_request_id("mine");
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_top_k(-1);
  r.mutable_sampling()->set_seed(0);
  r.mutable_sampling()->set_n(3);
  r.mutable_stopping()->set_max_tokens(5);
  r.mutable_output()->set_logprobs(0);
  r.mutable_scheduling()->set_priority(-2);
  r.mutable_scheduling()->set_timeout_ms(250);
  r.mutable_kv()->set_cache_salt("tenant-a");
  r.mutable_kv()->set_bypass_prefix_cache(true);
  const auto deadline = scheduler::Clock::now() + std::chrono::seconds(3);
  auto c = ConvertGenerateRequest(r, info_, deadline);
  ASSERT_TRUE(c.ok()) << c.status();
  const scheduler::EngineRequest& e = c->engine_request;
  EXPECT_EQ(e.request_id, "mine");
  EXPECT_EQ(e.sampling.temperature, 0.0f);
  EXPECT_EQ(e.sampling.top_k, 0);
  EXPECT_EQ(e.sampling.seed, 0u);
  EXPECT_EQ(e.n, 3);
  EXPECT_EQ(e.stopping.max_tokens, 5);
  EXPECT_EQ(e.output.num_logprobs, 0);
  EXPECT_TRUE(c->response.with_logprobs);
  EXPECT_EQ(e.scheduling.priority, -2);
  EXPECT_EQ(e.scheduling.timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(e.scheduling.deadline, deadline);
  EXPECT_EQ(e.kv.cache_salt, "tenant-a");
  EXPECT_TRUE(e.kv.bypass_prefix_cache);
}

TEST_F(RequestConversionTest, TextInputIsTokenizedWithSpecialTokensByDefault) {
  v1::GenerateRequest r;
  r.set_text("hello world");
  auto c = Convert(r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine_request.prompt_tokens, (std::vector<int32_t>{1, 3, 4}));
  EXPECT_TRUE(c->response.detokenize);
  EXPECT_TRUE(c->response.send_prompt_info);
  r.set_add_special_tokens(false);
  c = Convert(r);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->engine_request.prompt_tokens, (std::vector<int32_t>{3, 4}));
  r.mutable_output()->set_detokenize(false);
  c = Convert(r);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->response.detokenize);
  EXPECT_FALSE(c->engine_request.output.detokenize);
}

TEST_F(RequestConversionTest, TruncationKeepsTheLastTokens) {
  v1::GenerateRequest r = Ids({1, 3, 4, 3, 4});
  r.mutable_stopping()->set_truncate_prompt_tokens(2);
  auto c = Convert(r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine_request.prompt_tokens, (std::vector<int32_t>{3, 4}));
  std::vector<uint32_t> long_prompt(100, 3);
  r = Ids(long_prompt);
  r.mutable_stopping()->set_truncate_prompt_tokens(-1);
  c = Convert(r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->engine_request.prompt_tokens.size(), 63u);  // context − 1.
  EXPECT_EQ(c->engine_request.stopping.max_tokens, 1);
}

TEST_F(RequestConversionTest, RoutingAndReservedFeatureErrors) {
  v1::GenerateRequest r = Ids({1});
  r.set_model("other");
  ExpectError(r, absl::StatusCode::kNotFound, "other");
  r.set_model("tiny");
  EXPECT_TRUE(Convert(r).ok());
  r.set_lora_name("adapter");
  ExpectError(r, absl::StatusCode::kUnimplemented, "lora_name");
  r.clear_lora_name();
  r.mutable_guided()->set_regex("a+");
  ExpectError(r, absl::StatusCode::kUnimplemented, "guided");
  r.mutable_guided()->set_json_object(false);  // false = unset.
  EXPECT_TRUE(Convert(r).ok());
  r.clear_guided();
  r.mutable_output()->set_prompt_logprobs(1);
  ExpectError(r, absl::StatusCode::kUnimplemented, "prompt_logprobs");
}

TEST_F(RequestConversionTest, EveryInvalidFieldIsNamed) {
  const auto invalid = absl::StatusCode::kInvalidArgument;
  ExpectError(v1::GenerateRequest(), invalid, "input");
  v1::GenerateRequest empty_text;
  empty_text.set_text("");
  ExpectError(empty_text, invalid, "text");
  ExpectError(Ids({}), invalid, "token_ids");
  ExpectError(Ids({1, 99}), invalid, "token_ids.ids[1]");
  ExpectError(Ids(std::vector<uint32_t>(64, 3)), invalid, "context_length_exceeded");

  struct Case {
    std::function<void(v1::GenerateRequest&)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.set_request_id(std::string(257, 'x')); }, "request_id"},
      {[](auto& r) { r.set_data_parallel_rank(1); }, "data_parallel_rank"},
      {[](auto& r) { (*r.mutable_extra()->mutable_fields())["typo"].set_bool_value(true); },
       "extra"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); }, "sampling.temperature"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(NAN); }, "sampling.temperature"},
      {[](auto& r) { r.mutable_sampling()->set_temperature(101); }, "sampling.temperature"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(0); }, "sampling.top_p"},
      {[](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
      {[](auto& r) { r.mutable_sampling()->set_top_k(-2); }, "sampling.top_k"},
      {[](auto& r) { r.mutable_sampling()->set_top_k(100); }, "sampling.top_k"},
      {[](auto& r) { r.mutable_sampling()->set_min_p(1.1f); }, "sampling.min_p"},
      {[](auto& r) { r.mutable_sampling()->set_frequency_penalty(2.5f); },
       "sampling.frequency_penalty"},
      {[](auto& r) { r.mutable_sampling()->set_presence_penalty(-3); },
       "sampling.presence_penalty"},
      {[](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       "sampling.repetition_penalty"},
      {[](auto& r) { r.mutable_sampling()->set_n(0); }, "sampling.n"},
      {[](auto& r) { r.mutable_sampling()->set_n(17); }, "sampling.n"},
      {[](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[99] = 1; },
       "sampling.logit_bias"},
      {[](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[3] = 101; },
       "sampling.logit_bias[3]"},
      {[](auto& r) { r.mutable_stopping()->set_max_tokens(0); }, "stopping.max_tokens"},
      {[](auto& r) { r.mutable_stopping()->set_max_tokens(64); }, "context_length_exceeded"},
      {[](auto& r) {
         r.mutable_stopping()->set_max_tokens(2);
         r.mutable_stopping()->set_min_tokens(3);
       },
       "stopping.min_tokens"},
      {[](auto& r) {
         for (int i = 0; i < 33; ++i) r.mutable_stopping()->add_stop("x");
       },
       "stopping.stop"},
      {[](auto& r) { r.mutable_stopping()->add_stop(""); }, "stopping.stop[0]"},
      {[](auto& r) { r.mutable_stopping()->add_stop_token_ids(99); }, "stopping.stop_token_ids[0]"},
      {[](auto& r) { r.mutable_stopping()->set_truncate_prompt_tokens(0); },
       "stopping.truncate_prompt_tokens"},
      {[](auto& r) { r.mutable_stopping()->set_truncate_prompt_tokens(-2); },
       "stopping.truncate_prompt_tokens"},
      {[](auto& r) { r.mutable_output()->set_logprobs(21); }, "output.logprobs"},
      {[](auto& r) { r.mutable_output()->set_stream_interval_tokens(0); },
       "output.stream_interval_tokens"},
      {[](auto& r) { r.mutable_speculation()->set_mode(static_cast<v1::SpecMode>(7)); },
       "speculation.mode"},
      {[](auto& r) { r.mutable_speculation()->set_drafter(static_cast<v1::Drafter>(9)); },
       "speculation.drafter"},
      {[](auto& r) { r.mutable_speculation()->set_shape(static_cast<v1::DraftShape>(9)); },
       "speculation.shape"},
      {[](auto& r) { r.mutable_speculation()->set_max_draft_tokens(17); },
       "speculation.max_draft_tokens"},
      {[](auto& r) { r.mutable_speculation()->set_stop_threshold(0); },
       "speculation.stop_threshold"},
      {[](auto& r) { r.mutable_kv()->set_eviction(static_cast<v1::EvictionPolicy>(9)); },
       "kv.eviction"},
      {[](auto& r) { r.mutable_kv()->set_budget_tokens(3); }, "kv.budget_tokens"},
      {[](auto& r) { r.mutable_kv()->set_budget_ratio(1.5f); }, "kv.budget_ratio"},
      {[](auto& r) { r.mutable_kv()->set_observation_window_tokens(0); },
       "kv.observation_window_tokens"},
      {[](auto& r) { r.mutable_kv()->set_sink_tokens(2000); }, "kv.sink_tokens"},
      {[](auto& r) { r.mutable_kv()->set_recent_tokens(70000); }, "kv.recent_tokens"},
      {[](auto& r) { r.mutable_kv()->set_refresh(static_cast<v1::RefreshMode>(5)); },
       "kv.refresh"},
      {[](auto& r) { r.mutable_kv()->set_refresh_budget_tokens(0); }, "kv.refresh_budget_tokens"},
      {[](auto& r) { r.mutable_kv()->set_cache_salt(std::string(257, 's')); }, "kv.cache_salt"},
      {[](auto& r) { r.mutable_scheduling()->set_timeout_ms(0); }, "scheduling.timeout_ms"},
      {[](auto& r) { r.mutable_scheduling()->set_ttft_target_ms(0); },
       "scheduling.ttft_target_ms"},
      {[](auto& r) { r.mutable_scheduling()->set_tpot_target_ms(0); },
       "scheduling.tpot_target_ms"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Ids({1, 3});
    c.mutate(r);
    SCOPED_TRACE(c.field);
    ExpectError(r, invalid, c.field);
  }
}

TEST_F(RequestConversionTest, ValidSpeculationAndKvOptionsAreAccepted) {
  v1::GenerateRequest r = Ids({1, 3});
  r.mutable_speculation()->set_mode(v1::SPEC_MODE_ON);
  r.mutable_speculation()->set_max_draft_tokens(4);
  r.mutable_speculation()->set_stop_threshold(1);
  r.mutable_kv()->set_eviction(v1::EVICTION_POLICY_SNAPKV);
  r.mutable_kv()->set_budget_ratio(0.5f);
  r.mutable_kv()->set_refresh(v1::REFRESH_MODE_OFF);
  EXPECT_TRUE(Convert(r).ok());
}

// --- Output mapping ---------------------------------------------------------------------------

ResponseOptions StreamOptions() {
  ResponseOptions o;
  o.request_id = "req";
  o.send_prompt_info = true;
  o.detokenize = true;
  o.num_prompt_tokens = 3;
  return o;
}

RequestOutput WithPrompt() {
  RequestOutput out;
  scheduler::PromptInfo p;
  p.prompt_tokens = 3;
  p.cached_tokens = 2;
  p.queue_time_us = 7;
  out.prompt = p;
  return out;
}

SequenceDelta Delta(int index, std::vector<int32_t> ids, std::string text) {
  SequenceDelta d;
  d.index = index;
  d.token_ids = std::move(ids);
  d.text = std::move(text);
  return d;
}

SequenceDelta Finished(SequenceDelta d, FinishReason reason, int32_t completion) {
  d.finished = true;
  d.finish_reason = reason;
  d.usage.prompt_tokens = 3;
  d.usage.completion_tokens = completion;
  d.usage.cached_tokens = 2;
  d.stats.ttft_us = 11;
  d.stats.e2e_us = 22;
  d.stats.peak_kv_blocks = 1;
  return d;
}

TEST_F(RequestConversionTest, StreamsPromptInfoChunksAndOneCompletePerIndex) {
  ResponseBuilder builder(StreamOptions(), *tokenizer_);
  std::vector<v1::GenerateResponse> m;
  RequestOutput first = WithPrompt();
  first.deltas.push_back(Delta(0, {3}, " hello"));
  builder.Append(first, m);
  RequestOutput last;
  SequenceDelta end = Finished(Delta(0, {2}, ""), FinishReason::kStop, 2);
  end.matched_stop.kind = scheduler::StopMatch::Kind::kEosToken;
  end.matched_stop.token_id = 2;
  last.deltas.push_back(end);
  last.done = true;
  builder.Append(last, m);

  ASSERT_EQ(m.size(), 4u);
  for (const auto& msg : m) EXPECT_EQ(msg.request_id(), "req");
  ASSERT_TRUE(m[0].has_prompt());
  EXPECT_EQ(m[0].prompt().prompt_tokens(), 3u);
  EXPECT_EQ(m[0].prompt().cached_tokens(), 2u);
  EXPECT_EQ(m[0].prompt().queue_time_us(), 7u);
  ASSERT_TRUE(m[1].has_chunk());
  EXPECT_EQ(m[1].chunk().text(), " hello");
  EXPECT_EQ(m[1].chunk().token_ids(0), 3u);
  EXPECT_FALSE(m[1].chunk().has_usage());
  ASSERT_TRUE(m[2].has_chunk());  // The EOS token id, no text.
  EXPECT_EQ(m[2].chunk().token_ids(0), 2u);
  ASSERT_TRUE(m[3].has_complete());
  const auto& c = m[3].complete();
  EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(c.matched_stop_case(), v1::GenerateResponse::Complete::kEosTokenId);
  EXPECT_EQ(c.eos_token_id(), 2u);
  EXPECT_TRUE(c.token_ids().empty());  // Streamed already.
  EXPECT_EQ(c.usage().total_tokens(), 5u);
  EXPECT_EQ(c.usage().cached_tokens(), 2u);
  EXPECT_EQ(c.stats().ttft_us(), 11u);
  EXPECT_EQ(c.stats().drafter(), v1::DRAFTER_NONE);
  EXPECT_EQ(c.stats().eviction(), v1::EVICTION_POLICY_NONE);
}

TEST_F(RequestConversionTest, FinalOnlySendsTheWholeOutputInComplete) {
  ResponseOptions o = StreamOptions();
  o.final_only = true;
  o.send_prompt_info = false;
  ResponseBuilder builder(o, *tokenizer_);
  std::vector<v1::GenerateResponse> m;
  RequestOutput out;
  SequenceDelta a = Finished(Delta(0, {3, 4}, " hello world"), FinishReason::kLength, 2);
  SequenceDelta b = Finished(Delta(1, {4}, " world"), FinishReason::kStop, 1);
  b.matched_stop.kind = scheduler::StopMatch::Kind::kStopString;
  b.matched_stop.stop_string = "x";
  out.deltas = {a, b};
  builder.Append(out, m);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].complete().index(), 0u);
  EXPECT_EQ(m[0].complete().text(), " hello world");
  EXPECT_EQ(m[0].complete().token_ids_size(), 2);
  EXPECT_EQ(m[0].complete().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(m[0].complete().matched_stop_case(),
            v1::GenerateResponse::Complete::MATCHED_STOP_NOT_SET);
  EXPECT_EQ(m[1].complete().index(), 1u);
  EXPECT_EQ(m[1].complete().stop_str(), "x");
}

TEST_F(RequestConversionTest, StreamIntervalBatchesTokensAndUsageEveryChunk) {
  ResponseOptions o = StreamOptions();
  o.stream_interval_tokens = 2;
  o.usage_every_chunk = true;
  o.detokenize = false;
  o.send_prompt_info = false;
  ResponseBuilder builder(o, *tokenizer_);
  std::vector<v1::GenerateResponse> m;
  for (int32_t id : {3, 4, 3}) {
    RequestOutput out = id == 3 && m.empty() ? WithPrompt() : RequestOutput();
    out.deltas.push_back(Delta(0, {id}, "text"));
    builder.Append(out, m);
  }
  ASSERT_EQ(m.size(), 1u);  // Two tokens so far: one chunk; the third waits.
  EXPECT_EQ(m[0].chunk().token_ids_size(), 2);
  EXPECT_EQ(m[0].chunk().text(), "");  // Not detokenizing.
  EXPECT_EQ(m[0].chunk().usage().completion_tokens(), 2u);
  EXPECT_EQ(m[0].chunk().usage().cached_tokens(), 2u);
  RequestOutput end;
  end.deltas.push_back(Finished(Delta(0, {}, ""), FinishReason::kAbort, 3));
  end.deltas.back().message = "user pressed stop";
  builder.Append(end, m);
  ASSERT_EQ(m.size(), 3u);  // The held token is flushed before Complete.
  EXPECT_EQ(m[1].chunk().token_ids_size(), 1);
  EXPECT_EQ(m[1].chunk().usage().completion_tokens(), 3u);
  EXPECT_EQ(m[2].complete().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_EQ(m[2].complete().message(), "user pressed stop");
}

TEST_F(RequestConversionTest, LogprobsCarryTokenTextAndBytes) {
  ResponseOptions o = StreamOptions();
  o.with_logprobs = true;
  ResponseBuilder builder(o, *tokenizer_);
  std::vector<v1::GenerateResponse> m;
  RequestOutput out;
  SequenceDelta d = Delta(0, {5}, "");
  scheduler::TokenLogprob lp;
  lp.token_id = 5;
  lp.logprob = -0.5f;
  lp.top = {{3, -0.1f}, {5, -0.5f}};
  d.logprobs.push_back(lp);
  out.deltas.push_back(d);
  builder.Append(out, m);
  ASSERT_EQ(m.size(), 1u);
  const v1::TokenLogprob& t = m[0].chunk().logprobs(0);
  EXPECT_EQ(t.token_id(), 5u);
  EXPECT_FLOAT_EQ(t.logprob(), -0.5f);
  EXPECT_EQ(t.rank(), 2u);
  EXPECT_EQ(t.token_bytes(), "\xE2");     // The raw byte of the byte-fallback token.
  EXPECT_EQ(t.token(), "\xEF\xBF\xBD");   // Not valid UTF-8 alone: U+FFFD.
  ASSERT_EQ(t.top_size(), 2);
  EXPECT_EQ(t.top(0).token(), " hello");
}

TEST(SanitizeUtf8Test, ReplacesEachInvalidByte) {
  EXPECT_EQ(SanitizeUtf8("ok \xC3\xA9 \xE2\x82\xAC"), "ok \xC3\xA9 \xE2\x82\xAC");
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82"), "a\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // Overlong.
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // Surrogate.
}

}  // namespace
}  // namespace glimpse::server
