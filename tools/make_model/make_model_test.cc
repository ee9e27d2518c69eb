#include "tools/make_model/make_model.h"

#include <stdlib.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"
#include "model/quantize.h"

namespace glimpse::tools {
namespace {

using model::GgmlType;
using model::GgufFile;
using model::GgufTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The bundled model, relative to the workspace root (Bazel runs tests from the runfiles copy
// of it; the BUILD file lists the model as data).
constexpr char kBundledModel[] = "models/tinycode-4m-f16.gguf";

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/make_model_XXXXXX";
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A shape small enough to write in milliseconds that still has every feature: grouped-query
// attention, several layers, rows that are multiples of 32.
ModelShape TinyShape() {
  return ModelShape{.name = "tiny-test",
                    .dim = 64,
                    .num_layers = 2,
                    .num_heads = 4,
                    .num_kv_heads = 2,
                    .ffn_dim = 96,
                    .vocab_size = 4096,
                    .context_length = 256,
                    .rope_freq_base = 10000.0f,
                    .tied_embeddings = false,
                    .rms_norm_eps = 1e-5f};
}

MakeModelOptions Options(const std::string& out_path, GgmlType type) {
  MakeModelOptions options;
  options.out_path = out_path;
  options.type = type;
  options.tokenizer_from = kBundledModel;
  options.seed = 7;
  return options;
}

std::unique_ptr<GgufFile> OpenOrDie(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(file).value() : nullptr;
}

// Checks the tensor table against the shape: names, ggml-order dims and types.
void ExpectTensors(const GgufFile& file, const ModelShape& s, GgmlType type) {
  const uint64_t dim = s.dim, ffn = s.ffn_dim, vocab = s.vocab_size;
  const uint64_t kv_dim = dim / s.num_heads * s.num_kv_heads;
  struct Expected {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type;
  };
  std::vector<Expected> expected = {{"token_embd.weight", {dim, vocab}, type},
                                    {"output_norm.weight", {dim}, GgmlType::kF32}};
  if (!s.tied_embeddings) expected.push_back({"output.weight", {dim, vocab}, type});
  for (int layer = 0; layer < s.num_layers; ++layer) {
    const std::string p = "blk." + std::to_string(layer) + ".";
    expected.push_back({p + "attn_norm.weight", {dim}, GgmlType::kF32});
    expected.push_back({p + "attn_q.weight", {dim, dim}, type});
    expected.push_back({p + "attn_k.weight", {dim, kv_dim}, type});
    expected.push_back({p + "attn_v.weight", {dim, kv_dim}, type});
    expected.push_back({p + "attn_output.weight", {dim, dim}, type});
    expected.push_back({p + "ffn_norm.weight", {dim}, GgmlType::kF32});
    expected.push_back({p + "ffn_gate.weight", {dim, ffn}, type});
    expected.push_back({p + "ffn_up.weight", {dim, ffn}, type});
    expected.push_back({p + "ffn_down.weight", {ffn, dim}, type});
  }
  EXPECT_EQ(file.tensors().size(), expected.size());
  for (const Expected& e : expected) {
    const GgufTensor* t = file.FindTensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(t->dims, e.dims) << e.name;
    EXPECT_EQ(t->type, e.type) << e.name;
  }
  if (s.tied_embeddings) {
    EXPECT_EQ(file.FindTensor("output.weight"), nullptr);
  }
}

void ExpectArchitectureMetadata(const GgufFile& file, const ModelShape& s) {
  EXPECT_EQ(*file.GetString("general.architecture"), "llama");
  EXPECT_EQ(*file.GetString("general.name"), s.name);
  EXPECT_EQ(*file.GetInt("general.alignment"), 32);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_EQ(*file.GetInt("llama.context_length"), s.context_length);
  EXPECT_EQ(*file.GetInt("llama.embedding_length"), s.dim);
  EXPECT_EQ(*file.GetInt("llama.block_count"), s.num_layers);
  EXPECT_EQ(*file.GetInt("llama.feed_forward_length"), s.ffn_dim);
  EXPECT_EQ(*file.GetInt("llama.attention.head_count"), s.num_heads);
  EXPECT_EQ(*file.GetInt("llama.attention.head_count_kv"), s.num_kv_heads);
  EXPECT_EQ(*file.GetFloat("llama.rope.freq_base"), s.rope_freq_base);
  EXPECT_EQ(static_cast<float>(*file.GetFloat("llama.attention.layer_norm_rms_epsilon")),
            s.rms_norm_eps);
  EXPECT_EQ(*file.GetInt("llama.rope.dimension_count"), s.dim / s.num_heads);
  EXPECT_EQ(*file.GetInt("llama.vocab_size"), s.vocab_size);
}

TEST(FindModelShapeTest, KnowsTheNamedShapes) {
  auto small = FindModelShape("small-110m");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->dim, 768);
  EXPECT_EQ(small->num_layers, 12);
  EXPECT_EQ(small->num_heads, 12);
  EXPECT_EQ(small->num_kv_heads, 4);
  EXPECT_EQ(small->ffn_dim, 2048);
  EXPECT_EQ(small->vocab_size, 4096);
  EXPECT_EQ(small->context_length, 2048);
  EXPECT_EQ(small->rope_freq_base, 10000.0f);
  EXPECT_FALSE(small->tied_embeddings);

  auto one_b = FindModelShape("llama-3.2-1b");
  ASSERT_TRUE(one_b.ok());
  EXPECT_EQ(one_b->dim, 2048);
  EXPECT_EQ(one_b->num_layers, 16);
  EXPECT_EQ(one_b->num_heads, 32);
  EXPECT_EQ(one_b->num_kv_heads, 8);
  EXPECT_EQ(one_b->ffn_dim, 8192);
  EXPECT_EQ(one_b->vocab_size, 128256);
  EXPECT_EQ(one_b->context_length, 8192);
  EXPECT_EQ(one_b->rope_freq_base, 500000.0f);
  EXPECT_TRUE(one_b->tied_embeddings);

  auto eight_b = FindModelShape("llama-3.1-8b");
  ASSERT_TRUE(eight_b.ok());
  EXPECT_EQ(eight_b->dim, 4096);
  EXPECT_EQ(eight_b->num_layers, 32);
  EXPECT_EQ(eight_b->num_heads, 32);
  EXPECT_EQ(eight_b->num_kv_heads, 8);
  EXPECT_EQ(eight_b->ffn_dim, 14336);
  EXPECT_EQ(eight_b->vocab_size, 128256);
  EXPECT_EQ(eight_b->rope_freq_base, 500000.0f);
  EXPECT_FALSE(eight_b->tied_embeddings);
  EXPECT_EQ(KnownModelShapes().size(), 3u);
}

TEST(FindModelShapeTest, ParameterCountsMatchTheRealModels) {
  // Meta's published sizes: Llama 3.1 8B has 8,030,261,248 parameters, Llama 3.2 1B
  // 1,235,814,400 (tied embeddings).
  EXPECT_EQ(ParameterCount(*FindModelShape("llama-3.1-8b")), 8030261248u);
  EXPECT_EQ(ParameterCount(*FindModelShape("llama-3.2-1b")), 1235814400u);
}

TEST(FindModelShapeTest, UnknownShapeListsKnownNames) {
  auto shape = FindModelShape("llama-4-behemoth");
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(shape.status().message());
  EXPECT_THAT(message, HasSubstr("llama-4-behemoth"));
  EXPECT_THAT(message, HasSubstr("small-110m"));
  EXPECT_THAT(message, HasSubstr("llama-3.2-1b"));
  EXPECT_THAT(message, HasSubstr("llama-3.1-8b"));

  MakeModelOptions options = Options(MakeTempDir() + "/x.gguf", GgmlType::kF16);
  options.shape = "nope";
  const absl::Status status = MakeModel(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("small-110m"));
}

TEST(ParseWeightTypeTest, ParsesTheFourTypes) {
  EXPECT_EQ(*ParseWeightType("f32"), GgmlType::kF32);
  EXPECT_EQ(*ParseWeightType("F16"), GgmlType::kF16);
  EXPECT_EQ(*ParseWeightType("bf16"), GgmlType::kBF16);
  EXPECT_EQ(*ParseWeightType("q8_0"), GgmlType::kQ8_0);
  auto bad = ParseWeightType("q4_k");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("f32, f16, bf16, q8_0"));
}

TEST(MakeModelTest, WritesEveryTensorAndKeyInEachType) {
  const std::string dir = MakeTempDir();
  auto bundled = OpenOrDie(kBundledModel);
  ASSERT_NE(bundled, nullptr);
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0}) {
    SCOPED_TRACE(std::string(model::GgmlTypeName(type)));
    const std::string path = dir + "/tiny.gguf";
    const ModelShape shape = TinyShape();
    ASSERT_TRUE(MakeModelWithShape(shape, Options(path, type)).ok());
    auto file = OpenOrDie(path);
    ASSERT_NE(file, nullptr);
    ExpectTensors(*file, shape, type);
    ExpectArchitectureMetadata(*file, shape);
    // The tokenizer is the bundled one, untouched (same vocabulary size).
    for (const auto& [key, value] : bundled->metadata()) {
      if (key.rfind("tokenizer.", 0) != 0) continue;
      ASSERT_NE(file->Find(key), nullptr) << key;
    }
    EXPECT_EQ(*file->GetStringArray("tokenizer.ggml.tokens"),
              *bundled->GetStringArray("tokenizer.ggml.tokens"));
    EXPECT_EQ(*file->GetFloatArray("tokenizer.ggml.scores"),
              *bundled->GetFloatArray("tokenizer.ggml.scores"));
    EXPECT_EQ(*file->GetIntArray("tokenizer.ggml.token_type"),
              *bundled->GetIntArray("tokenizer.ggml.token_type"));
    EXPECT_EQ(*file->GetString("tokenizer.ggml.model"), "llama");
    EXPECT_EQ(*file->GetInt("tokenizer.ggml.bos_token_id"), 1);
    EXPECT_EQ(*file->GetBool("tokenizer.ggml.add_bos_token"), true);
  }
}

TEST(MakeModelTest, WeightsAreSmallUniformAndNormsAreOne) {
  const std::string path = MakeTempDir() + "/tiny.gguf";
  ASSERT_TRUE(MakeModelWithShape(TinyShape(), Options(path, GgmlType::kF32)).ok());
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  const float bound = std::sqrt(3.0f) * 0.02f;
  for (const GgufTensor& t : file->tensors()) {
    auto values =
        model::DecodeTensor(std::span<const uint8_t>(t.data, t.num_bytes), t.type, t.num_elements);
    ASSERT_TRUE(values.ok());
    if (t.dims.size() == 1) {
      for (float v : *values) ASSERT_EQ(v, 1.0f) << t.name;
      continue;
    }
    double sum = 0, sum_sq = 0;
    for (float v : *values) {
      ASSERT_LE(std::fabs(v), bound) << t.name;
      sum += v;
      sum_sq += double{v} * v;
    }
    const double n = static_cast<double>(values->size());
    EXPECT_NEAR(sum / n, 0.0, 0.002) << t.name;
    EXPECT_NEAR(std::sqrt(sum_sq / n), 0.02, 0.001) << t.name;
  }
  // Different tensors get different streams.
  const GgufTensor* q = file->FindTensor("blk.0.attn_q.weight");
  const GgufTensor* o = file->FindTensor("blk.0.attn_output.weight");
  EXPECT_NE(std::vector<uint8_t>(q->data, q->data + q->num_bytes),
            std::vector<uint8_t>(o->data, o->data + o->num_bytes));
}

TEST(MakeModelTest, PadsVocabularyWithUnusedPieces) {
  ModelShape shape = TinyShape();
  shape.vocab_size = 5000;
  shape.tied_embeddings = true;
  const std::string path = MakeTempDir() + "/padded.gguf";
  ASSERT_TRUE(MakeModelWithShape(shape, Options(path, GgmlType::kQ8_0)).ok());
  auto file = OpenOrDie(path);
  auto bundled = OpenOrDie(kBundledModel);
  ASSERT_NE(file, nullptr);
  ASSERT_NE(bundled, nullptr);
  ExpectTensors(*file, shape, GgmlType::kQ8_0);
  EXPECT_EQ(*file->GetInt("llama.vocab_size"), 5000);

  const auto tokens = *file->GetStringArray("tokenizer.ggml.tokens");
  const auto scores = *file->GetFloatArray("tokenizer.ggml.scores");
  const auto types = *file->GetIntArray("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 5000u);
  ASSERT_EQ(scores.size(), 5000u);
  ASSERT_EQ(types.size(), 5000u);
  const auto source_tokens = *bundled->GetStringArray("tokenizer.ggml.tokens");
  const auto source_scores = *bundled->GetFloatArray("tokenizer.ggml.scores");
  const auto source_types = *bundled->GetIntArray("tokenizer.ggml.token_type");
  ASSERT_EQ(source_tokens.size(), 4096u);
  for (size_t i = 0; i < 4096; ++i) {
    ASSERT_EQ(tokens[i], source_tokens[i]) << i;
    ASSERT_EQ(scores[i], source_scores[i]) << i;
    ASSERT_EQ(types[i], source_types[i]) << i;
  }
  for (size_t i = 4096; i < 5000; ++i) {
    ASSERT_EQ(tokens[i], "<pad_" + std::to_string(i) + ">");
    ASSERT_EQ(scores[i], -1e9f);
    ASSERT_EQ(types[i], 5);
  }
  // The element types stay as the source has them.
  EXPECT_EQ(file->Find("tokenizer.ggml.scores")->array_type,
            bundled->Find("tokenizer.ggml.scores")->array_type);
  EXPECT_EQ(file->Find("tokenizer.ggml.token_type")->array_type,
            bundled->Find("tokenizer.ggml.token_type")->array_type);
  EXPECT_EQ(*file->GetInt("tokenizer.ggml.eos_token_id"), 2);
}

TEST(MakeModelTest, SameSeedGivesIdenticalFilesAndAnotherSeedDoesNot) {
  const std::string dir = MakeTempDir();
  MakeModelOptions options = Options(dir + "/a.gguf", GgmlType::kQ8_0);
  ASSERT_TRUE(MakeModelWithShape(TinyShape(), options).ok());
  options.out_path = dir + "/b.gguf";
  ASSERT_TRUE(MakeModelWithShape(TinyShape(), options).ok());
  options.out_path = dir + "/c.gguf";
  options.seed = 8;
  ASSERT_TRUE(MakeModelWithShape(TinyShape(), options).ok());
  const std::string a = ReadAll(dir + "/a.gguf");
  EXPECT_GT(a.size(), 100000u);
  EXPECT_TRUE(a == ReadAll(dir + "/b.gguf"));
  EXPECT_FALSE(a == ReadAll(dir + "/c.gguf"));
}

TEST(MakeModelTest, ReportsProgressOncePerTensorInOrder) {
  std::vector<std::string> names;
  MakeModelOptions options = Options(MakeTempDir() + "/p.gguf", GgmlType::kF16);
  options.on_tensor = [&](size_t index, size_t num_tensors, std::string_view name) {
    EXPECT_EQ(index, names.size());
    EXPECT_EQ(num_tensors, 3u + 2u * 9u);
    names.emplace_back(name);
  };
  ASSERT_TRUE(MakeModelWithShape(TinyShape(), options).ok());
  ASSERT_EQ(names.size(), 21u);
  EXPECT_EQ(names.front(), "token_embd.weight");
  EXPECT_EQ(names.back(), "output.weight");
}

TEST(MakeModelTest, RejectsInconsistentShapes) {
  const std::string path = MakeTempDir() + "/bad.gguf";
  ModelShape heads = TinyShape();
  heads.num_heads = 5;  // 64 is not a multiple of 5.
  EXPECT_THAT(std::string(MakeModelWithShape(heads, Options(path, GgmlType::kF16)).message()),
              HasSubstr("multiple of num_heads"));
  ModelShape kv = TinyShape();
  kv.num_kv_heads = 3;
  EXPECT_FALSE(MakeModelWithShape(kv, Options(path, GgmlType::kF16)).ok());
  ModelShape rows = TinyShape();
  rows.ffn_dim = 80;  // Fine as F16, not as Q8_0.
  EXPECT_TRUE(MakeModelWithShape(rows, Options(path, GgmlType::kF16)).ok());
  EXPECT_THAT(std::string(MakeModelWithShape(rows, Options(path, GgmlType::kQ8_0)).message()),
              HasSubstr("multiples of 32"));
  ModelShape small_vocab = TinyShape();
  small_vocab.vocab_size = 1000;  // Smaller than the tokenizer.
  const absl::Status status = MakeModelWithShape(small_vocab, Options(path, GgmlType::kF16));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("4096 pieces"));
}

TEST(MakeModelTest, MissingTokenizerSourceIsNotFound) {
  MakeModelOptions options = Options(MakeTempDir() + "/t.gguf", GgmlType::kF16);
  options.tokenizer_from = "/no/such/tokenizer.gguf";
  const absl::Status status = MakeModelWithShape(TinyShape(), options);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("/no/such/tokenizer.gguf"));
}

// The smallest named shape end to end (~220 MB as F16): checks the full tensor table and
// metadata at a real size.
TEST(MakeModelTest, WritesSmall110mAsF16) {
  MakeModelOptions options = Options(MakeTempDir() + "/small-110m.gguf", GgmlType::kF16);
  options.shape = "small-110m";
  ASSERT_TRUE(MakeModel(options).ok());
  auto file = OpenOrDie(options.out_path);
  ASSERT_NE(file, nullptr);
  const ModelShape shape = *FindModelShape("small-110m");
  ExpectTensors(*file, shape, GgmlType::kF16);
  ExpectArchitectureMetadata(*file, shape);
  uint64_t params = 0;
  for (const GgufTensor& t : file->tensors()) params += t.num_elements;
  EXPECT_EQ(params, ParameterCount(shape));
}

}  // namespace
}  // namespace glimpse::tools
