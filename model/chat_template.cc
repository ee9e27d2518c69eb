#include "model/chat_template.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace glimpse::model {
namespace {

constexpr std::string_view kSystem = "system";
constexpr std::string_view kUser = "user";
constexpr std::string_view kAssistant = "assistant";

bool Contains(std::string_view text, std::string_view marker) {
  return text.find(marker) != std::string_view::npos;
}

// Python's str.isspace() set (what jinja2's `trim` filter and str.strip() remove).
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Decodes the UTF-8 sequence of `len` bytes at `s`; returns 0xFFFFFFFF when it is malformed
// (malformed bytes are never whitespace, so stripping stops at them).
uint32_t DecodeUtf8(const unsigned char* s, size_t len) {
  constexpr uint32_t kBad = 0xFFFFFFFF;
  if (len == 1) return s[0] < 0x80 ? s[0] : kBad;
  uint32_t c = 0;
  if (len == 2 && (s[0] & 0xE0) == 0xC0) {
    c = s[0] & 0x1F;
  } else if (len == 3 && (s[0] & 0xF0) == 0xE0) {
    c = s[0] & 0x0F;
  } else if (len == 4 && (s[0] & 0xF8) == 0xF0) {
    c = s[0] & 0x07;
  } else {
    return kBad;
  }
  for (size_t i = 1; i < len; ++i) {
    if ((s[i] & 0xC0) != 0x80) return kBad;
    c = (c << 6) | (s[i] & 0x3F);
  }
  return c;
}

// Length of the UTF-8 sequence that starts with `lead` (1 for a malformed lead byte).
size_t Utf8Length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return lead < 0xF8 ? 4 : 1;
}

// Python's str.strip() with no argument, on UTF-8 text.
std::string_view PyStrip(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  size_t begin = 0;
  size_t end = text.size();
  while (begin < end) {
    const size_t len = Utf8Length(bytes[begin]);
    if (begin + len > end || !IsPythonSpace(DecodeUtf8(bytes + begin, len))) break;
    begin += len;
  }
  while (end > begin) {
    // Step back over continuation bytes (at most 3) to the start of the last character.
    size_t start = end - 1;
    while (start > begin && end - start < 4 && (bytes[start] & 0xC0) == 0x80) --start;
    if (!IsPythonSpace(DecodeUtf8(bytes + start, end - start))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

absl::Status CheckRoles(std::span<const ChatMessage> messages) {
  if (messages.empty()) {
    return absl::InvalidArgumentError("messages must contain at least one message");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != kSystem && role != kUser && role != kAssistant) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role '", role,
                       "' is not supported; expected 'system', 'user' or 'assistant'"));
    }
  }
  return absl::OkStatus();
}

// The canonical llama2/mistral/gemma templates require, after an optional leading system
// message, that the i-th remaining message is a user message exactly when i is even.
// `offset` is the index of loop_messages[0] in the caller's list, for the error message.
absl::Status CheckAlternation(const ChatMessage& message, size_t loop_index, size_t offset,
                              ChatTemplateFamily family, bool leading_system_allowed) {
  const bool expect_user = loop_index % 2 == 0;
  if ((message.role == kUser) == expect_user) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "messages[", loop_index + offset, "] has role '", message.role, "' where the ",
      std::string(ChatTemplateFamilyName(family)), " chat template expects ",
      expect_user ? "a 'user'" : "an 'assistant'",
      " message: ", leading_system_allowed ? "after an optional leading system message, " : "",
      "turns must alternate user/assistant, starting with user"));
}

}  // namespace

std::string_view ChatTemplateFamilyName(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::kChatMl:
      return "chatml";
    case ChatTemplateFamily::kLlama2:
      return "llama2";
    case ChatTemplateFamily::kLlama3:
      return "llama3";
    case ChatTemplateFamily::kMistral:
      return "mistral";
    case ChatTemplateFamily::kZephyr:
      return "zephyr";
    case ChatTemplateFamily::kGemma:
      return "gemma";
    case ChatTemplateFamily::kPhi3:
      return "phi3";
    case ChatTemplateFamily::kDefault:
      return "default";
  }
  return "unknown";
}

ChatTemplateFamily DetectChatTemplate(std::string_view text) {
  // Each family's turn delimiters are tokens no other family uses, so one or two markers
  // suffice. The order only matters for the "<|user|>" families, told apart by how a turn ends.
  if (Contains(text, "<|im_start|>")) return ChatTemplateFamily::kChatMl;
  if (Contains(text, "<|start_header_id|>")) return ChatTemplateFamily::kLlama3;
  if (Contains(text, "<start_of_turn>")) return ChatTemplateFamily::kGemma;
  if (Contains(text, "[INST]")) {
    return Contains(text, "<<SYS>>") ? ChatTemplateFamily::kLlama2 : ChatTemplateFamily::kMistral;
  }
  if (Contains(text, "<|user|>") && Contains(text, "<|assistant|>")) {
    if (Contains(text, "<|end|>")) return ChatTemplateFamily::kPhi3;
    if (Contains(text, "eos_token") || Contains(text, "</s>")) return ChatTemplateFamily::kZephyr;
  }
  return ChatTemplateFamily::kDefault;
}

ChatTemplate::ChatTemplate(ChatTemplateFamily family, bool gemma_folds_system, std::string bos_text,
                           std::string eos_text)
    : family_(family),
      gemma_folds_system_(gemma_folds_system),
      bos_text_(std::move(bos_text)),
      eos_text_(std::move(eos_text)) {}

ChatTemplate ChatTemplate::FromText(std::string_view template_text, std::string bos_text,
                                    std::string eos_text) {
  const ChatTemplateFamily family = DetectChatTemplate(template_text);
  // Gemma 3's template builds `first_user_prefix` from the system message; Gemma 1/2's raise.
  const bool gemma_folds_system =
      family == ChatTemplateFamily::kGemma && Contains(template_text, "first_user_prefix");
  return ChatTemplate(family, gemma_folds_system, std::move(bos_text), std::move(eos_text));
}

ChatTemplate ChatTemplate::FromGgufMetadata(const GgufFile& gguf) {
  std::string text;
  if (auto value = gguf.GetString("tokenizer.chat_template"); value.ok()) text = *value;
  std::string bos_text;
  std::string eos_text;
  if (auto tokens = gguf.GetStringArray("tokenizer.ggml.tokens"); tokens.ok()) {
    auto token_text = [&](std::string_view key, int64_t default_id) -> std::string {
      auto id = gguf.GetInt(key);
      const int64_t token_id = id.ok() ? *id : default_id;
      if (token_id < 0 || token_id >= static_cast<int64_t>(tokens->size())) return "";
      return (*tokens)[static_cast<size_t>(token_id)];
    };
    bos_text = token_text("tokenizer.ggml.bos_token_id", 1);
    eos_text = token_text("tokenizer.ggml.eos_token_id", 2);
  }
  return FromText(text, std::move(bos_text), std::move(eos_text));
}

std::string ChatTemplate::name() const {
  if (family_ == ChatTemplateFamily::kGemma && gemma_folds_system_) return "gemma3";
  return std::string(ChatTemplateFamilyName(family_));
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  if (absl::Status status = CheckRoles(messages); !status.ok()) return status;
  std::string out;
  switch (family_) {
    case ChatTemplateFamily::kChatMl:
    case ChatTemplateFamily::kDefault:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    case ChatTemplateFamily::kLlama2:
      return RenderLlama2(messages);
    case ChatTemplateFamily::kLlama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += bos_text_;
        absl::StrAppend(&out, "<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n",
                        std::string(PyStrip(messages[i].content)), "<|eot_id|>");
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatTemplateFamily::kMistral:
      return RenderMistral(messages);
    case ChatTemplateFamily::kZephyr:
      // The template's `{{ ... }}` lines keep their newline (trim_blocks only eats newlines
      // after block tags), hence the "\n" after each EOS and after the generation prompt.
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|", m.role, "|>\n", m.content, eos_text_, "\n");
      }
      if (add_generation_prompt) out += "<|assistant|>\n";
      return out;
    case ChatTemplateFamily::kGemma:
      return RenderGemma(messages, add_generation_prompt);
    case ChatTemplateFamily::kPhi3:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|", m.role, "|>\n", m.content, "<|end|>\n");
      }
      out += add_generation_prompt ? "<|assistant|>\n" : eos_text_;
      return out;
  }
  return absl::InternalError("unhandled chat template family");
}

absl::StatusOr<std::string> ChatTemplate::RenderLlama2(
    std::span<const ChatMessage> messages) const {
  const bool has_system = messages.front().role == kSystem;
  const size_t offset = has_system ? 1 : 0;
  std::span<const ChatMessage> loop = messages.subspan(offset);
  std::string out;
  for (size_t i = 0; i < loop.size(); ++i) {
    const ChatMessage& m = loop[i];
    if (absl::Status status = CheckAlternation(m, i, offset, family_, true); !status.ok()) {
      return status;
    }
    // The system prompt goes inside the first turn, and strip() applies to the whole turn.
    std::string content = i == 0 && has_system ? absl::StrCat("<<SYS>>\n", messages.front().content,
                                                              "\n<</SYS>>\n\n", m.content)
                                               : m.content;
    if (m.role == kUser) {
      absl::StrAppend(&out, bos_text_, "[INST] ", std::string(PyStrip(content)), " [/INST]");
    } else if (m.role == kAssistant) {
      absl::StrAppend(&out, " ", std::string(PyStrip(content)), " ", eos_text_);
    }
    // A later system message at an assistant position passes the template's alternation
    // check and matches neither branch: the canonical template drops it, and so do we.
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderMistral(
    std::span<const ChatMessage> messages) const {
  const bool has_system = messages.front().role == kSystem;
  const size_t offset = has_system ? 1 : 0;
  std::span<const ChatMessage> loop = messages.subspan(offset);
  std::string out = bos_text_;
  for (size_t i = 0; i < loop.size(); ++i) {
    const ChatMessage& m = loop[i];
    if (absl::Status status = CheckAlternation(m, i, offset, family_, true); !status.ok()) {
      return status;
    }
    if (m.role == kUser) {
      if (i == 0 && has_system) {
        absl::StrAppend(&out, " [INST] ", messages.front().content, "\n\n", m.content, " [/INST]");
      } else {
        absl::StrAppend(&out, " [INST] ", m.content, " [/INST]");
      }
    } else if (m.role == kAssistant) {
      absl::StrAppend(&out, " ", m.content, eos_text_);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i + offset,
          "] has role 'system'; the mistral chat template accepts a system message only as "
          "the first message"));
    }
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderGemma(std::span<const ChatMessage> messages,
                                                      bool add_generation_prompt) const {
  const bool has_system = messages.front().role == kSystem;
  if (has_system && !gemma_folds_system_) {
    return absl::InvalidArgumentError(
        "messages[0] has role 'system', which this model's gemma chat template does not "
        "support; send the instructions in the first user message");
  }
  const size_t offset = has_system ? 1 : 0;
  const std::string first_user_prefix =
      has_system ? absl::StrCat(messages.front().content, "\n\n") : "";
  std::span<const ChatMessage> loop = messages.subspan(offset);
  std::string out = bos_text_;
  for (size_t i = 0; i < loop.size(); ++i) {
    const ChatMessage& m = loop[i];
    if (absl::Status status = CheckAlternation(m, i, offset, family_, gemma_folds_system_);
        !status.ok()) {
      return status;
    }
    // A later system message at an assistant position passes the alternation check and is
    // rendered as a "system" turn, as the canonical templates do.
    const std::string& role = m.role == kAssistant ? std::string("model") : m.role;
    absl::StrAppend(&out, "<start_of_turn>", role, "\n", i == 0 ? first_user_prefix : "",
                    std::string(PyStrip(m.content)), "<end_of_turn>\n");
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace glimpse::model
