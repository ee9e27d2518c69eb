// Hyper-parameters of a Llama-family model, read from GGUF metadata and checked for
// consistency before any tensor is touched.
#ifndef GLIMPSE_MODEL_LLAMA_CONFIG_H_
#define GLIMPSE_MODEL_LLAMA_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "model/gguf.h"

namespace glimpse::model {

struct LlamaConfig {
  std::string name;
  int32_t dim = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t ffn_dim = 0;
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  int32_t rope_dim = 0;
  float rope_freq_base = 10000.0f;
  float rms_norm_eps = 1e-5f;
  kernels::RopeStyle rope_style = kernels::RopeStyle::kNormal;
  bool tied_embeddings = false;

  int32_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Errors name the file and the offending key: unsupported architecture, missing keys,
// inconsistent head counts, absurd sizes.
absl::StatusOr<LlamaConfig> LlamaConfigFromGguf(const GgufFile& file);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_LLAMA_CONFIG_H_
