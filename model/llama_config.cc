#include "model/llama_config.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::model {
namespace {

absl::StatusOr<int32_t> GetPositiveInt(const GgufFile& file, const std::string& key,
                                       int64_t max_value) {
  ASSIGN_OR_RETURN(int64_t value, file.GetInt(key));
  if (value <= 0 || value > max_value) {
    return absl::InvalidArgumentError(absl::StrCat("model '", file.path(), "': ", key, " = ",
                                                   value, " is outside 1..", max_value));
  }
  return static_cast<int32_t>(value);
}

}  // namespace

absl::StatusOr<LlamaConfig> LlamaConfigFromGguf(const GgufFile& file) {
  ASSIGN_OR_RETURN(std::string arch, file.GetString("general.architecture"));
  if (arch != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", file.path(), "' has architecture '", arch,
        "'; glimpse supports 'llama' (Llama, Llama 2/3, and models converted as llama)"));
  }
  LlamaConfig c;
  c.name = file.GetString("general.name").value_or("unnamed");
  const std::string p = "llama.";
  ASSIGN_OR_RETURN(c.dim, GetPositiveInt(file, p + "embedding_length", 1 << 16));
  ASSIGN_OR_RETURN(c.num_layers, GetPositiveInt(file, p + "block_count", 1024));
  ASSIGN_OR_RETURN(c.num_heads, GetPositiveInt(file, p + "attention.head_count", 1024));
  if (file.Find(p + "attention.head_count_kv") != nullptr) {
    ASSIGN_OR_RETURN(c.num_kv_heads, GetPositiveInt(file, p + "attention.head_count_kv", 1024));
  } else {
    c.num_kv_heads = c.num_heads;
  }
  ASSIGN_OR_RETURN(c.ffn_dim, GetPositiveInt(file, p + "feed_forward_length", 1 << 20));
  ASSIGN_OR_RETURN(c.context_length, GetPositiveInt(file, p + "context_length", 1 << 24));
  if (c.dim % c.num_heads != 0 || c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", file.path(), "': embedding_length ", c.dim, ", head_count ", c.num_heads,
        " and head_count_kv ", c.num_kv_heads, " are inconsistent"));
  }
  c.head_dim = c.dim / c.num_heads;
  c.rope_dim = c.head_dim;
  if (file.Find(p + "rope.dimension_count") != nullptr) {
    ASSIGN_OR_RETURN(c.rope_dim, GetPositiveInt(file, p + "rope.dimension_count", c.head_dim));
    if (c.rope_dim % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", file.path(), "': rope.dimension_count must be even"));
    }
  }
  if (file.Find(p + "rope.freq_base") != nullptr) {
    ASSIGN_OR_RETURN(double base, file.GetFloat(p + "rope.freq_base"));
    if (!(base > 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", file.path(), "': rope.freq_base must be > 1"));
    }
    c.rope_freq_base = static_cast<float>(base);
  }
  if (file.Find(p + "attention.layer_norm_rms_epsilon") != nullptr) {
    ASSIGN_OR_RETURN(double eps, file.GetFloat(p + "attention.layer_norm_rms_epsilon"));
    if (!(eps > 0.0 && eps < 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", file.path(), "': attention.layer_norm_rms_epsilon must be in (0, 1)"));
    }
    c.rms_norm_eps = static_cast<float>(eps);
  }
  const GgufTensor* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2 || embd->dims[0] != static_cast<uint64_t>(c.dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", file.path(), "': token_embd.weight is missing or not [", c.dim, ", vocab]"));
  }
  if (embd->dims[1] > (1u << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", file.path(), "': vocabulary of ", embd->dims[1], " is absurd"));
  }
  c.vocab_size = static_cast<int32_t>(embd->dims[1]);
  c.tied_embeddings = file.FindTensor("output.weight") == nullptr;
  return c;
}

}  // namespace glimpse::model
