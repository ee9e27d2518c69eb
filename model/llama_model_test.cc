// Forward-pass tests on the bundled model: batch invariance (DESIGN.md, Numerics) and input
// validation. Greedy agreement with llama.cpp is in tests/greedy_reference_test.cc.
#include "model/llama_model.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/gguf.h"
#include "model/kv_cache_storage.h"
#include "model/step_batch.h"
#include "tests/llama_cpp_refs.h"

namespace glimpse::model {
namespace {

constexpr char kModelPath[] = "models/tinycode-4m-f16.gguf";

std::vector<std::vector<int32_t>> LoadPrompts(size_t count) {
  std::vector<std::vector<int32_t>> prompts;
  for (glimpse::testing::LlamaCppReference& r :
       glimpse::testing::LoadLlamaCppReferences(glimpse::testing::kGreedyShortRefs, count)) {
    prompts.push_back(std::move(r.prompt));
  }
  return prompts;
}

class LlamaModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto file = GgufFile::Open(kModelPath);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    backend_ = std::make_unique<kernels::cpu::CpuBackend>(2);
    auto model = LlamaModel::Load(*file_, *backend_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  // Logits of every prompt position of every sequence, computed with the given block size,
  // prefill chunk size and number of sequences sharing each step. Sequences enter the batch
  // as others finish, so prefill chunks of different sequences and progress mix freely.
  // Key: (sequence, position) -> logits row.
  std::map<std::pair<int, int>, std::vector<float>> RunAll(
      const std::vector<std::vector<int32_t>>& prompts, int32_t block_size, int32_t chunk,
      int32_t max_batch) {
    const int32_t vocab = model_->config().vocab_size;
    int32_t total_blocks = 0;
    for (const auto& p : prompts) total_blocks += (p.size() + block_size - 1) / block_size + 1;
    KvCacheStorage kv(*backend_, model_->config(), total_blocks, block_size);
    // Blocks handed out in a scrambled order, so page tables are not contiguous.
    std::vector<int32_t> pool(total_blocks);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), std::mt19937(block_size * 131 + chunk));
    std::vector<std::vector<int32_t>> tables(prompts.size());
    size_t next_block = 0;
    for (size_t s = 0; s < prompts.size(); ++s) {
      const size_t n = (prompts[s].size() + block_size - 1) / block_size;
      tables[s].assign(pool.begin() + next_block, pool.begin() + next_block + n);
      next_block += n;
    }
    std::map<std::pair<int, int>, std::vector<float>> out;
    std::vector<int32_t> done(prompts.size(), 0);
    size_t next_seq = 0;
    std::vector<size_t> active;
    std::vector<float> logits;
    while (true) {
      while (static_cast<int32_t>(active.size()) < max_batch && next_seq < prompts.size()) {
        active.push_back(next_seq++);
      }
      if (active.empty()) break;
      StepBatch batch;
      std::vector<std::pair<size_t, int32_t>> rows;  // (seq, position) per logits row
      for (size_t s : active) {
        const int32_t n = std::min<int32_t>(chunk, prompts[s].size() - done[s]);
        batch.AddSequence(std::span<const int32_t>(prompts[s]).subspan(done[s], n), done[s],
                          tables[s], block_size, false);
        for (int32_t i = 0; i < n; ++i) {
          batch.logits_rows.push_back(batch.num_tokens() - n + i);
          rows.emplace_back(s, done[s] + i);
        }
        done[s] += n;
      }
      logits.resize(rows.size() * vocab);
      absl::Status st = model_->Forward(batch, kv, logits.data());
      EXPECT_TRUE(st.ok()) << st;
      if (!st.ok()) return out;
      for (size_t r = 0; r < rows.size(); ++r) {
        out[{static_cast<int>(rows[r].first), rows[r].second}] =
            std::vector<float>(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      }
      std::erase_if(active, [&](size_t s) { return done[s] == static_cast<int32_t>(prompts[s].size()); });
    }
    return out;
  }

  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<kernels::cpu::CpuBackend> backend_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(LlamaModelTest, LogitsAreBitwiseIdenticalAcrossBlockSizesChunkingAndBatches) {
  // 33 prompts of 52-201 tokens (they cross block edges at every block size below); trim
  // some so lengths vary more.
  std::vector<std::vector<int32_t>> prompts = LoadPrompts(33);
  ASSERT_EQ(prompts.size(), 33u);
  for (size_t i = 0; i < prompts.size(); i += 3) prompts[i].resize(prompts[i].size() / 2 + 1);

  // Reference: each sequence alone, whole prompt in one step, block size 16.
  std::map<std::pair<int, int>, std::vector<float>> want;
  for (size_t s = 0; s < prompts.size(); ++s) {
    auto one = RunAll({prompts[s]}, 16, 1 << 20, 1);
    for (auto& [key, row] : one) want[{static_cast<int>(s), key.second}] = std::move(row);
  }

  struct Config {
    int32_t block_size, chunk, max_batch;
  };
  for (const Config& c : {Config{1, 7, 5}, Config{16, 1, 33}, Config{17, 1 << 20, 33},
                          Config{17, 7, 12}, Config{16, 7, 2}, Config{1, 1 << 20, 33}}) {
    auto got = RunAll(prompts, c.block_size, c.chunk, c.max_batch);
    ASSERT_EQ(got.size(), want.size());
    int mismatches = 0;
    for (auto& [key, row] : want) {
      const auto& g = got.at(key);
      if (std::memcmp(g.data(), row.data(), row.size() * sizeof(float)) != 0) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << "block_size=" << c.block_size << " chunk=" << c.chunk
                             << " max_batch=" << c.max_batch;
  }
}

// One sequence's first three tokens (ids 1, 2, 3) in block 0 of 16 slots, its last row's
// logits wanted.
StepBatch ThreeTokenBatch() {
  StepBatch batch;
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<int32_t> blocks = {0};
  batch.AddSequence(tokens, 0, blocks, 16, true);
  return batch;
}

TEST_F(LlamaModelTest, ForwardRejectsInconsistentBatch) {
  KvCacheStorage kv(*backend_, model_->config(), 4, 16);
  StepBatch batch = ThreeTokenBatch();
  batch.positions[1] = 7;  // Not consecutive.
  std::vector<float> logits(model_->config().vocab_size);
  absl::Status st = model_->Forward(batch, kv, logits.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  StepBatch out_of_vocab;
  const std::vector<int32_t> bad = {1, 999999};
  const std::vector<int32_t> blocks = {0};
  out_of_vocab.AddSequence(bad, 0, blocks, 16, true);
  EXPECT_EQ(model_->Forward(out_of_vocab, kv, logits.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

// Host work handed to the next forward pass (OverlapNextForward) runs once, in that pass: on
// the CPU backend when the step begins (its results not yet written); a pass that fails
// before its step begins leaves it to the caller, and no later pass runs it.
TEST_F(LlamaModelTest, OverlapWorkRunsOnceInTheNextStepOrIsLeftToTheCaller) {
  KvCacheStorage kv(*backend_, model_->config(), 4, 16);
  const StepBatch batch = ThreeTokenBatch();
  int32_t index = -7;  // poison: the pass writes the argmax's column here
  float value = 0.0f;
  int runs = 0;
  int32_t index_seen_by_work = 0;
  kernels::HostWork work([&] {
    ++runs;
    index_seen_by_work = index;
  });
  model_->OverlapNextForward(&work);
  ASSERT_TRUE(model_->ForwardArgMax(batch, kv, &index, &value).ok());
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(work.pending());
  EXPECT_EQ(index_seen_by_work, -7) << "the CPU backend runs the work as the step begins";
  EXPECT_GE(index, 0);
  ASSERT_TRUE(model_->ForwardArgMax(batch, kv, &index, &value).ok());
  EXPECT_EQ(runs, 1) << "a later pass ran the work again";

  // Refused before its step begins (k < 1): the work is left, and forgotten.
  work.Reset([&] { ++runs; });
  model_->OverlapNextForward(&work);
  int32_t count = 0;
  EXPECT_EQ(
      model_->ForwardTopK(batch, kv, 0, &count, &index, &value, nullptr, nullptr, nullptr, nullptr)
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(work.pending());
  ASSERT_TRUE(model_->ForwardArgMax(batch, kv, &index, &value).ok());
  EXPECT_EQ(runs, 1) << "a later pass ran work it was not handed";
  work.Run();
  EXPECT_EQ(runs, 2);
  work.Run();
  EXPECT_EQ(runs, 2) << "HostWork runs at most once";
}

TEST_F(LlamaModelTest, LoadRejectsModelWithMissingTensor) {
  // Rename one layer's tensor in the tensor table: the loader must name what is missing.
  std::ifstream in(kModelPath, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  const std::string name = "blk.3.ffn_up.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  it[5] = 'X';  // "blk.3.Xfn_up.weight"
  auto file = GgufFile::FromBytes(bytes.data(), bytes.size(), "renamed.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto model = LlamaModel::Load(**file, *backend_);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(std::string(model.status().message()).find("has no tensor 'blk.3.ffn_up.weight'"),
            std::string::npos)
      << model.status();
}

}  // namespace
}  // namespace glimpse::model
