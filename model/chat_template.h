// Chat templates: turns an OpenAI-style message list into the prompt text a chat model was
// trained on. The template comes from the GGUF's `tokenizer.chat_template` (Jinja text). glimpse
// does not run Jinja: it recognises the common template families by distinctive markers in the
// text and renders each natively, byte for byte as Hugging Face transformers renders that
// family's canonical template (jinja2 with trim_blocks and lstrip_blocks). The fixtures in
// tests/data/chat_templates/ hold the canonical texts and jinja2's renders of them
// (tools/gen_chat_template_fixtures.py), and chat_template_test.cc holds the two together.
//
// Families and their canonical templates (the model whose tokenizer_config.json they come from):
//   chatml   <|im_start|>role\ncontent<|im_end|>\n ...   (OpenHermes 2.5, Qwen, many fine-tunes)
//   llama2   <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] assistant </s>   (Llama-2-chat);
//            contents are str.strip()ped; add_generation_prompt has no effect ("[/INST]" is
//            the prompt); a system message that is not first, at an assistant position, is
//            dropped as the template drops it.
//   llama3   <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
//            (Meta-Llama-3-Instruct); contents trimmed.
//   mistral  <s> [INST] sys\n\nuser [/INST] assistant</s>   (Mistral-7B-Instruct v0.1 as
//            updated with system-prompt support): a leading system message is folded into the
//            first user turn; a system message anywhere else is an error.
//            TODO(#4): the older "[INST] " (no leading space, no system) variant of Mixtral /
//            v0.2 renders as this one.
//   zephyr   <|role|>\ncontent</s>\n ...   (zephyr-7b-beta).
//   gemma    <bos><start_of_turn>user\ncontent<end_of_turn>\n ... "model" for the assistant;
//            contents trimmed. Gemma 1/2 templates reject a leading system message; Gemma 3
//            templates (recognised by their `first_user_prefix` variable; name() "gemma3") fold
//            it, untrimmed, plus "\n\n", into the first user turn.
//   phi3     <|role|>\ncontent<|end|>\n ... then "<|assistant|>\n", or EOS when no generation
//            prompt is asked for   (Phi-3-mini-4k-instruct).
//
// Default: an empty or unrecognised template renders as ChatML. ChatML is what llama.cpp falls
// back to and what transformers' class-level default template used to be, so a base or
// fine-tuned model without a template most likely saw it; its role delimiters are explicit and
// the role names appear verbatim, so no message is lost or merged; and it needs no BOS/EOS text,
// which a vocabulary may lack. name() says "default" so /v1/models shows the fallback is in use.
//
// Role checks mirror the canonical templates: where a template raises (role alternation for
// llama2, mistral and gemma; a system message for gemma 1/2), Render returns InvalidArgument
// naming the offending message; where a template silently accepts an odd order, so does Render.
// In addition, for every family, an empty message list or a role other than system, user or
// assistant is InvalidArgument. Error messages name roles and indices, never message content.
//
// BOS: families whose template writes bos_token (llama2, llama3, mistral, gemma) put its text in
// the rendered prompt; the caller tokenizes with special-token parsing and must not add another.
//
// Thread-safety: immutable after construction; Render is const and safe from any thread.
#ifndef GLIMPSE_MODEL_CHAT_TEMPLATE_H_
#define GLIMPSE_MODEL_CHAT_TEMPLATE_H_

#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace glimpse::model {

// One chat message. `role` is "system", "user" or "assistant"; `content` is plain text (the
// caller flattens OpenAI text parts).
struct ChatMessage {
  std::string role;
  std::string content;
};

enum class ChatTemplateFamily {
  kChatMl,
  kLlama2,
  kLlama3,
  kMistral,
  kZephyr,
  kGemma,
  kPhi3,
  kDefault,
};

// "chatml", "llama2", "llama3", "mistral", "zephyr", "gemma", "phi3", "default".
std::string_view ChatTemplateFamilyName(ChatTemplateFamily family);

// Recognises a family by markers in the Jinja text; empty or unrecognised text is kDefault.
ChatTemplateFamily DetectChatTemplate(std::string_view template_text);

class ChatTemplate {
 public:
  // Reads `tokenizer.chat_template` (absent → default) and the BOS/EOS token texts from
  // `tokenizer.ggml.tokens` at `tokenizer.ggml.{bos,eos}_token_id` (ids default to 1 and 2, as
  // the tokenizer's do; an id outside the vocabulary gives empty text). Never fails: a model
  // without a usable template still gets the default.
  static ChatTemplate FromGgufMetadata(const GgufFile& gguf);
  // `bos_text` / `eos_text` are the texts the template's bos_token / eos_token stand for.
  static ChatTemplate FromText(std::string_view template_text, std::string bos_text,
                               std::string eos_text);

  // The prompt for `messages`, ending with the assistant-turn opener when
  // `add_generation_prompt` (for the families whose template has one). Errors: InvalidArgument
  // as described at the top of this file.
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

  ChatTemplateFamily family() const { return family_; }
  // For /v1/models: the family name, "gemma3" for the system-folding Gemma variant.
  std::string name() const;

 private:
  ChatTemplate(ChatTemplateFamily family, bool gemma_folds_system, std::string bos_text,
               std::string eos_text);

  absl::StatusOr<std::string> RenderLlama2(std::span<const ChatMessage> messages) const;
  absl::StatusOr<std::string> RenderMistral(std::span<const ChatMessage> messages) const;
  absl::StatusOr<std::string> RenderGemma(std::span<const ChatMessage> messages,
                                          bool add_generation_prompt) const;

  ChatTemplateFamily family_;
  bool gemma_folds_system_;  // Only meaningful for kGemma.
  std::string bos_text_;
  std::string eos_text_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_CHAT_TEMPLATE_H_
