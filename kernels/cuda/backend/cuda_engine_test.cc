// The serving engine on the CUDA backend: what the engine asks of a device backend beyond the
// forward pass — KV blocks copied on the device (copy-on-write of a prompt shared by n > 1
// completions), swapped to the host and back (swap preemption), recomputed (recompute
// preemption) — with greedy outputs checked against llama.cpp's references, as
// tests/engine_test.cc checks the CPU backend.
//
// The F32 model file with an fp32 KV cache: the CUDA backend matches the CPU backend there to
// fp32 rounding (cuda_greedy_test: no divergence over the references), so its greedy tokens
// must equal llama.cpp's whatever the batches and preemptions. Skips cleanly without a device.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/device_skip.h"
#include "model/gguf.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "scheduler/engine.h"
#include "tests/greedy_requests.h"
#include "tests/llama_cpp_refs.h"

namespace glimpse::scheduler {
namespace {

using glimpse::testing::DrainTokens;
using glimpse::testing::GreedyRequest;
using Reference = glimpse::testing::LlamaCppReference;

constexpr char kF32Model[] = "tests/data/tinycode-4m.gguf";

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = kernels::cuda::CreateCudaBackend({});
    if (!backend.ok()) GLIMPSE_SKIP_WITHOUT_CUDA(backend.status().message());
    backend_ = std::move(*backend);
    auto file = model::GgufFile::Open(kF32Model);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    auto m = model::LlamaModel::Load(*file_, *backend_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    auto tokenizer = model::Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    refs_ = glimpse::testing::LoadLlamaCppReferences();
    ASSERT_GE(refs_.size(), 8u);
  }

  std::unique_ptr<Engine> MakeEngine(const EngineOptions& options) {
    auto engine = Engine::Create(*model_, *tokenizer_, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return nullptr;
    (*engine)->Start();
    return std::move(*engine);
  }

  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<model::GgufFile> file_;
  std::unique_ptr<model::LlamaModel> model_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::vector<Reference> refs_;
};

class CudaPreemptionTest : public CudaEngineTest,
                           public ::testing::WithParamInterface<PreemptionMode> {};

// 6 sequences of ~150-250 tokens need ~75 blocks of 16; 30 force preemptions, whose swaps copy
// KV blocks device -> host -> device (or whose recomputes prefill them again).
TEST_P(CudaPreemptionTest, TinyKvPoolPreemptsAndOutputsStayLlamaCpps) {
  if (backend_ == nullptr) return;
  EngineOptions options;
  options.num_kv_blocks = 30;
  options.num_host_blocks = 150;
  options.scheduler.preemption_mode = GetParam();
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 6; ++i) {
    auto s = engine->Submit(GreedyRequest("p" + std::to_string(i), refs_[i]));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (int i = 0; i < 6; ++i) {
    const auto tokens = DrainTokens(*streams[i], 1);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ((*tokens)[0], refs_[i].tokens) << "request " << i << " (" << refs_[i].id << ")";
  }
  EXPECT_GT(engine->GetLoad().num_preemptions, 0);
  ASSERT_TRUE(engine->WaitIdle(absl::Seconds(30)));
  EXPECT_EQ(engine->GetLoad().kv_blocks_used, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, CudaPreemptionTest,
                         ::testing::Values(PreemptionMode::kRecompute, PreemptionMode::kSwap));

// n = 3 completions share the prompt's blocks; the partly filled last one is copied on the
// device (Backend::CopyWithinBackend) when each completion first writes to it.
TEST_F(CudaEngineTest, CompletionsSharingAPromptCopyItsLastBlockOnTheDevice) {
  if (backend_ == nullptr) return;
  auto engine = MakeEngine(EngineOptions());
  ASSERT_NE(engine, nullptr);
  // A prompt that does not end on a block boundary, so the shared last block is partial.
  const Reference* ref = nullptr;
  for (const Reference& r : refs_) {
    if (r.prompt.size() % 16 != 0) {
      ref = &r;
      break;
    }
  }
  ASSERT_NE(ref, nullptr);
  auto stream = engine->Submit(GreedyRequest("n3", *ref, 3));
  ASSERT_TRUE(stream.ok()) << stream.status();
  const auto tokens = DrainTokens(**stream, 3);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*tokens)[i], ref->tokens) << "completion " << i;
}

}  // namespace
}  // namespace glimpse::scheduler
