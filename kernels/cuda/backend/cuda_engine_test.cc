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
#include <cstdint>
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

// The steps the backend has begun: each is counted once, when it begins (eager) or when its
// graph is launched, before the host first waits for it.
int64_t StepsBegun(const kernels::Backend& backend) {
  int64_t steps = 0;
  for (const kernels::BackendCounter& c : backend.Counters()) {
    if (c.name == "cuda_graph_captures_total" || c.name == "cuda_graph_replays_total" ||
        c.name.starts_with("cuda_graph_eager_")) {
      steps += c.value;
    }
  }
  return steps;
}

// Overlapped (EngineOptions::overlap_outputs, the default), a step's outputs go out while the
// next step computes: the backend hands the engine's work the host's first wait for that
// step, so each output of step j reaches its stream once step j + 1 has begun on the device
// (its graph launched), and the last one (which finishes the request) at once. Not overlapped,
// before step j + 1 begins. A request aborted while its outputs wait gets them all.
TEST_F(CudaEngineTest, OutputsGoOutWhileTheNextStepComputes) {
  if (backend_ == nullptr) return;
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "overlapped" : "not overlapped");
    EngineOptions options;
    options.overlap_outputs = overlap;
    auto created = Engine::Create(*model_, *tokenizer_, options);
    ASSERT_TRUE(created.ok()) << created.status();
    std::unique_ptr<Engine> engine = std::move(*created);
    const int32_t length = 24;
    scheduler::EngineRequest watched = glimpse::testing::GreedyRequest("watched", refs_[0]);
    watched.stopping.max_tokens = length;
    auto stream = engine->Submit(watched);
    ASSERT_TRUE(stream.ok()) << stream.status();
    auto to_abort = engine->Submit(glimpse::testing::GreedyRequest("aborted", refs_[1]));
    ASSERT_TRUE(to_abort.ok()) << to_abort.status();
    // Steps begun at each of the watched stream's outputs (the listener runs on the engine
    // thread, inside the push).
    std::vector<int64_t> steps_at_push;
    const int64_t steps_before = StepsBegun(*backend_);
    (*stream)->SetListener([&] { steps_at_push.push_back(StepsBegun(*backend_) - steps_before); });
    engine->Start();
    // Aborted after its first output, while (overlapped) its second waits.
    const RequestOutput first = (*to_abort)->Next();
    EXPECT_TRUE(engine->Abort("aborted"));
    auto aborted_tokens = glimpse::testing::DrainTokens(**to_abort, 1);
    ASSERT_TRUE(aborted_tokens.ok()) << aborted_tokens.status();
    ASSERT_EQ(first.deltas.size(), 1u);
    std::vector<int32_t> got = first.deltas[0].token_ids;
    got.insert(got.end(), (*aborted_tokens)[0].begin(), (*aborted_tokens)[0].end());
    ASSERT_LE(got.size(), refs_[1].tokens.size());
    EXPECT_EQ(got, std::vector<int32_t>(refs_[1].tokens.begin(),
                                        refs_[1].tokens.begin() + static_cast<long>(got.size())));
    auto tokens = glimpse::testing::DrainTokens(**stream, 1);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ((*tokens)[0],
              std::vector<int32_t>(refs_[0].tokens.begin(), refs_[0].tokens.begin() + length));
    ASSERT_TRUE(engine->WaitIdle(absl::Seconds(30)));
    engine->Stop();
    // One output a step, each with its token: step j's is push j.
    ASSERT_EQ(steps_at_push.size(), static_cast<size_t>(length));
    for (size_t j = 0; j < steps_at_push.size(); ++j) {
      const bool last = j + 1 == steps_at_push.size();
      EXPECT_EQ(steps_at_push[j], static_cast<int64_t>(j) + (overlap && !last ? 2 : 1))
          << "output of step " << j;
    }
  }
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
