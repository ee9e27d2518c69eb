#include "model/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"

namespace glimpse::model {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Relative to the workspace root (the runfiles root under Bazel).
constexpr char kFixtureDir[] = "tests/data/chat_templates/";
constexpr char kBundledModelPath[] = "models/tinycode-4m-f16.gguf";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json ReadCases() {
  return nlohmann::json::parse(ReadFile(std::string(kFixtureDir) + "cases.json"));
}

ChatTemplate FixtureTemplate(const nlohmann::json& spec) {
  return ChatTemplate::FromText(ReadFile(kFixtureDir + spec["file"].get<std::string>()),
                                spec["bos_token"].get<std::string>(),
                                spec["eos_token"].get<std::string>());
}

std::vector<ChatMessage> ToMessages(const nlohmann::json& list) {
  std::vector<ChatMessage> messages;
  for (const nlohmann::json& m : list) {
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

ChatTemplate Family(const std::string& fixture) {
  const nlohmann::json cases = ReadCases();
  return FixtureTemplate(cases["templates"][fixture]);
}

TEST(ChatTemplateTest, DetectsTheFamilyOfEveryFixtureTemplate) {
  const nlohmann::json cases = ReadCases();
  ASSERT_EQ(cases["templates"].size(), 8u);
  for (const auto& [fixture, spec] : cases["templates"].items()) {
    const std::string text = ReadFile(kFixtureDir + spec["file"].get<std::string>());
    EXPECT_EQ(ChatTemplateFamilyName(DetectChatTemplate(text)), spec["family"].get<std::string>())
        << fixture;
    EXPECT_EQ(FixtureTemplate(spec).name(), fixture) << "name() of " << fixture;
  }
}

TEST(ChatTemplateTest, EveryCaseRendersExactlyAsJinja2Does) {
  const nlohmann::json cases = ReadCases();
  ASSERT_GE(cases["cases"].size(), 20u);
  int num_renders = 0;
  int num_errors = 0;
  for (const auto& [fixture, spec] : cases["templates"].items()) {
    const ChatTemplate chat_template = FixtureTemplate(spec);
    for (const nlohmann::json& c : cases["cases"]) {
      SCOPED_TRACE(fixture + " / " + c["name"].get<std::string>());
      const std::vector<ChatMessage> messages = ToMessages(c["messages"]);
      const auto rendered = chat_template.Render(messages, c["add_generation_prompt"].get<bool>());
      const nlohmann::json& expected = c["expected"][fixture];
      if (expected.contains("output")) {
        ASSERT_TRUE(rendered.ok()) << rendered.status();
        EXPECT_EQ(*rendered, expected["output"].get<std::string>());
        ++num_renders;
      } else {
        EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument)
            << "jinja2 raised: " << expected["error"].get<std::string>();
        ++num_errors;
      }
    }
  }
  // Both outcomes are exercised.
  EXPECT_GT(num_renders, 150);
  EXPECT_GT(num_errors, 20);
}

TEST(ChatTemplateTest, EmptyOrUnrecognisedTemplateUsesTheDefault) {
  EXPECT_EQ(DetectChatTemplate(""), ChatTemplateFamily::kDefault);
  EXPECT_EQ(DetectChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}"),
            ChatTemplateFamily::kDefault);
  const ChatTemplate chat_template = ChatTemplate::FromText("", "<s>", "</s>");
  EXPECT_EQ(chat_template.family(), ChatTemplateFamily::kDefault);
  EXPECT_EQ(chat_template.name(), "default");
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(chat_template.Render(messages, true).value(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(chat_template.Render(messages, false).value(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateTest, FamilyNamesAreStable) {
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kChatMl), "chatml");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kLlama2), "llama2");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kLlama3), "llama3");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kMistral), "mistral");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kZephyr), "zephyr");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kGemma), "gemma");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kPhi3), "phi3");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kDefault), "default");
}

TEST(ChatTemplateTest, RejectsAnEmptyMessageList) {
  for (const std::string fixture : {"chatml", "llama2", "gemma"}) {
    const auto rendered = Family(fixture).Render({}, true);
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument) << fixture;
    EXPECT_THAT(rendered.status().message(), HasSubstr("at least one message"));
  }
}

TEST(ChatTemplateTest, RejectsUnknownRolesNamingTheMessage) {
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"tool", "secret output"}};
  for (const std::string fixture : {"chatml", "llama3", "zephyr", "phi3"}) {
    const auto rendered = Family(fixture).Render(messages, true);
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument) << fixture;
    EXPECT_THAT(rendered.status().message(), HasSubstr("messages[1].role 'tool'"));
    EXPECT_THAT(rendered.status().message(), Not(HasSubstr("secret")));  // Never echo content.
  }
  EXPECT_EQ(ChatTemplate::FromText("", "", "").Render(messages, true).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, AlternationErrorsNameTheOffendingMessage) {
  const std::vector<ChatMessage> two_users = {
      {"system", "s"}, {"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"user", "d"}};
  for (const std::string fixture : {"llama2", "mistral", "gemma3"}) {
    const auto rendered = Family(fixture).Render(two_users, true);
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument) << fixture;
    EXPECT_THAT(rendered.status().message(), HasSubstr("messages[4] has role 'user'"));
    EXPECT_THAT(rendered.status().message(), HasSubstr("an 'assistant' message"));
  }
  const std::vector<ChatMessage> starts_with_assistant = {{"assistant", "a"}, {"user", "b"}};
  const auto rendered = Family("gemma").Render(starts_with_assistant, true);
  EXPECT_THAT(rendered.status().message(), HasSubstr("messages[0] has role 'assistant'"));
  EXPECT_THAT(rendered.status().message(), HasSubstr("a 'user' message"));
}

TEST(ChatTemplateTest, GemmaWithoutSystemSupportRejectsASystemMessage) {
  const std::vector<ChatMessage> messages = {{"system", "s"}, {"user", "u"}};
  const auto rendered = Family("gemma").Render(messages, true);
  EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rendered.status().message(), HasSubstr("messages[0] has role 'system'"));
  // Gemma 3's template folds it into the first user turn instead.
  EXPECT_EQ(Family("gemma3").Render(messages, true).value(),
            "<bos><start_of_turn>user\ns\n\nu<end_of_turn>\n<start_of_turn>model\n");
}

TEST(ChatTemplateTest, MistralRejectsASystemMessageAfterTheFirst) {
  const std::vector<ChatMessage> messages = {{"user", "u"}, {"system", "s"}};
  const auto rendered = Family("mistral").Render(messages, true);
  EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rendered.status().message(), HasSubstr("messages[1] has role 'system'"));
}

TEST(ChatTemplateTest, StripRemovesPythonWhitespaceButNotMalformedUtf8) {
  const ChatTemplate llama3 =
      ChatTemplate::FromText(ReadFile(std::string(kFixtureDir) + "llama3.jinja"), "<B>", "<E>");
  // U+2003 EM SPACE and U+0085 NEL are whitespace to Python; a lone 0xE2 byte is not.
  const std::vector<ChatMessage> messages = {{"user", "\xE2\x80\x83\xC2\x85x\xE2\x80\x83"},
                                             {"assistant", "\xE2 y \xE2"}};
  EXPECT_EQ(llama3.Render(messages, false).value(),
            "<B><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n\xE2 y \xE2<|eot_id|>");
}

TEST(ChatTemplateTest, FromGgufMetadataWithoutTemplateIsDefault) {
  auto gguf = GgufFile::Open(kBundledModelPath);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  ASSERT_EQ((*gguf)->Find("tokenizer.chat_template"), nullptr);
  const ChatTemplate chat_template = ChatTemplate::FromGgufMetadata(**gguf);
  EXPECT_EQ(chat_template.family(), ChatTemplateFamily::kDefault);
  EXPECT_EQ(chat_template.name(), "default");
}

TEST(ChatTemplateTest, FromGgufMetadataReadsTemplateAndSpecialTokenTexts) {
  GgufWriter writer;
  writer.SetString("general.architecture", "llama");
  writer.SetString("tokenizer.ggml.model", "llama");
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "<BOS>", "<EOS>", "a"};
  writer.SetStringArray("tokenizer.ggml.tokens", tokens);
  writer.SetUint32("tokenizer.ggml.bos_token_id", 3);
  writer.SetUint32("tokenizer.ggml.eos_token_id", 4);
  writer.SetString("tokenizer.chat_template", ReadFile(std::string(kFixtureDir) + "llama2.jinja"));
  const char* tmpdir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmpdir != nullptr ? tmpdir : "/tmp") + "/chat.gguf";
  ASSERT_TRUE(writer.WriteFile(path).ok());
  auto gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  const ChatTemplate chat_template = ChatTemplate::FromGgufMetadata(**gguf);
  EXPECT_EQ(chat_template.family(), ChatTemplateFamily::kLlama2);
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"assistant", "Yo"}};
  EXPECT_EQ(chat_template.Render(messages, true).value(), "<BOS>[INST] Hi [/INST] Yo <EOS>");
}

}  // namespace
}  // namespace glimpse::model
