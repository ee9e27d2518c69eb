#include "server/openai_response.h"

#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/openai_request.h"
#include <nlohmann/json.hpp>

namespace glimpse::server::openai {
namespace {

namespace v1 = ::glimpse::v1;
using json = nlohmann::json;

ResponseMeta Meta(Endpoint endpoint) {
  return ResponseMeta{endpoint == Endpoint::kChatCompletions ? "chatcmpl-1" : "cmpl-1",
                      1700000000, "m"};
}

ResponseOptions Options(Endpoint endpoint, int n = 1) {
  ResponseOptions o;
  o.endpoint = endpoint;
  o.n = n;
  return o;
}

v1::GenerateResponse PromptMsg(uint32_t prompt_tokens, uint32_t cached) {
  v1::GenerateResponse r;
  r.set_request_id("r");
  r.mutable_prompt()->set_prompt_tokens(prompt_tokens);
  r.mutable_prompt()->set_cached_tokens(cached);
  return r;
}

v1::GenerateResponse ChunkMsg(uint32_t index, const std::string& text,
                              std::vector<uint32_t> ids = {1}) {
  v1::GenerateResponse r;
  r.set_request_id("r");
  v1::GenerateResponse::Chunk* c = r.mutable_chunk();
  c->set_index(index);
  c->set_text(text);
  for (uint32_t id : ids) c->add_token_ids(id);
  return r;
}

v1::GenerateResponse CompleteMsg(uint32_t index, v1::FinishReason reason, uint32_t prompt_tokens,
                                 uint32_t completion_tokens) {
  v1::GenerateResponse r;
  r.set_request_id("r");
  v1::GenerateResponse::Complete* c = r.mutable_complete();
  c->set_index(index);
  c->set_finish_reason(reason);
  c->mutable_usage()->set_prompt_tokens(prompt_tokens);
  c->mutable_usage()->set_completion_tokens(completion_tokens);
  c->mutable_usage()->set_total_tokens(prompt_tokens + completion_tokens);
  return r;
}

v1::TokenLogprob Lp(uint32_t id, const std::string& token, float logprob,
                    std::vector<std::pair<std::string, float>> top = {}) {
  v1::TokenLogprob lp;
  lp.set_token_id(id);
  lp.set_token(token);
  lp.set_logprob(logprob);
  for (const auto& [t, l] : top) {
    v1::TopLogprob* alt = lp.add_top();
    alt->set_token(t);
    alt->set_logprob(l);
  }
  return lp;
}

// ---- streaming: completions -----------------------------------------------------------------

TEST(StreamTranslatorTest, CompletionsStreamsTextThenFinishChunkThenDone) {
  StreamTranslator t(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  std::string out = t.Start();
  out += t.Feed(PromptMsg(4, 0));
  out += t.Feed(ChunkMsg(0, "Hello"));
  out += t.Feed(ChunkMsg(0, " world"));
  EXPECT_FALSE(t.AllComplete());
  out += t.Feed(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 4, 2));
  EXPECT_TRUE(t.AllComplete());
  out += t.Finish();
  const std::string head =
      R"(data: {"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m",)";
  EXPECT_EQ(out,
            head + R"("choices":[{"index":0,"text":"Hello","logprobs":null,"finish_reason":null}]})"
                   "\n\n" +
                head + R"("choices":[{"index":0,"text":" world","logprobs":null,)"
                       R"("finish_reason":null}]})"
                       "\n\n" +
                head + R"("choices":[{"index":0,"text":"","logprobs":null,)"
                       R"("finish_reason":"length","stop_reason":null}]})"
                       "\n\n"
                       "data: [DONE]\n\n");
}

TEST(StreamTranslatorTest, IncludeUsageAddsNullUsageOnChunksAndAFinalUsageChunk) {
  ResponseOptions o = Options(Endpoint::kCompletions);
  o.include_usage = true;
  StreamTranslator t(o, Meta(Endpoint::kCompletions));
  std::string out = t.Feed(PromptMsg(4, 2));
  out += t.Feed(ChunkMsg(0, "A"));
  out += t.Feed(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 4, 1));
  out += t.Finish();
  const std::string head =
      R"(data: {"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m",)";
  EXPECT_EQ(out,
            head + R"("choices":[{"index":0,"text":"A","logprobs":null,"finish_reason":null}],)"
                   R"("usage":null})"
                   "\n\n" +
                head + R"("choices":[{"index":0,"text":"","logprobs":null,)"
                       R"("finish_reason":"length","stop_reason":null}],"usage":null})"
                       "\n\n" +
                head + R"("choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1,)"
                       R"("total_tokens":5,"prompt_tokens_details":{"cached_tokens":2}}})"
                       "\n\n"
                       "data: [DONE]\n\n");
}

TEST(StreamTranslatorTest, ChunkWithOnlyHeldBackTextProducesNoEvent) {
  StreamTranslator t(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  EXPECT_EQ(t.Feed(ChunkMsg(0, "", {5, 6})), "");
}

TEST(StreamTranslatorTest, MatchedStopStringIsStopWithStopReason) {
  StreamTranslator t(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  t.Feed(ChunkMsg(0, "x"));
  v1::GenerateResponse done = CompleteMsg(0, v1::FINISH_REASON_STOP, 3, 2);
  done.mutable_complete()->set_stop_str("\n\n");
  EXPECT_EQ(t.Feed(done),
            R"(data: {"id":"cmpl-1","object":"text_completion","created":1700000000,)"
            R"("model":"m","choices":[{"index":0,"text":"","logprobs":null,)"
            R"("finish_reason":"stop","stop_reason":"\n\n"}]})"
            "\n\n");
  v1::GenerateResponse eos = CompleteMsg(0, v1::FINISH_REASON_STOP, 3, 2);
  eos.mutable_complete()->set_eos_token_id(2);
  StreamTranslator t2(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  EXPECT_TRUE(absl::StrContains(t2.Feed(eos), R"("finish_reason":"stop","stop_reason":null)"));
}

TEST(StreamTranslatorTest, EchoPrefixesFirstTextOfEachChoice) {
  ResponseOptions o = Options(Endpoint::kCompletions, 2);
  o.echo_prompts = {"Q: "};
  StreamTranslator t(o, Meta(Endpoint::kCompletions));
  EXPECT_TRUE(absl::StrContains(t.Feed(ChunkMsg(0, "A")), R"("text":"Q: A")"));
  EXPECT_TRUE(absl::StrContains(t.Feed(ChunkMsg(0, "B")), R"("text":"B")"));
  // A choice whose first message is its Complete still gets the echo.
  const std::string out = t.Feed(CompleteMsg(1, v1::FINISH_REASON_LENGTH, 2, 0));
  EXPECT_TRUE(absl::StrContains(out, R"("index":1,"text":"Q: ","logprobs":null,)"
                                     R"("finish_reason":null)"))
      << out;
}

TEST(StreamTranslatorTest, BatchedPromptsMapToPromptIndexTimesNPlusIndex) {
  ResponseOptions o = Options(Endpoint::kCompletions, 2);
  o.num_prompts = 2;
  o.include_usage = true;
  StreamTranslator t(o, Meta(Endpoint::kCompletions));
  EXPECT_TRUE(absl::StrContains(t.Feed(ChunkMsg(1, "x"), /*prompt_index=*/1), R"("index":3,)"));
  EXPECT_TRUE(absl::StrContains(t.Feed(ChunkMsg(0, "y"), 1), R"("index":2,)"));
  EXPECT_TRUE(absl::StrContains(t.Feed(ChunkMsg(1, "z"), 0), R"("index":1,)"));
  t.Feed(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 3, 1), 0);
  t.Feed(CompleteMsg(1, v1::FINISH_REASON_LENGTH, 3, 1), 0);
  t.Feed(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 5, 2), 1);
  EXPECT_FALSE(t.AllComplete());
  t.Feed(CompleteMsg(1, v1::FINISH_REASON_LENGTH, 5, 2), 1);
  EXPECT_TRUE(t.AllComplete());
  // Prompt tokens counted once per prompt (3 + 5), completion tokens over all four choices.
  EXPECT_TRUE(absl::StrContains(t.Finish(), R"("usage":{"prompt_tokens":8,)"
                                            R"("completion_tokens":6,"total_tokens":14,)"));
}

TEST(StreamTranslatorTest, OutOfRangeIndexFromReplicaIsIgnored) {
  StreamTranslator t(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  EXPECT_EQ(t.Feed(ChunkMsg(7, "x")), "");
  EXPECT_EQ(t.Feed(ChunkMsg(0, "x"), /*prompt_index=*/3), "");
  EXPECT_EQ(t.Feed(CompleteMsg(9, v1::FINISH_REASON_STOP, 1, 1)), "");
  t.Feed(CompleteMsg(0, v1::FINISH_REASON_STOP, 1, 1));
  EXPECT_EQ(t.Feed(CompleteMsg(0, v1::FINISH_REASON_STOP, 1, 1)), "");  // Duplicate.
  EXPECT_EQ(t.Feed(ChunkMsg(0, "late")), "");
}

// ---- streaming: chat ------------------------------------------------------------------------

TEST(StreamTranslatorTest, ChatSendsRoleFirstThenContentThenEmptyDeltaWithFinishReason) {
  StreamTranslator t(Options(Endpoint::kChatCompletions), Meta(Endpoint::kChatCompletions));
  std::string out = t.Feed(ChunkMsg(0, "Hi"));
  out += t.Feed(CompleteMsg(0, v1::FINISH_REASON_STOP, 5, 1));
  out += t.Finish();
  const std::string head =
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"m",)";
  EXPECT_EQ(out, head + R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
                        R"("logprobs":null,"finish_reason":null}]})"
                        "\n\n" +
                     head + R"("choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,)"
                            R"("finish_reason":null}]})"
                            "\n\n" +
                     head + R"("choices":[{"index":0,"delta":{},"logprobs":null,)"
                            R"("finish_reason":"stop","stop_reason":null}]})"
                            "\n\n"
                            "data: [DONE]\n\n");
}

TEST(StreamTranslatorTest, ChatWithNTwoInterleavesChoicesByIndex) {
  ResponseOptions o = Options(Endpoint::kChatCompletions, 2);
  o.include_usage = true;
  StreamTranslator t(o, Meta(Endpoint::kChatCompletions));
  std::string out = t.Start();
  out += t.Feed(PromptMsg(3, 0));
  out += t.Feed(ChunkMsg(1, "b1"));
  out += t.Feed(ChunkMsg(0, "a1"));
  out += t.Feed(ChunkMsg(1, "b2"));
  out += t.Feed(CompleteMsg(1, v1::FINISH_REASON_LENGTH, 3, 2));
  out += t.Feed(CompleteMsg(0, v1::FINISH_REASON_ABORT, 3, 1));
  out += t.Finish();
  const std::string head =
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"m",)";
  auto event = [&](const std::string& choice) {
    return head + R"("choices":[)" + choice + R"(],"usage":null})" + "\n\n";
  };
  const std::string role = R"("delta":{"role":"assistant","content":""},"logprobs":null,)"
                           R"("finish_reason":null})";
  EXPECT_EQ(out,
            event(R"({"index":0,)" + role) + event(R"({"index":1,)" + role) +
                event(R"({"index":1,"delta":{"content":"b1"},"logprobs":null,"finish_reason":null})") +
                event(R"({"index":0,"delta":{"content":"a1"},"logprobs":null,"finish_reason":null})") +
                event(R"({"index":1,"delta":{"content":"b2"},"logprobs":null,"finish_reason":null})") +
                event(R"({"index":1,"delta":{},"logprobs":null,"finish_reason":"length",)"
                      R"("stop_reason":null})") +
                event(R"({"index":0,"delta":{},"logprobs":null,"finish_reason":"abort",)"
                      R"("stop_reason":null})") +
                head + R"("choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,)"
                       R"("total_tokens":6,"prompt_tokens_details":{"cached_tokens":0}}})"
                       "\n\n"
                       "data: [DONE]\n\n");
}

TEST(StreamTranslatorTest, ErrorEventsCarryOpenAiErrorThenDone) {
  const std::string out =
      StreamTranslator::ErrorEvents(FromStatus(absl::InternalError("engine failed")));
  EXPECT_EQ(out,
            R"(data: {"error":{"message":"engine failed","type":"server_error","param":null,)"
            R"("code":null}})"
            "\n\ndata: [DONE]\n\n");
}

// ---- logprobs -------------------------------------------------------------------------------

TEST(StreamTranslatorTest, CompletionsLogprobsHaveLegacyShapeWithRunningTextOffset) {
  ResponseOptions o = Options(Endpoint::kCompletions);
  o.logprobs = true;
  StreamTranslator t(o, Meta(Endpoint::kCompletions));
  v1::GenerateResponse c1 = ChunkMsg(0, "Hi", {10});
  *c1.mutable_chunk()->add_logprobs() = Lp(10, "Hi", -0.1f, {{"Hi", -0.1f}, {"Yo", -2.5f}});
  v1::GenerateResponse c2 = ChunkMsg(0, " é", {11});
  *c2.mutable_chunk()->add_logprobs() = Lp(11, " é", -1.0f, {{" a", -0.5f}});
  const std::string e1 = t.Feed(c1);
  const std::string e2 = t.Feed(c2);
  EXPECT_TRUE(absl::StrContains(
      e1, R"("logprobs":{"tokens":["Hi"],"token_logprobs":[-0.1],)"
          R"("top_logprobs":[{"Hi":-0.1,"Yo":-2.5}],"text_offset":[0]})"))
      << e1;
  // The sampled token joins its top dict (vLLM); the offset counts code points.
  EXPECT_TRUE(absl::StrContains(
      e2, R"("logprobs":{"tokens":[" é"],"token_logprobs":[-1.0],)"
          R"("top_logprobs":[{" a":-0.5," é":-1.0}],"text_offset":[2]})"))
      << e2;
}

TEST(StreamTranslatorTest, ChatLogprobsHaveContentShapeWithBytes) {
  ResponseOptions o = Options(Endpoint::kChatCompletions);
  o.logprobs = true;
  StreamTranslator t(o, Meta(Endpoint::kChatCompletions));
  v1::GenerateResponse c = ChunkMsg(0, "A", {10});
  *c.mutable_chunk()->add_logprobs() = Lp(10, "A", -0.25f, {{"A", -0.25f}, {"B", -1.5f}});
  const std::string out = t.Feed(c);
  EXPECT_TRUE(absl::StrContains(
      out, R"("delta":{"content":"A"},"logprobs":{"content":[{"token":"A","logprob":-0.25,)"
           R"("bytes":[65],"top_logprobs":[{"token":"A","logprob":-0.25,"bytes":[65]},)"
           R"({"token":"B","logprob":-1.5,"bytes":[66]}]}]},"finish_reason":null)"))
      << out;
}

TEST(StreamTranslatorTest, NegativeInfinityLogprobIsSentAsMinus9999) {
  ResponseOptions o = Options(Endpoint::kChatCompletions);
  o.logprobs = true;
  StreamTranslator t(o, Meta(Endpoint::kChatCompletions));
  v1::GenerateResponse c = ChunkMsg(0, "A", {10});
  *c.mutable_chunk()->add_logprobs() = Lp(10, "A", -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(absl::StrContains(t.Feed(c), R"("logprob":-9999.0)"));
}

// ---- non-streaming --------------------------------------------------------------------------

TEST(AggregatorTest, CompletionsFromFinalOnlyCompletes) {
  Aggregator a(Options(Endpoint::kCompletions, 2), Meta(Endpoint::kCompletions));
  a.Add(PromptMsg(7, 0));
  v1::GenerateResponse c1 = CompleteMsg(1, v1::FINISH_REASON_STOP, 7, 3);
  c1.mutable_complete()->set_text("two");
  c1.mutable_complete()->set_stop_token_id(13);
  v1::GenerateResponse c0 = CompleteMsg(0, v1::FINISH_REASON_LENGTH, 7, 16);
  c0.mutable_complete()->set_text("one");
  a.Add(c1);
  EXPECT_FALSE(a.AllComplete());
  a.Add(c0);
  EXPECT_TRUE(a.AllComplete());
  EXPECT_EQ(a.Finish(),
            R"({"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"m",)"
            R"("choices":[{"index":0,"text":"one","logprobs":null,"finish_reason":"length",)"
            R"("stop_reason":null},{"index":1,"text":"two","logprobs":null,)"
            R"("finish_reason":"stop","stop_reason":13}],"usage":{"prompt_tokens":7,)"
            R"("completion_tokens":19,"total_tokens":26,"prompt_tokens_details":)"
            R"({"cached_tokens":0}}})");
}

TEST(AggregatorTest, ChatFromStreamedChunks) {
  Aggregator a(Options(Endpoint::kChatCompletions), Meta(Endpoint::kChatCompletions));
  a.Add(ChunkMsg(0, "Hel"));
  a.Add(ChunkMsg(0, "lo"));
  a.Add(CompleteMsg(0, v1::FINISH_REASON_TIMEOUT, 5, 2));
  EXPECT_EQ(a.Finish(),
            R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m",)"
            R"("choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},)"
            R"("logprobs":null,"finish_reason":"length","stop_reason":null}],)"
            R"("usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,)"
            R"("prompt_tokens_details":{"cached_tokens":0}}})");
}

TEST(AggregatorTest, CompletionsLogprobsAndEchoAcrossChunks) {
  ResponseOptions o = Options(Endpoint::kCompletions);
  o.logprobs = true;
  o.echo_prompts = {"ab"};
  Aggregator a(o, Meta(Endpoint::kCompletions));
  v1::GenerateResponse c1 = ChunkMsg(0, "x", {1});
  *c1.mutable_chunk()->add_logprobs() = Lp(1, "x", -0.5f);
  v1::GenerateResponse c2 = ChunkMsg(0, "yz", {2});
  *c2.mutable_chunk()->add_logprobs() = Lp(2, "yz", -0.75f);
  a.Add(c1);
  a.Add(c2);
  a.Add(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 2, 2));
  const json body = json::parse(a.Finish(), nullptr, false);
  ASSERT_FALSE(body.is_discarded());
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["text"], "abxyz");
  EXPECT_EQ(choice["logprobs"]["tokens"], json({"x", "yz"}));
  EXPECT_EQ(choice["logprobs"]["token_logprobs"], json({-0.5, -0.75}));
  EXPECT_EQ(choice["logprobs"]["text_offset"], json({2, 3}));  // After the echoed "ab".
  EXPECT_EQ(choice["logprobs"]["top_logprobs"][1], json({{"yz", -0.75}}));
}

TEST(AggregatorTest, IncompleteChoiceHasNullFinishReason) {
  Aggregator a(Options(Endpoint::kChatCompletions), Meta(Endpoint::kChatCompletions));
  a.Add(ChunkMsg(0, "partial"));
  const json body = json::parse(a.Finish(), nullptr, false);
  EXPECT_TRUE(body["choices"][0]["finish_reason"].is_null());
}

// ---- shapes against llama-server's recorded responses (../shared/fixtures) -------------------

std::set<std::string> Keys(const json& j) {
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  return keys;
}

// Lines copied from llama-server-completions-stream.http and llama-server-completions.http.
constexpr char kFixtureStreamChunk[] =
    R"({"choices":[{"text":"    ","index":0,"logprobs":null,"finish_reason":null}],)"
    R"("created":1795901644,"model":"gpt-3.5-turbo","system_fingerprint":"b4748-c392e5094",)"
    R"("object":"text_completion","id":"chatcmpl-dWtFZH6Jap8hGOve2DTziMoacGWAUh3i"})";
constexpr char kFixtureBody[] =
    R"({"choices":[{"text":"    \"\"\"\n    Aclicking a file object.\n\n    ","index":0,)"
    R"("logprobs":null,"finish_reason":"length"}],"created":1795901644,"model":"gpt-3.5-turbo",)"
    R"("system_fingerprint":"b4748-c392e5094","object":"text_completion","usage":)"
    R"({"completion_tokens":16,"prompt_tokens":7,"total_tokens":23},)"
    R"("id":"chatcmpl-1SkTgPW2RSsPupjI14SzU4nWw5HKumZt"})";

TEST(OpenAiShapeTest, StreamChunkHasTheFieldsOfLlamaServersChunk) {
  StreamTranslator t(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  const std::string event = t.Feed(ChunkMsg(0, "    "));
  ASSERT_TRUE(absl::StartsWith(event, "data: "));
  ASSERT_TRUE(absl::EndsWith(event, "\n\n"));
  const json ours = json::parse(event.substr(6), nullptr, false);
  const json theirs = json::parse(kFixtureStreamChunk, nullptr, false);
  ASSERT_FALSE(ours.is_discarded());
  ASSERT_FALSE(theirs.is_discarded());
  std::set<std::string> their_keys = Keys(theirs);
  their_keys.erase("system_fingerprint");  // Optional in OpenAI's schema.
  EXPECT_EQ(Keys(ours), their_keys);
  EXPECT_EQ(Keys(ours["choices"][0]), Keys(theirs["choices"][0]));
  EXPECT_EQ(ours["object"], theirs["object"]);
}

TEST(OpenAiShapeTest, BodyHasTheFieldsOfLlamaServersBody) {
  Aggregator a(Options(Endpoint::kCompletions), Meta(Endpoint::kCompletions));
  a.Add(CompleteMsg(0, v1::FINISH_REASON_LENGTH, 7, 16));
  const json ours = json::parse(a.Finish(), nullptr, false);
  const json theirs = json::parse(kFixtureBody, nullptr, false);
  ASSERT_FALSE(theirs.is_discarded());
  std::set<std::string> their_keys = Keys(theirs);
  their_keys.erase("system_fingerprint");
  EXPECT_EQ(Keys(ours), their_keys);
  std::set<std::string> our_choice_keys = Keys(ours["choices"][0]);
  our_choice_keys.erase("stop_reason");  // vLLM's extension.
  EXPECT_EQ(our_choice_keys, Keys(theirs["choices"][0]));
  std::set<std::string> our_usage_keys = Keys(ours["usage"]);
  our_usage_keys.erase("prompt_tokens_details");  // OpenAI's, absent from llama-server.
  EXPECT_EQ(our_usage_keys, Keys(theirs["usage"]));
  EXPECT_EQ(ours["usage"]["total_tokens"], theirs["usage"]["total_tokens"]);
}

// ---- helpers --------------------------------------------------------------------------------

TEST(OpenAiResponseTest, NewResponseMetaMakesPrefixedRandomIds) {
  const ResponseMeta a = NewResponseMeta(Endpoint::kCompletions, "m");
  const ResponseMeta b = NewResponseMeta(Endpoint::kChatCompletions, "m");
  EXPECT_TRUE(absl::StartsWith(a.id, "cmpl-"));
  EXPECT_EQ(a.id.size(), 5u + 32u);
  EXPECT_TRUE(absl::StartsWith(b.id, "chatcmpl-"));
  EXPECT_NE(a.id, NewResponseMeta(Endpoint::kCompletions, "m").id);
  EXPECT_GT(a.created, 1700000000);
  EXPECT_EQ(a.model, "m");
}

TEST(OpenAiResponseTest, FinishReasonMapping) {
  EXPECT_EQ(FinishReasonString(v1::FINISH_REASON_STOP), "stop");
  EXPECT_EQ(FinishReasonString(v1::FINISH_REASON_LENGTH), "length");
  EXPECT_EQ(FinishReasonString(v1::FINISH_REASON_TIMEOUT), "length");
  EXPECT_EQ(FinishReasonString(v1::FINISH_REASON_ABORT), "abort");
}

TEST(OpenAiResponseTest, ResponseOptionsForReadsTheRequest) {
  absl::StatusOr<ParsedRequest> p = ParseRequest(
      Endpoint::kCompletions,
      R"({"prompt":["a","b"],"n":3,"echo":true,"stream":true,)"
      R"("stream_options":{"include_usage":true}})");
  ASSERT_TRUE(p.ok()) << p.status();
  const ResponseOptions o = ResponseOptionsFor(*p);
  EXPECT_EQ(o.num_prompts, 2);
  EXPECT_EQ(o.n, 3);
  EXPECT_TRUE(o.include_usage);
  EXPECT_FALSE(o.logprobs);
  EXPECT_EQ(o.echo_prompts, std::vector<std::string>({"a", "b"}));
}

}  // namespace
}  // namespace glimpse::server::openai
