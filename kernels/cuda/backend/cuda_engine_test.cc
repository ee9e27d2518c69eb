// The serving engine on the CUDA backend: what the engine asks of a device backend beyond the
// forward pass — KV blocks copied on the device (copy-on-write of a prompt shared by n > 1
// completions), swapped to the host and back (swap preemption), recomputed (recompute
// preemption) — with greedy outputs checked against llama.cpp's references, as
// tests/engine_test.cc checks the CPU backend.
//
// The F32 model file with an fp32 KV cache: the CUDA backend matches the CPU backend there to
// fp32 rounding (cuda_greedy_test: no divergence over the references), so its greedy tokens
// must equal llama.cpp's whatever the batches and preemptions. Skips cleanly without a device.
// Also: a model the attention kernels cannot run is refused at load.
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
#include "tools/make_model/make_model.h"

namespace glimpse::scheduler {
namespace {

using glimpse::testing::ExpectGreedyReferences;
using glimpse::testing::FirstReferences;
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
  ExpectGreedyReferences(*engine, refs_, FirstReferences(6), 1, absl::Seconds(30));
  EXPECT_GT(engine->GetLoad().num_preemptions, 0);
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
  size_t partial = 0;
  while (partial < refs_.size() && refs_[partial].prompt.size() % 16 == 0) ++partial;
  ASSERT_LT(partial, refs_.size());
  ExpectGreedyReferences(*engine, refs_, {partial}, 3, absl::Seconds(30));
}

// A model whose attention the kernels cannot run is refused when it loads, saying why and
// what to do, instead of aborting the server at its first step; the kernels' widest shape
// (head_dim 128, 8 query heads per KV head) loads.
TEST(CudaModelLoadTest, RefusesAttentionShapesTheKernelsLack) {
  auto backend = kernels::cuda::CreateCudaBackend({});
  if (!backend.ok()) GLIMPSE_SKIP_WITHOUT_CUDA(backend.status().message());
  struct Case {
    tools::ModelShape shape;
    const char* expected;  // in the error; null: loads
  };
  auto shape = [](const char* name, int32_t dim, int32_t heads, int32_t kv_heads) {
    return tools::ModelShape{.name = name,
                             .dim = dim,
                             .num_layers = 1,
                             .num_heads = heads,
                             .num_kv_heads = kv_heads,
                             .ffn_dim = 64,
                             .vocab_size = 4096,
                             .context_length = 256};
  };
  for (const Case& c : {Case{shape("head-dim-48", 96, 2, 2), "head_dim 48"},
                        Case{shape("group-9", 9 * 32, 9, 1), "(9 per KV head)"},
                        Case{shape("head-dim-128-group-8", 8 * 128, 8, 1), nullptr}}) {
    const std::string path = ::testing::TempDir() + "/" + c.shape.name + ".gguf";
    tools::MakeModelOptions options;
    options.out_path = path;
    ASSERT_TRUE(tools::MakeModelWithShape(c.shape, options).ok()) << c.shape.name;
    auto file = model::GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto loaded = model::LlamaModel::Load(**file, **backend);
    if (c.expected == nullptr) {
      EXPECT_TRUE(loaded.ok()) << c.shape.name << ": " << loaded.status();
      continue;
    }
    ASSERT_FALSE(loaded.ok()) << c.shape.name << " must be refused at load";
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(loaded.status().message().find(c.expected), std::string::npos) << loaded.status();
    EXPECT_NE(loaded.status().message().find("--device=cpu"), std::string::npos) << loaded.status();
  }
}

}  // namespace
}  // namespace glimpse::scheduler
