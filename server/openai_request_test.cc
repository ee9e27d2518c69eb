#include "server/openai_request.h"

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/openai_errors.h"

namespace glimpse::server::openai {
namespace {

namespace v1 = ::glimpse::v1;
constexpr Endpoint kCompletions = Endpoint::kCompletions;
constexpr Endpoint kChat = Endpoint::kChatCompletions;

ParsedRequest MustParse(Endpoint endpoint, const std::string& body) {
  absl::StatusOr<ParsedRequest> parsed = ParseRequest(endpoint, body);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << " for " << body;
  return parsed.ok() ? *std::move(parsed) : ParsedRequest{};
}

// Expects a 400 naming `param`; returns the message.
std::string ExpectParamError(Endpoint endpoint, const std::string& body,
                             const std::string& param) {
  absl::StatusOr<ParsedRequest> parsed = ParseRequest(endpoint, body);
  EXPECT_FALSE(parsed.ok()) << body;
  if (parsed.ok()) return "";
  const OpenAiError e = FromStatus(parsed.status());
  EXPECT_EQ(e.http_status, 400) << body;
  EXPECT_EQ(e.param.value_or("<none>"), param) << body << " → " << e.message;
  return e.message;
}

std::string Completion(const std::string& extra) {
  return R"({"model":"m","prompt":"hi")" + (extra.empty() ? "" : "," + extra) + "}";
}
std::string Chat(const std::string& extra) {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}])" +
         (extra.empty() ? "" : "," + extra) + "}";
}

// ---- JSON and prompt forms ------------------------------------------------------------------

TEST(OpenAiRequestTest, MalformedJsonIs400NamingBody) {
  ExpectParamError(kCompletions, R"({"prompt": "hi",)", "body");
  ExpectParamError(kCompletions, "", "body");
  ExpectParamError(kChat, "[1,2]", "body");
  ExpectParamError(kChat, "\"just a string\"", "body");
}

TEST(OpenAiRequestTest, StringPromptBecomesTextInput) {
  const ParsedRequest p = MustParse(kCompletions, R"({"model":"m","prompt":"Hello"})");
  ASSERT_EQ(p.prompts.size(), 1u);
  const v1::GenerateRequest r = BuildGenerateRequest(p, 0, "req-1");
  EXPECT_EQ(r.text(), "Hello");
  EXPECT_EQ(r.request_id(), "req-1");
  EXPECT_EQ(r.model(), "m");
  EXPECT_EQ(p.num_choices(), 1);
}

TEST(OpenAiRequestTest, TokenIdPromptBecomesTokenInput) {
  const ParsedRequest p = MustParse(kCompletions, R"({"prompt":[1, 450, 7483]})");
  ASSERT_EQ(p.prompts.size(), 1u);
  const v1::GenerateRequest r = BuildGenerateRequest(p, 0, "");
  ASSERT_TRUE(r.has_token_ids());
  EXPECT_EQ(r.token_ids().ids_size(), 3);
  EXPECT_EQ(r.token_ids().ids(2), 7483u);
  EXPECT_TRUE(p.model.empty());
}

TEST(OpenAiRequestTest, ArrayOfStringsIsABatchOfPrompts) {
  const ParsedRequest p = MustParse(kCompletions, R"({"prompt":["a","b","c"],"n":2})");
  ASSERT_EQ(p.prompts.size(), 3u);
  EXPECT_EQ(p.num_choices(), 6);
  EXPECT_EQ(BuildGenerateRequest(p, 1, "").text(), "b");
  EXPECT_EQ(BuildGenerateRequest(p, 2, "").sampling().n(), 2u);
}

TEST(OpenAiRequestTest, ArrayOfTokenArraysIsABatchOfTokenPrompts) {
  const ParsedRequest p = MustParse(kCompletions, R"({"prompt":[[1,2],[3]]})");
  ASSERT_EQ(p.prompts.size(), 2u);
  EXPECT_TRUE(p.prompts[1].is_tokens);
  EXPECT_EQ(BuildGenerateRequest(p, 1, "").token_ids().ids(0), 3u);
}

TEST(OpenAiRequestTest, BadPromptFormsAre400NamingPrompt) {
  ExpectParamError(kCompletions, R"({"model":"m"})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":""})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":42})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[1,"a"]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":["a",1]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[1,-5]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[1,4294967296]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[[1],[]]})", "prompt");
  ExpectParamError(kCompletions, R"({"prompt":[1.5]})", "prompt");
}

TEST(OpenAiRequestTest, UnknownFieldsAreIgnored) {
  const ParsedRequest p = MustParse(
      kCompletions, Completion(R"("frobnicate":{"x":[1,2]},"tools":[],"metadata":{"a":"b"})"));
  EXPECT_EQ(p.prompts.size(), 1u);
}

TEST(OpenAiRequestTest, NullMeansNotGiven) {
  const ParsedRequest p = MustParse(
      kChat, Chat(R"("temperature":null,"stop":null,"n":null,"stream_options":null)"));
  EXPECT_FALSE(p.request.sampling().has_temperature());
  EXPECT_EQ(p.request.stopping().stop_size(), 0);
  EXPECT_EQ(p.n, 1);
}

// ---- messages -------------------------------------------------------------------------------

TEST(OpenAiRequestTest, MessagesKeepRolesAndContent) {
  const ParsedRequest p = MustParse(kChat, R"({"messages":[
      {"role":"system","content":"be brief"},
      {"role":"developer","content":"dev"},
      {"role":"user","content":"hi","name":"bob"},
      {"role":"assistant","content":null},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]})");
  ASSERT_EQ(p.messages.size(), 5u);
  EXPECT_EQ(p.messages[0].role, "system");
  EXPECT_EQ(p.messages[1].role, "system");  // developer → system.
  EXPECT_EQ(p.messages[2].content, "hi");
  EXPECT_EQ(p.messages[3].role, "assistant");
  EXPECT_EQ(p.messages[3].content, "");
  EXPECT_EQ(p.messages[4].content, "ab");
  EXPECT_TRUE(p.chat());
  EXPECT_TRUE(p.prompts.empty());
  EXPECT_TRUE(p.add_generation_prompt);
  // The rendered template carries its own BOS.
  ASSERT_TRUE(p.request.has_add_special_tokens());
  EXPECT_FALSE(p.request.add_special_tokens());
}

TEST(OpenAiRequestTest, BadMessagesAre400NamingTheField) {
  ExpectParamError(kChat, R"({"model":"m"})", "messages");
  ExpectParamError(kChat, R"({"messages":[]})", "messages");
  ExpectParamError(kChat, R"({"messages":"hi"})", "messages");
  ExpectParamError(kChat, R"({"messages":[1]})", "messages[0]");
  ExpectParamError(kChat, R"({"messages":[{"content":"x"}]})", "messages[0].role");
  ExpectParamError(kChat, R"({"messages":[{"role":"tool","content":"x"}]})", "messages[0].role");
  ExpectParamError(kChat, R"({"messages":[{"role":"user"}]})", "messages[0].content");
  ExpectParamError(kChat, R"({"messages":[{"role":"user","content":5}]})",
                   "messages[0].content");
  const std::string msg = ExpectParamError(
      kChat,
      R"({"messages":[{"role":"user","content":"a"},{"role":"user","content":[)"
      R"({"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"u"}}]}]})",
      "messages[1].content[1].type");
  EXPECT_NE(msg.find("image_url"), std::string::npos);
  ExpectParamError(kChat, R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})",
                   "messages[0].content[0].text");
}

// ---- sampling ---------------------------------------------------------------------------------

TEST(OpenAiRequestTest, SamplingParametersMapOntoSamplingParams) {
  const ParsedRequest p = MustParse(
      kCompletions,
      Completion(R"("temperature":0.5,"top_p":0.9,"n":3,"presence_penalty":-1.5,)"
                 R"("frequency_penalty":2,"seed":42,"top_k":40,"min_p":0.05,)"
                 R"("repetition_penalty":1.1,"logit_bias":{"50256":-100,"7":5.5},"user":"u")"));
  const v1::SamplingParams& s = p.request.sampling();
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.n(), 3u);
  EXPECT_EQ(p.n, 3);
  EXPECT_FLOAT_EQ(s.presence_penalty(), -1.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), 2.0f);
  EXPECT_EQ(s.seed(), 42u);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_FLOAT_EQ(s.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.1f);
  ASSERT_EQ(s.logit_bias_size(), 2);
  EXPECT_FLOAT_EQ(s.logit_bias().at(50256), -100.0f);
  EXPECT_FLOAT_EQ(s.logit_bias().at(7), 5.5f);
}

TEST(OpenAiRequestTest, UnsetSamplingFieldsStayUnsetForServerDefaults) {
  const ParsedRequest p = MustParse(kChat, Chat(""));
  const v1::SamplingParams& s = p.request.sampling();
  EXPECT_FALSE(s.has_temperature());
  EXPECT_FALSE(s.has_top_p());
  EXPECT_FALSE(s.has_n());
  EXPECT_FALSE(s.has_seed());
  EXPECT_EQ(p.n, 1);
}

TEST(OpenAiRequestTest, IntegralFloatIsAcceptedAsInteger) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("n":2.0)")).n, 2);
  ExpectParamError(kChat, Chat(R"("n":2.5)"), "n");
}

TEST(OpenAiRequestTest, NegativeSeedWrapsToUint64) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("seed":-1)")).request.sampling().seed(), ~uint64_t{0});
  ExpectParamError(kChat, Chat(R"("seed":"42")"), "seed");
}

TEST(OpenAiRequestTest, SamplingRangesAndTypesAre400NamingTheField) {
  ExpectParamError(kChat, Chat(R"("temperature":2.01)"), "temperature");
  ExpectParamError(kChat, Chat(R"("temperature":-0.1)"), "temperature");
  ExpectParamError(kChat, Chat(R"("temperature":"hot")"), "temperature");
  ExpectParamError(kChat, Chat(R"("top_p":0)"), "top_p");
  ExpectParamError(kChat, Chat(R"("top_p":1.5)"), "top_p");
  ExpectParamError(kChat, Chat(R"("n":0)"), "n");
  ExpectParamError(kChat, Chat(R"("n":17)"), "n");
  ExpectParamError(kChat, Chat(R"("n":true)"), "n");
  ExpectParamError(kChat, Chat(R"("presence_penalty":2.5)"), "presence_penalty");
  ExpectParamError(kChat, Chat(R"("frequency_penalty":-3)"), "frequency_penalty");
  ExpectParamError(kChat, Chat(R"("logit_bias":{"12":101})"), "logit_bias");
  ExpectParamError(kChat, Chat(R"("logit_bias":{"abc":1})"), "logit_bias");
  ExpectParamError(kChat, Chat(R"("logit_bias":[1])"), "logit_bias");
  ExpectParamError(kChat, Chat(R"("top_k":-2)"), "top_k");
  ExpectParamError(kChat, Chat(R"("min_p":1.5)"), "min_p");
  ExpectParamError(kChat, Chat(R"("repetition_penalty":0)"), "repetition_penalty");
  ExpectParamError(kChat, Chat(R"("user":5)"), "user");
  ExpectParamError(kChat, Chat(R"("model":5)"), "model");
  const std::string msg = ExpectParamError(kChat, Chat(R"("temperature":3)"), "temperature");
  EXPECT_NE(msg.find("[0, 2]"), std::string::npos) << msg;
}

// ---- stopping ---------------------------------------------------------------------------------

TEST(OpenAiRequestTest, CompletionsMaxTokensDefaultsTo16) {
  EXPECT_EQ(MustParse(kCompletions, Completion("")).request.stopping().max_tokens(), 16u);
  EXPECT_EQ(MustParse(kCompletions, Completion(R"("max_tokens":100)"))
                .request.stopping().max_tokens(),
            100u);
}

TEST(OpenAiRequestTest, ChatMaxTokensDefaultsToUnsetAndPrefersMaxCompletionTokens) {
  EXPECT_FALSE(MustParse(kChat, Chat("")).request.stopping().has_max_tokens());
  EXPECT_EQ(MustParse(kChat, Chat(R"("max_tokens":10)")).request.stopping().max_tokens(), 10u);
  EXPECT_EQ(MustParse(kChat, Chat(R"("max_tokens":10,"max_completion_tokens":20)"))
                .request.stopping().max_tokens(),
            20u);
  ExpectParamError(kChat, Chat(R"("max_completion_tokens":0)"), "max_completion_tokens");
}

TEST(OpenAiRequestTest, StopAcceptsStringOrListAndDropsEmptyStrings) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("stop":"\n")")).request.stopping().stop(0), "\n");
  const ParsedRequest p = MustParse(kChat, Chat(R"("stop":["a","","b"])"));
  ASSERT_EQ(p.request.stopping().stop_size(), 2);
  EXPECT_EQ(p.request.stopping().stop(1), "b");
}

TEST(OpenAiRequestTest, StopAllowsUpTo32StringsLikeVllm) {
  std::string list;
  for (int i = 0; i < 32; ++i) list += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  EXPECT_EQ(MustParse(kChat, Chat("\"stop\":[" + list + "]")).request.stopping().stop_size(),
            32);
  ExpectParamError(kChat, Chat("\"stop\":[" + list + ",\"x\"]"), "stop");
}

TEST(OpenAiRequestTest, StoppingExtrasMapOntoStoppingOptions) {
  const ParsedRequest p = MustParse(
      kCompletions,
      Completion(R"("max_tokens":50,"min_tokens":5,"ignore_eos":true,"stop_token_ids":[2,3],)"
                 R"("include_stop_str_in_output":true,"truncate_prompt_tokens":-1)"));
  const v1::StoppingOptions& s = p.request.stopping();
  EXPECT_EQ(s.max_tokens(), 50u);
  EXPECT_EQ(s.min_tokens(), 5u);
  EXPECT_TRUE(s.ignore_eos());
  ASSERT_EQ(s.stop_token_ids_size(), 2);
  EXPECT_TRUE(s.include_stop_in_output());
  EXPECT_EQ(s.truncate_prompt_tokens(), -1);
}

TEST(OpenAiRequestTest, StoppingRangesAndTypesAre400NamingTheField) {
  ExpectParamError(kCompletions, Completion(R"("max_tokens":0)"), "max_tokens");
  ExpectParamError(kCompletions, Completion(R"("max_tokens":"10")"), "max_tokens");
  ExpectParamError(kCompletions, Completion(R"("max_tokens":-1)"), "max_tokens");
  ExpectParamError(kCompletions, Completion(R"("stop":5)"), "stop");
  ExpectParamError(kCompletions, Completion(R"("stop":["a",5])"), "stop");
  ExpectParamError(kCompletions, Completion(R"("min_tokens":-1)"), "min_tokens");
  ExpectParamError(kCompletions, Completion(R"("ignore_eos":"yes")"), "ignore_eos");
  ExpectParamError(kCompletions, Completion(R"("stop_token_ids":[-1])"), "stop_token_ids");
  ExpectParamError(kCompletions, Completion(R"("truncate_prompt_tokens":0)"),
                   "truncate_prompt_tokens");
}

// ---- output ---------------------------------------------------------------------------------

TEST(OpenAiRequestTest, StreamAndIncludeUsage) {
  const ParsedRequest p =
      MustParse(kChat, Chat(R"("stream":true,"stream_options":{"include_usage":true})"));
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_FALSE(p.request.output().final_only());
  EXPECT_TRUE(p.request.output().detokenize());
  const ParsedRequest q = MustParse(kChat, Chat(""));
  EXPECT_FALSE(q.stream);
  EXPECT_TRUE(q.request.output().final_only());
  ExpectParamError(kChat, Chat(R"("stream":"true")"), "stream");
  ExpectParamError(kChat, Chat(R"("stream_options":{"include_usage":true})"), "stream_options");
  ExpectParamError(kChat, Chat(R"("stream":true,"stream_options":{"include_usage":1})"),
                   "stream_options.include_usage");
}

TEST(OpenAiRequestTest, TokenIdPromptsStillAskForText) {
  EXPECT_TRUE(MustParse(kCompletions, R"({"prompt":[1,2]})").request.output().detokenize());
}

TEST(OpenAiRequestTest, CompletionsLogprobsIsTopNUpTo5) {
  const ParsedRequest p = MustParse(kCompletions, Completion(R"("logprobs":3)"));
  ASSERT_TRUE(p.logprobs.has_value());
  EXPECT_EQ(*p.logprobs, 3);
  EXPECT_EQ(p.request.output().logprobs(), 3u);
  EXPECT_EQ(*MustParse(kCompletions, Completion(R"("logprobs":0)")).logprobs, 0);
  EXPECT_FALSE(MustParse(kCompletions, Completion("")).request.output().has_logprobs());
  ExpectParamError(kCompletions, Completion(R"("logprobs":6)"), "logprobs");
  ExpectParamError(kCompletions, Completion(R"("logprobs":true)"), "logprobs");
}

TEST(OpenAiRequestTest, ChatLogprobsIsBoolWithTopLogprobsUpTo20) {
  EXPECT_EQ(*MustParse(kChat, Chat(R"("logprobs":true)")).logprobs, 0);
  EXPECT_EQ(MustParse(kChat, Chat(R"("logprobs":true,"top_logprobs":20)"))
                .request.output().logprobs(),
            20u);
  EXPECT_FALSE(MustParse(kChat, Chat(R"("logprobs":false)")).logprobs.has_value());
  ExpectParamError(kChat, Chat(R"("logprobs":true,"top_logprobs":21)"), "top_logprobs");
  ExpectParamError(kChat, Chat(R"("top_logprobs":2)"), "top_logprobs");
  ExpectParamError(kChat, Chat(R"("logprobs":3)"), "logprobs");
}

TEST(OpenAiRequestTest, EchoOnlyForTextPromptsWithoutLogprobs) {
  EXPECT_TRUE(MustParse(kCompletions, Completion(R"("echo":true)")).echo);
  ExpectParamError(kCompletions, R"({"prompt":[1,2],"echo":true})", "echo");
  ExpectParamError(kCompletions, Completion(R"("echo":true,"logprobs":1)"), "echo");
  ExpectParamError(kCompletions, Completion(R"("echo":1)"), "echo");
}

TEST(OpenAiRequestTest, BestOfOtherThanNAndSuffixAreRejected) {
  MustParse(kCompletions, Completion(R"("best_of":2,"n":2,"suffix":"")"));
  ExpectParamError(kCompletions, Completion(R"("best_of":3,"n":2)"), "best_of");
  ExpectParamError(kCompletions, Completion(R"("suffix":"end")"), "suffix");
}

TEST(OpenAiRequestTest, OutputExtrasMapOntoOutputOptions) {
  const ParsedRequest p = MustParse(
      kCompletions,
      Completion(R"("skip_special_tokens":false,"spaces_between_special_tokens":false,)"
                 R"("add_special_tokens":false)"));
  EXPECT_FALSE(p.request.output().skip_special_tokens());
  EXPECT_TRUE(p.request.output().has_skip_special_tokens());
  EXPECT_FALSE(p.request.output().spaces_between_special_tokens());
  ASSERT_TRUE(p.request.has_add_special_tokens());
  EXPECT_FALSE(p.request.add_special_tokens());
  EXPECT_FALSE(MustParse(kCompletions, Completion("")).request.has_add_special_tokens());
}

TEST(OpenAiRequestTest, ResponseFormatMapsOntoGuidedDecoding) {
  EXPECT_FALSE(MustParse(kChat, Chat(R"("response_format":{"type":"text"})")).request.has_guided());
  EXPECT_TRUE(MustParse(kChat, Chat(R"("response_format":{"type":"json_object"})"))
                  .request.guided().json_object());
  EXPECT_EQ(MustParse(kChat, Chat(R"("response_format":{"type":"json_schema",)"
                                  R"("json_schema":{"name":"x","schema":{"type":"object"}}})"))
                .request.guided().json_schema(),
            R"({"type":"object"})");
  ExpectParamError(kChat, Chat(R"("response_format":{"type":"yaml"})"), "response_format.type");
  ExpectParamError(kChat, Chat(R"("response_format":{"type":"json_schema"})"),
                   "response_format.json_schema.schema");
}

TEST(OpenAiRequestTest, AddGenerationPromptIsReadForChat) {
  EXPECT_FALSE(MustParse(kChat, Chat(R"("add_generation_prompt":false)")).add_generation_prompt);
  ExpectParamError(kChat, Chat(R"("add_generation_prompt":"no")"), "add_generation_prompt");
}

// ---- scheduling and glimpse knobs -----------------------------------------------------------

TEST(OpenAiRequestTest, VllmPriorityIsNegatedIntoGlimpsePriority) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("priority":5)")).request.scheduling().priority(), -5);
  EXPECT_EQ(MustParse(kChat, Chat(R"("priority":-3)")).request.scheduling().priority(), 3);
  EXPECT_EQ(MustParse(kChat, Chat("")).request.scheduling().priority(), 0);
  ExpectParamError(kChat, Chat(R"("priority":-2147483648)"), "priority");
  ExpectParamError(kChat, Chat(R"("priority":"high")"), "priority");
}

TEST(OpenAiRequestTest, GlimpseSpeculationKnob) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("glimpse_speculation":"off")")).request.speculation().mode(),
            v1::SPEC_MODE_OFF);
  EXPECT_EQ(MustParse(kChat, Chat(R"("glimpse_speculation":"on")")).request.speculation().mode(),
            v1::SPEC_MODE_ON);
  const ParsedRequest p = MustParse(
      kChat, Chat(R"("glimpse_speculation":{"max_draft_tokens":4,"drafter":"ngram"})"));
  EXPECT_EQ(p.request.speculation().max_draft_tokens(), 4u);
  EXPECT_EQ(p.request.speculation().drafter(), v1::DRAFTER_NGRAM);
  ExpectParamError(kChat, Chat(R"("glimpse_speculation":"maybe")"), "glimpse_speculation");
  ExpectParamError(kChat, Chat(R"("glimpse_speculation":7)"), "glimpse_speculation");
  ExpectParamError(kChat, Chat(R"("glimpse_speculation":{"max_draft_tokens":-1})"),
                   "glimpse_speculation.max_draft_tokens");
  ExpectParamError(kChat, Chat(R"("glimpse_speculation":{"max_drafts":2})"),
                   "glimpse_speculation.max_drafts");
}

TEST(OpenAiRequestTest, GlimpseKvKnobs) {
  EXPECT_EQ(MustParse(kChat, Chat(R"("glimpse_kv_budget_tokens":256)")).request.kv()
                .budget_tokens(),
            256u);
  const ParsedRequest p = MustParse(
      kChat, Chat(R"("glimpse_kv_budget_ratio":0.25,"glimpse_kv_eviction":"snapkv")"));
  EXPECT_FLOAT_EQ(p.request.kv().budget_ratio(), 0.25f);
  EXPECT_EQ(p.request.kv().eviction(), v1::EVICTION_POLICY_SNAPKV);
  EXPECT_EQ(MustParse(kChat, Chat(R"("cache_salt":"tenant")")).request.kv().cache_salt(),
            "tenant");
  ExpectParamError(kChat, Chat(R"("glimpse_kv_budget_ratio":0)"), "glimpse_kv_budget_ratio");
  ExpectParamError(kChat, Chat(R"("glimpse_kv_budget_tokens":0)"), "glimpse_kv_budget_tokens");
  ExpectParamError(kChat, Chat(R"("glimpse_kv_budget_tokens":8,"glimpse_kv_budget_ratio":0.5)"),
                   "glimpse_kv_budget_ratio");
  ExpectParamError(kChat, Chat(R"("glimpse_kv_eviction":"lru")"), "glimpse_kv_eviction");
}

TEST(OpenAiRequestTest, BatchOver64PromptsIsRejected) {
  std::string list;
  for (int i = 0; i < 65; ++i) list += i ? ",\"p\"" : "\"p\"";
  ExpectParamError(kCompletions, "{\"prompt\":[" + list + "]}", "prompt");
}

TEST(OpenAiRequestTest, HostileBodiesGet400NotACrash) {
  ExpectParamError(kChat, std::string(100000, '[') , "body");
  ExpectParamError(kChat, std::string(100000, '[') + std::string(100000, ']'), "body");
  ExpectParamError(kChat, "{\"messages\":\"\xff\xfe\"}", "body");  // Invalid UTF-8.
  ExpectParamError(kChat, Chat(R"("temperature":1e400)"), "body");  // Not representable.
  ExpectParamError(kChat, Chat(R"("n":1e300)"), "n");
  ExpectParamError(kChat, Chat(R"("n":18446744073709551616)"), "n");
  ExpectParamError(kChat, Chat("") + " trailing", "body");
}

}  // namespace
}  // namespace glimpse::server::openai
