// Synthetic models of real shapes: writes a Llama-architecture GGUF with random weights and a
// real tokenizer, so that loading, memory planning, kernels and throughput can be exercised at
// the size of Llama 3 models without downloading any. The output is not a language model: its
// text is noise, but its forward pass is numerically tame (weights ~U(±sqrt(3)·0.02), norm
// weights 1) and it is byte-for-byte deterministic for a given shape, type and seed.
//
// Files follow llama.cpp's conventions (metadata keys, tensor names, ggml dim order), so
// llama.cpp can load them too. Tensors are generated and written one at a time, in chunks of
// rows, so memory stays small whatever the model size (llama-3.1-8b as q8_0 is ~8.5 GB on disk
// and needs only a few MB of RAM to write).
//
// Thread-safety: the functions are reentrant; MakeModel blocks the calling thread until the
// file is written.
#ifndef GLIMPSE_TOOLS_MAKE_MODEL_MAKE_MODEL_H_
#define GLIMPSE_TOOLS_MAKE_MODEL_MAKE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace glimpse::tools {

// The tokenizer source used when none is given: the bundled model (4,096 SentencePiece pieces).
inline constexpr char kDefaultTokenizerPath[] = "models/tinycode-4m-f16.gguf";

// Hyper-parameters of a Llama-architecture model.
struct ModelShape {
  std::string name;
  int32_t dim = 0;  // Embedding (residual stream) width.
  int32_t num_layers = 0;
  int32_t num_heads = 0;     // Query heads; head_dim = dim / num_heads.
  int32_t num_kv_heads = 0;  // Key/value heads (grouped-query attention).
  int32_t ffn_dim = 0;       // SwiGLU hidden width.
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  float rope_freq_base = 10000.0f;
  bool tied_embeddings = false;  // No output.weight; the head reuses token_embd.weight.
  float rms_norm_eps = 1e-5f;
};

// The named shapes: small-110m, llama-3.2-1b, llama-3.1-8b.
std::span<const ModelShape> KnownModelShapes();

// InvalidArgument listing the known names when `name` is not one of them.
absl::StatusOr<ModelShape> FindModelShape(std::string_view name);

// Parses "f32", "f16", "bf16" or "q8_0" (case-insensitive); InvalidArgument listing them
// otherwise.
absl::StatusOr<model::GgmlType> ParseWeightType(std::string_view name);

// Number of weights in the model (embeddings, norms, matrices, output head when untied).
uint64_t ParameterCount(const ModelShape& shape);

struct MakeModelOptions {
  std::string shape;     // A name FindModelShape knows; ignored by MakeModelWithShape.
  std::string out_path;  // Written atomically (temp file + rename).
  model::GgmlType type = model::GgmlType::kF16;  // Matrices and token_embd; norms stay F32.
  // A GGUF whose tokenizer.* metadata is copied. Its vocabulary must not be larger than the
  // shape's; a smaller one is padded with unused "<pad_N>" pieces.
  std::string tokenizer_from = kDefaultTokenizerPath;
  uint64_t seed = 0;
  // Optional progress report, called on the writing thread before each tensor is generated.
  std::function<void(size_t index, size_t num_tensors, std::string_view name)> on_tensor;
};

// Writes the model named by options.shape.
absl::Status MakeModel(const MakeModelOptions& options);

// Writes a model of any valid shape (tests use tiny ones). InvalidArgument when the shape is
// inconsistent (dim not divisible by num_heads, odd head_dim, num_heads not a multiple of
// num_kv_heads, rows not a multiple of 32 for q8_0, ...).
absl::Status MakeModelWithShape(const ModelShape& shape, const MakeModelOptions& options);

}  // namespace glimpse::tools

#endif  // GLIMPSE_TOOLS_MAKE_MODEL_MAKE_MODEL_H_
