// Greedy decoding of the bundled model against llama.cpp's own outputs
// (tests/data/refs/, produced by llama-server at temperature 0 on the F32 file).
//
// F32 and F16 files hold the same values, so glimpse's fp32 computation must reproduce every
// reference token for token, over an fp32 or an fp16 KV cache (bf16's divergences are bounded). A
// divergence is tolerated only exactly at a near-tie (our top two logits within 1e-4), and is then
// printed. Q8_0 agreement is reported, not required to be perfect.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kvcache/block_pool.h"
#include "model/gguf.h"
#include "model/kv_cache_storage.h"
#include "model/llama_model.h"
#include "scheduler/offline_generator.h"
#include "tests/llama_cpp_refs.h"

namespace glimpse {
namespace {

using Reference = testing::LlamaCppReference;
using testing::LoadLlamaCppReferences;

struct Agreement {
  int identical = 0;
  int near_tie_divergences = 0;
  int real_divergences = 0;
};

// Generates greedily for all references in one batch and compares token by token. A divergence
// where our top two logits are within `close_gap` counts as a near tie.
Agreement RunAndCompare(const std::string& model_path, const std::vector<Reference>& refs,
                        int32_t prefill_chunk,
                        kernels::cpu::KvElementType kv_type = kernels::cpu::KvElementType::kF32,
                        float close_gap = 1e-4f) {
  auto file = model::GgufFile::Open(model_path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  kernels::cpu::CpuBackend backend(2, kv_type);
  auto model = model::LlamaModel::Load(**file, backend);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  const int32_t block_size = 16;
  int32_t num_blocks = 0;
  std::vector<scheduler::GenerationRequest> requests;
  for (const Reference& r : refs) {
    scheduler::GenerationRequest req;
    req.prompt_tokens = r.prompt;
    req.max_tokens = static_cast<int32_t>(r.tokens.size());
    req.sampling.temperature = 0.0f;
    req.sampling.num_logprobs = 2;
    req.ignore_eos = true;
    requests.push_back(req);
    num_blocks += (r.prompt.size() + r.tokens.size()) / block_size + 2;
  }
  model::KvCacheStorage kv(backend, (*model)->config(), num_blocks, block_size);
  kvcache::BlockPool pool(num_blocks);
  scheduler::OfflineGeneratorOptions options;
  options.prefill_chunk_tokens = prefill_chunk;
  scheduler::OfflineGenerator generator(**model, kv, pool, options);
  auto results = generator.Run(requests);
  EXPECT_TRUE(results.ok()) << results.status();
  if (!results.ok()) return {};
  EXPECT_EQ(pool.num_free(), num_blocks) << "blocks leaked";

  Agreement agreement;
  for (size_t i = 0; i < refs.size(); ++i) {
    const auto& got = (*results)[i];
    size_t k = 0;
    while (k < refs[i].tokens.size() && got.tokens[k] == refs[i].tokens[k]) ++k;
    if (k == refs[i].tokens.size()) {
      ++agreement.identical;
      continue;
    }
    const auto& top = got.samples[k].top_logprobs;
    const float gap = top.size() >= 2 ? top[0].second - top[1].second : INFINITY;
    const bool near_tie = gap <= close_gap;
    std::printf(
        "%s, %s KV: %s diverges at generated token %zu (ours %d, llama.cpp %d, top-2 gap "
        "%.3g)\n",
        model_path.c_str(), KvElementTypeName(kv_type), refs[i].id.c_str(), k, got.tokens[k],
        refs[i].tokens[k], gap);
    (near_tie ? agreement.near_tie_divergences : agreement.real_divergences)++;
  }
  std::printf("%s, %s KV: %d of %zu identical, %d near-tie divergences, %d other divergences\n",
              model_path.c_str(), KvElementTypeName(kv_type), agreement.identical, refs.size(),
              agreement.near_tie_divergences, agreement.real_divergences);
  return agreement;
}

TEST(GreedyReferenceTest, F32ReproducesLlamaCppShortPrompts) {
  auto refs = LoadLlamaCppReferences("tests/data/refs/greedy_short.jsonl");
  ASSERT_EQ(refs.size(), 40u);
  Agreement a = RunAndCompare("tests/data/tinycode-4m.gguf", refs, 512);
  EXPECT_EQ(a.real_divergences, 0);
  EXPECT_EQ(a.identical + a.near_tie_divergences, 40);
}

TEST(GreedyReferenceTest, F16ReproducesLlamaCppLongPromptsWithChunkedPrefill) {
  auto refs = LoadLlamaCppReferences("tests/data/refs/greedy_long.jsonl");
  ASSERT_EQ(refs.size(), 19u);
  Agreement a = RunAndCompare("models/tinycode-4m-f16.gguf", refs, 37);
  EXPECT_EQ(a.real_divergences, 0);
  EXPECT_EQ(a.identical + a.near_tie_divergences, 19);
}

TEST(GreedyReferenceTest, F16ReproducesLlamaCppShortPrompts) {
  auto refs = LoadLlamaCppReferences("tests/data/refs/greedy_short.jsonl");
  ASSERT_EQ(refs.size(), 40u);
  Agreement a = RunAndCompare("models/tinycode-4m-f16.gguf", refs, 512);
  EXPECT_EQ(a.real_divergences, 0);
}

TEST(GreedyReferenceTest, Q8AgreementWithLlamaCppQ8IsReported) {
  auto refs = LoadLlamaCppReferences("tests/data/refs/greedy_short_q8_0.jsonl");
  ASSERT_EQ(refs.size(), 40u);
  Agreement a = RunAndCompare("tests/data/tinycode-4m-q8_0.gguf", refs, 512);
  // llama.cpp quantizes activations to 8 bits for Q8_0 matmuls; glimpse keeps them in fp32,
  // so exact agreement is not expected. A broken Q8_0 path would agree on almost nothing.
  EXPECT_GE(a.identical, 20);
}

// The short and the long reference prompts (59 in all), the long ones prefilled in 37-token
// chunks.
struct ReferenceSet {
  std::vector<Reference> refs;
  int32_t prefill_chunk;
};
std::vector<ReferenceSet> ShortAndLongReferences() {
  return {{LoadLlamaCppReferences("tests/data/refs/greedy_short.jsonl"), 512},
          {LoadLlamaCppReferences("tests/data/refs/greedy_long.jsonl"), 37}};
}

// llama.cpp keeps its KV cache in fp16 by default (these references were made so): an fp16
// cache must reproduce them as the fp32 one does.
TEST(GreedyReferenceTest, F16KvCacheReproducesLlamaCpp) {
  const std::vector<ReferenceSet> sets = ShortAndLongReferences();
  ASSERT_EQ(sets[0].refs.size() + sets[1].refs.size(), 59u);
  for (const ReferenceSet& set : sets) {
    Agreement a = RunAndCompare("models/tinycode-4m-f16.gguf", set.refs, set.prefill_chunk,
                                kernels::cpu::KvElementType::kF16);
    EXPECT_EQ(a.real_divergences, 0);
    EXPECT_EQ(a.identical + a.near_tie_divergences, static_cast<int>(set.refs.size()));
  }
}

// bf16 keeps 8 significant bits of each key and value: greedy output may part from llama.cpp's
// where the model is nearly undecided, and nowhere else. (Measured: 54 of 59 identical, every
// divergence at a top-2 gap under 0.002.) A cache read back wrongly agrees on almost nothing.
TEST(GreedyReferenceTest, Bf16KvCacheDivergesOnlyWhereTheModelIsNearlyUndecided) {
  int identical = 0;
  for (const ReferenceSet& set : ShortAndLongReferences()) {
    Agreement a = RunAndCompare("models/tinycode-4m-f16.gguf", set.refs, set.prefill_chunk,
                                kernels::cpu::KvElementType::kBF16, /*close_gap=*/0.01f);
    EXPECT_EQ(a.real_divergences, 0) << "a divergence where the top two logits differ by > 0.01";
    identical += a.identical;
  }
  EXPECT_GE(identical, 50) << "of 59";
}

}  // namespace
}  // namespace glimpse
