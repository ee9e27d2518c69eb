#include "tools/make_model/make_model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "model/gguf_writer.h"
#include "model/quantize.h"

namespace glimpse::tools {
namespace {

using model::GgmlType;
using model::GgufValue;
using model::GgufValueType;
using model::GgufWriter;

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const std::array<ModelShape, 3>& Shapes() {
  static const std::array<ModelShape, 3> shapes = {{
      {.name = "small-110m",
       .dim = 768,
       .num_layers = 12,
       .num_heads = 12,
       .num_kv_heads = 4,
       .ffn_dim = 2048,
       .vocab_size = 4096,
       .context_length = 2048,
       .rope_freq_base = 10000.0f,
       .tied_embeddings = false,
       .rms_norm_eps = 1e-5f},
      {.name = "llama-3.2-1b",
       .dim = 2048,
       .num_layers = 16,
       .num_heads = 32,
       .num_kv_heads = 8,
       .ffn_dim = 8192,
       .vocab_size = 128256,
       .context_length = 8192,
       .rope_freq_base = 500000.0f,
       .tied_embeddings = true,
       .rms_norm_eps = 1e-5f},
      {.name = "llama-3.1-8b",
       .dim = 4096,
       .num_layers = 32,
       .num_heads = 32,
       .num_kv_heads = 8,
       .ffn_dim = 14336,
       .vocab_size = 128256,
       .context_length = 8192,
       .rope_freq_base = 500000.0f,
       .tied_embeddings = false,
       .rms_norm_eps = 1e-5f},
  }};
  return shapes;
}

// Standard deviation of the random weights; uniform on ±sqrt(3)·σ has this deviation.
constexpr double kWeightStddev = 0.02;
// Elements generated and encoded per sink write (whole rows, at least one row).
constexpr uint64_t kChunkElements = uint64_t{1} << 20;
// Placeholder pieces padding a small tokenizer up to the shape's vocabulary: llama.cpp's
// token type UNUSED and a score no merge will ever prefer.
constexpr int64_t kUnusedTokenType = 5;
constexpr float kPadScore = -1e9f;

// SplitMix64 (Steele et al.), used both to derive per-tensor seeds and as the generator: tiny,
// well mixed and exactly specified, so files are identical on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Fills `out` with U(±sqrt(3)·σ) values. Each value is a 24-bit signed integer times one
// constant: a single exact-then-rounded multiplication, so no FMA contraction or libm
// difference can change a bit across compilers or machines.
void FillUniform(SplitMix64& rng, std::span<float> out) {
  static const float kScale = static_cast<float>(std::sqrt(3.0) * kWeightStddev / 8388608.0);
  for (float& v : out) {
    const auto k = static_cast<int32_t>(rng.Next() >> 40) - 8388608;  // [-2^23, 2^23)
    v = static_cast<float>(k) * kScale;
  }
}

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: {in, out} for matrices.
  GgmlType type;
  bool is_norm;  // All ones instead of random.
};

std::vector<TensorSpec> TensorSpecs(const ModelShape& s, GgmlType type) {
  const auto dim = static_cast<uint64_t>(s.dim);
  const auto kv_dim = static_cast<uint64_t>(s.dim / s.num_heads * s.num_kv_heads);
  const auto ffn = static_cast<uint64_t>(s.ffn_dim);
  const auto vocab = static_cast<uint64_t>(s.vocab_size);
  std::vector<TensorSpec> specs;
  specs.push_back({"token_embd.weight", {dim, vocab}, type, false});
  for (int32_t layer = 0; layer < s.num_layers; ++layer) {
    const std::string p = absl::StrCat("blk.", layer, ".");
    specs.push_back({p + "attn_norm.weight", {dim}, GgmlType::kF32, true});
    specs.push_back({p + "attn_q.weight", {dim, dim}, type, false});
    specs.push_back({p + "attn_k.weight", {dim, kv_dim}, type, false});
    specs.push_back({p + "attn_v.weight", {dim, kv_dim}, type, false});
    specs.push_back({p + "attn_output.weight", {dim, dim}, type, false});
    specs.push_back({p + "ffn_norm.weight", {dim}, GgmlType::kF32, true});
    specs.push_back({p + "ffn_gate.weight", {dim, ffn}, type, false});
    specs.push_back({p + "ffn_up.weight", {dim, ffn}, type, false});
    specs.push_back({p + "ffn_down.weight", {ffn, dim}, type, false});
  }
  specs.push_back({"output_norm.weight", {dim}, GgmlType::kF32, true});
  if (!s.tied_embeddings) specs.push_back({"output.weight", {dim, vocab}, type, false});
  return specs;
}

absl::Status ValidateShape(const ModelShape& s, GgmlType type) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model shape '", s.name, "' is invalid: ", Sv(why)));
  };
  if (s.name.empty()) return invalid("it needs a name");
  if (s.dim <= 0 || s.num_layers <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 ||
      s.ffn_dim <= 0 || s.vocab_size <= 0 || s.context_length <= 0) {
    return invalid("every size must be positive");
  }
  if (s.dim % s.num_heads != 0) return invalid("dim must be a multiple of num_heads");
  if ((s.dim / s.num_heads) % 2 != 0) return invalid("head_dim must be even for rotary");
  if (s.num_heads % s.num_kv_heads != 0) {
    return invalid("num_heads must be a multiple of num_kv_heads");
  }
  if (!(s.rope_freq_base > 0) || !(s.rms_norm_eps > 0)) {
    return invalid("rope_freq_base and rms_norm_eps must be positive");
  }
  const uint64_t block = model::GgmlBlockSize(type);
  if (s.dim % block != 0 || s.ffn_dim % block != 0) {
    return invalid(absl::StrCat("dim and ffn_dim must be multiples of ", block, " for ",
                                Sv(model::GgmlTypeName(type))));
  }
  return absl::OkStatus();
}

// llama.cpp's general.file_type (enum llama_ftype) for a model whose matrices are `type`.
uint32_t FileType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case GgmlType::kF16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case GgmlType::kQ8_0:
      return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case GgmlType::kBF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
  }
  return 0;
}

void SetArchitectureMetadata(const ModelShape& s, GgmlType type, GgufWriter& writer) {
  writer.SetString("general.architecture", "llama");
  writer.SetString("general.name", s.name);
  writer.SetString("general.description",
                   "Synthetic model with random weights written by glimpse make-model; for "
                   "load, memory and throughput testing only (its output is noise).");
  writer.SetUint32("general.alignment", GgufWriter::kDefaultAlignment);
  writer.SetUint32("general.file_type", FileType(type));
  if (type == GgmlType::kQ8_0) writer.SetUint32("general.quantization_version", 2);
  writer.SetUint32("llama.context_length", static_cast<uint32_t>(s.context_length));
  writer.SetUint32("llama.embedding_length", static_cast<uint32_t>(s.dim));
  writer.SetUint32("llama.block_count", static_cast<uint32_t>(s.num_layers));
  writer.SetUint32("llama.feed_forward_length", static_cast<uint32_t>(s.ffn_dim));
  writer.SetUint32("llama.attention.head_count", static_cast<uint32_t>(s.num_heads));
  writer.SetUint32("llama.attention.head_count_kv", static_cast<uint32_t>(s.num_kv_heads));
  writer.SetFloat32("llama.rope.freq_base", s.rope_freq_base);
  writer.SetFloat32("llama.attention.layer_norm_rms_epsilon", s.rms_norm_eps);
  writer.SetUint32("llama.rope.dimension_count", static_cast<uint32_t>(s.dim / s.num_heads));
  writer.SetUint32("llama.vocab_size", static_cast<uint32_t>(s.vocab_size));
}

// Appends `count` elements produced by `make(index)` to an array value.
template <typename Make>
void PadArray(GgufValue& array, size_t count, Make make) {
  array.array.reserve(count);
  for (size_t i = array.array.size(); i < count; ++i) array.array.push_back(make(i));
}

// Copies every tokenizer.* key of `path`, padding the per-token arrays to `vocab_size`.
absl::Status CopyTokenizer(const std::string& path, int32_t vocab_size, GgufWriter& writer) {
  auto source = model::GgufFile::Open(path);
  if (!source.ok()) {
    return absl::Status(
        source.status().code(),
        absl::StrCat("cannot read the tokenizer source: ", source.status().message(),
                     " (point tokenizer_from at a GGUF with tokenizer.ggml.* "
                     "metadata, e.g. ",
                     kDefaultTokenizerPath, ")"));
  }
  const model::GgufFile& file = **source;
  const GgufValue* tokens = file.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufValueType::kArray ||
      tokens->array_type != GgufValueType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer source '", path,
                     "' has no tokenizer.ggml.tokens string array; use a GGUF that carries a "
                     "tokenizer"));
  }
  const size_t num_pieces = tokens->array.size();
  const auto vocab = static_cast<size_t>(vocab_size);
  if (num_pieces > vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer source '", path, "' has ", num_pieces, " pieces, more than the shape's ", vocab,
        "-token vocabulary; use a smaller tokenizer or a larger vocab_size"));
  }
  // The reader's map is sorted by key, so the copy is in a stable order.
  for (const auto& [key, value] : file.metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    const bool per_token = value.type == GgufValueType::kArray &&
                           (key == "tokenizer.ggml.tokens" || key == "tokenizer.ggml.scores" ||
                            key == "tokenizer.ggml.token_type");
    if (!per_token || num_pieces == vocab) {
      RETURN_IF_ERROR(writer.SetValue(key, value));
      continue;
    }
    if (value.array.size() != num_pieces) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer source '", path, "': ", key, " has ", value.array.size(),
                       " entries but there are ", num_pieces, " tokens"));
    }
    GgufValue padded = value;
    if (key == "tokenizer.ggml.tokens") {
      PadArray(padded, vocab, [](size_t i) {
        GgufValue v;
        v.type = GgufValueType::kString;
        v.string_value = absl::StrCat("<pad_", i, ">");
        return v;
      });
    } else if (key == "tokenizer.ggml.scores") {
      PadArray(padded, vocab, [&](size_t) {
        GgufValue v;
        v.type = value.array_type;
        v.float_value = kPadScore;
        return v;
      });
    } else {
      PadArray(padded, vocab, [&](size_t) {
        GgufValue v;
        v.type = value.array_type;
        v.int_value = kUnusedTokenType;
        return v;
      });
    }
    RETURN_IF_ERROR(writer.SetValue(key, padded));
  }
  return absl::OkStatus();
}

// Streams one tensor: rows of random values (or ones), encoded chunk by chunk.
absl::Status ProduceTensor(const TensorSpec& spec, uint64_t seed, model::GgufByteSink& sink) {
  const uint64_t row = spec.dims[0];
  uint64_t num_elements = 1;
  for (uint64_t d : spec.dims) num_elements *= d;
  const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / row);
  SplitMix64 rng(SplitMix64(seed ^ Fnv1a(spec.name)).Next());
  std::vector<float> values;
  std::vector<uint8_t> bytes;
  for (uint64_t done = 0; done < num_elements;) {
    const uint64_t n = std::min(rows_per_chunk * row, num_elements - done);
    values.resize(n);
    if (spec.is_norm) {
      std::fill(values.begin(), values.end(), 1.0f);
    } else {
      FillUniform(rng, values);
    }
    bytes.clear();
    RETURN_IF_ERROR(model::AppendEncoded(values, spec.type, &bytes));
    RETURN_IF_ERROR(sink.Write(bytes));
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

std::span<const ModelShape> KnownModelShapes() { return Shapes(); }

absl::StatusOr<ModelShape> FindModelShape(std::string_view name) {
  std::vector<std::string> names;
  for (const ModelShape& shape : Shapes()) {
    if (shape.name == name) return shape;
    names.push_back(shape.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown model shape '", Sv(name),
                                                 "'; known shapes: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<model::GgmlType> ParseWeightType(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(Sv(name));
  if (lower == "f32") return GgmlType::kF32;
  if (lower == "f16") return GgmlType::kF16;
  if (lower == "bf16") return GgmlType::kBF16;
  if (lower == "q8_0") return GgmlType::kQ8_0;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight type '", Sv(name), "'; use one of f32, f16, bf16, q8_0"));
}

uint64_t ParameterCount(const ModelShape& shape) {
  uint64_t total = 0;
  for (const TensorSpec& spec : TensorSpecs(shape, GgmlType::kF32)) {
    uint64_t n = 1;
    for (uint64_t d : spec.dims) n *= d;
    total += n;
  }
  return total;
}

absl::Status MakeModel(const MakeModelOptions& options) {
  ASSIGN_OR_RETURN(const ModelShape shape, FindModelShape(options.shape));
  return MakeModelWithShape(shape, options);
}

absl::Status MakeModelWithShape(const ModelShape& shape, const MakeModelOptions& options) {
  RETURN_IF_ERROR(ValidateShape(shape, options.type));
  if (options.out_path.empty()) {
    return absl::InvalidArgumentError("make-model needs an output path (--out)");
  }
  GgufWriter writer;
  SetArchitectureMetadata(shape, options.type, writer);
  RETURN_IF_ERROR(CopyTokenizer(options.tokenizer_from, shape.vocab_size, writer));

  // Specs are shared by the producers, which run later inside WriteFile().
  auto specs = std::make_shared<const std::vector<TensorSpec>>(TensorSpecs(shape, options.type));
  for (size_t i = 0; i < specs->size(); ++i) {
    const TensorSpec& spec = (*specs)[i];
    RETURN_IF_ERROR(writer.AddTensor(spec.name, spec.dims, spec.type,
                                     [specs, i, seed = options.seed, on_tensor = options.on_tensor](
                                         model::GgufByteSink& sink) -> absl::Status {
                                       const TensorSpec& s = (*specs)[i];
                                       if (on_tensor) on_tensor(i, specs->size(), s.name);
                                       return ProduceTensor(s, seed, sink);
                                     }));
  }
  return writer.WriteFile(options.out_path);
}

}  // namespace glimpse::tools
