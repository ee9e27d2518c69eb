// The serving engine on the bundled model split over two in-process CPU tensor-parallel ranks
// (server::LoadedModel with --tensor_parallel_size=2, as `glimpse serve` builds it): greedy
// streams reproduce llama.cpp's references as the unsplit engine does, including under
// preemption (swap and recompute: every rank's blocks swapped and recomputed alike) and with
// n > 1 (copy-on-write of the shared prompt block on every rank). The model-level test
// (model/tensor_parallel_model_test) found no near-tie divergence for two ranks on these
// references, so tokens must be equal.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "scheduler/engine.h"
#include "server/loaded_model.h"
#include "tests/greedy_requests.h"
#include "tests/llama_cpp_refs.h"

namespace glimpse::scheduler {
namespace {

constexpr char kModel[] = "models/tinycode-4m-f16.gguf";

using glimpse::testing::LlamaCppReference;
using glimpse::testing::LoadLlamaCppReferences;

using glimpse::testing::ExpectGreedyReferences;
using glimpse::testing::FirstReferences;

class TensorParallelEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two ranks of one thread each.
    auto loaded = server::LoadedModel::Load(kModel, /*num_threads=*/2, server::Device::kCpu,
                                            /*tensor_parallel_size=*/2);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = std::move(*loaded);
    ASSERT_EQ(loaded_.tensor_parallel_size(), 2);
  }

  std::unique_ptr<Engine> MakeEngine(const EngineOptions& options) {
    auto engine = Engine::Create(*loaded_.runner, *loaded_.tokenizer, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return nullptr;
    (*engine)->Start();
    return std::move(*engine);
  }

  // Submits the references `which` (each with n completions) and checks every completion
  // against llama.cpp's greedy continuation.
  static void ExpectReferences(Engine& engine, const std::vector<size_t>& which, int32_t n) {
    ExpectGreedyReferences(engine, LoadLlamaCppReferences(), which, n, absl::Seconds(10));
  }

  server::LoadedModel loaded_;
};

TEST_F(TensorParallelEngineTest, KvBlocksPerDeviceHoldHalfTheHeads) {
  auto whole = server::LoadedModel::Load(kModel, 1, server::Device::kCpu, 1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(2 * loaded_.runner->KvBytesPerBlockPerDevice(16),
            whole->runner->KvBytesPerBlockPerDevice(16));
}

TEST_F(TensorParallelEngineTest, ConcurrentGreedyStreamsMatchLlamaCpp) {
  EngineOptions options;
  options.num_kv_blocks = 512;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  ExpectReferences(*engine, FirstReferences(16), 1);
}

class TensorParallelPreemptionTest : public TensorParallelEngineTest,
                                     public ::testing::WithParamInterface<PreemptionMode> {};

TEST_P(TensorParallelPreemptionTest, TinyKvPoolPreemptsAndOutputsStayIdentical) {
  EngineOptions options;
  // 8 concurrent sequences of ~150-250 tokens need ~100 blocks; give them 40.
  options.num_kv_blocks = 40;
  options.num_host_blocks = 200;
  options.scheduler.preemption_mode = GetParam();
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  ExpectReferences(*engine, FirstReferences(8), 1);
  EXPECT_GT(engine->GetLoad().num_preemptions, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, TensorParallelPreemptionTest,
                         ::testing::Values(PreemptionMode::kRecompute, PreemptionMode::kSwap));

TEST_F(TensorParallelEngineTest, MultipleCompletionsCopyTheSharedBlockOnEveryRank) {
  const std::vector<LlamaCppReference> refs = LoadLlamaCppReferences();
  // Prompts ending inside a block (of 16): the forks share that block, and their first
  // tokens copy it (on both ranks) before writing.
  std::vector<size_t> which;
  for (size_t i = 0; i < refs.size() && which.size() < 2; ++i) {
    if (refs[i].prompt.size() % 16 != 0) which.push_back(i);
  }
  ASSERT_EQ(which.size(), 2u);
  auto engine = MakeEngine(EngineOptions());
  ASSERT_NE(engine, nullptr);
  ExpectReferences(*engine, which, 3);
}

TEST(TensorParallelLoadTest, ImpossibleSplitIsRefusedWithTheHeadSplitReason) {
  auto three = server::LoadedModel::Load(kModel, 2, server::Device::kCpu, 3);
  ASSERT_EQ(three.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(three.status().message()).find("2 KV heads do not split evenly over 3"),
            std::string::npos)
      << three.status();
}

}  // namespace
}  // namespace glimpse::scheduler
