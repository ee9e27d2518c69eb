// The offline generator end to end on the bundled model: seeded sampling is reproducible and
// independent of what else is in the batch, stop tokens end a sequence, and a KV pool that is
// too small is reported, with every block returned.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/block_pool.h"
#include "model/kv_cache_storage.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "scheduler/offline_generator.h"
#include "server/loaded_model.h"
#include "tests/recording_step_runner.h"

namespace glimpse::scheduler {
namespace {

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = server::LoadedModel::Load("models/tinycode-4m-f16.gguf", /*num_threads=*/2);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = std::move(*loaded);
    model_ = loaded_.model.get();
    tokenizer_ = loaded_.tokenizer.get();
  }

  GenerationRequest Request(const std::string& text, int32_t max_tokens, float temperature,
                            uint64_t seed) {
    GenerationRequest r;
    r.prompt_tokens = tokenizer_->Encode(text, /*add_special=*/true);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = seed;
    r.ignore_eos = true;
    return r;
  }

  absl::StatusOr<std::vector<GenerationResult>> Run(const std::vector<GenerationRequest>& reqs,
                                                    int32_t num_blocks, int32_t chunk = 512) {
    model::KvCacheStorage kv(*loaded_.backend, model_->config(), num_blocks, 16);
    kvcache::BlockPool pool(num_blocks);
    OfflineGeneratorOptions options;
    options.prefill_chunk_tokens = chunk;
    OfflineGenerator generator(*model_, kv, pool, options);
    auto results = generator.Run(reqs);
    EXPECT_EQ(pool.num_free(), num_blocks) << "blocks leaked";
    return results;
  }

  server::LoadedModel loaded_;
  model::LlamaModel* model_ = nullptr;        // Owned by loaded_.
  model::Tokenizer* tokenizer_ = nullptr;     // Owned by loaded_.
};

TEST_F(GeneratorTest, SeededSamplingIsReproducibleAndIndependentOfTheBatch) {
  const GenerationRequest target = Request("import os\n\ndef main(", 40, 0.9f, 1234);
  auto alone = Run({target}, 64);
  ASSERT_TRUE(alone.ok()) << alone.status();
  auto again = Run({target}, 64, /*chunk=*/5);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*alone)[0].tokens, (*again)[0].tokens);

  std::vector<GenerationRequest> batch = {Request("class Foo:\n", 30, 0.7f, 1),
                                          target,
                                          Request("for i in range(10):\n", 50, 1.0f, 2)};
  auto mixed = Run(batch, 64);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ((*mixed)[1].tokens, (*alone)[0].tokens);

  // A different seed gives a different continuation (40 tokens at temperature 0.9).
  GenerationRequest other = target;
  other.sampling.seed = 99;
  auto different = Run({other}, 64);
  ASSERT_TRUE(different.ok());
  EXPECT_NE((*different)[0].tokens, (*alone)[0].tokens);
}

// Run() sizes the activations for its largest possible step before its first step, and no
// step exceeds that reservation (CUDA graphs rely on it; see StepRunner::ReserveActivations).
TEST_F(GeneratorTest, ReservesActivationsForEveryStepBeforeTheFirst) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 5; ++i) {
    requests.push_back(Request("def f" + std::to_string(i) + "(x):\n    return", 6, 0.0f, 1));
  }
  loaded_.runner->AllocateKvCache(64, 16, 0);
  testing::RecordingStepRunner runner(*loaded_.runner);
  kvcache::BlockPool pool(64);
  OfflineGeneratorOptions options;
  options.max_step_tokens = 24;  // below the prompts' total: prefills are chunked
  options.prefill_chunk_tokens = 8;
  OfflineGenerator generator(runner, pool, options);
  auto results = generator.Run(requests);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(runner.reservations().size(), 1u);
  EXPECT_EQ(runner.reservations()[0], std::make_pair(24, 5));
  EXPECT_GT(runner.num_steps(), 1);
  EXPECT_LE(runner.max_step_tokens_run(), 24);
  EXPECT_LE(runner.max_logits_rows_run(), 5);
}

TEST_F(GeneratorTest, StopTokenEndsTheSequence) {
  GenerationRequest greedy = Request("def f(x):\n", 30, 0.0f, 0);
  auto free_run = Run({greedy}, 64);
  ASSERT_TRUE(free_run.ok());
  // Make the 5th generated token a stop token: generation ends right there.
  const int32_t stop = (*free_run)[0].tokens[4];
  greedy.stop_token_ids = {stop};
  greedy.ignore_eos = false;
  auto stopped = Run({greedy}, 64);
  ASSERT_TRUE(stopped.ok());
  const auto& tokens = (*stopped)[0].tokens;
  ASSERT_LE(tokens.size(), 5u);
  EXPECT_EQ(tokens.back(), stop);
  EXPECT_EQ((*stopped)[0].finish_reason, FinishReason::kStopToken);
  EXPECT_EQ((*free_run)[0].finish_reason, FinishReason::kLength);
}

TEST_F(GeneratorTest, TooSmallKvPoolIsResourceExhaustedAndReleasesBlocks) {
  std::vector<GenerationRequest> reqs(3, Request("x = 1\n", 100, 0.0f, 0));
  auto results = Run(reqs, 6);  // 6 blocks of 16 cannot hold 3 x ~105 tokens.
  EXPECT_EQ(results.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(GeneratorTest, RejectsBadRequests) {
  GenerationRequest empty = Request("x", 4, 0.0f, 0);
  empty.prompt_tokens.clear();
  EXPECT_EQ(Run({empty}, 8).status().code(), absl::StatusCode::kInvalidArgument);
  GenerationRequest too_long = Request("x", 600, 0.0f, 0);  // context is 512
  EXPECT_EQ(Run({too_long}, 64).status().code(), absl::StatusCode::kInvalidArgument);
  GenerationRequest bad_temp = Request("x", 4, -1.0f, 0);
  EXPECT_EQ(Run({bad_temp}, 8).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glimpse::scheduler
