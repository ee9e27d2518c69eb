// CUDA graphs of decode steps (issue #5) on the bundled model: three CUDA backends run the same
// steps side by side —
//   graphs   the default: decode steps of <= 256 sequences warm up, are captured, then replay;
//   recorded CudaBackendOptions::graphs_run_eagerly_for_testing: the very same recorded
//            launches (padding, arena, one attention plan per bucket) run eagerly;
//   eager    cuda_graphs = false: every op enqueued as it comes, unpadded;
// and every step's logits must be bitwise equal between graphs and recorded (same kernels in
// the same order: a replay that reads a stale index array, a stale pointer or a wrong plan
// differs), and close to eager (a different split-KV plan and GEMM row count change fp32
// rounding only). The schedule grows the batch 1 -> 3 -> 17 -> 64 -> 65 (bucket 80) -> 257
// (eager) and shrinks it back, crosses block boundaries (page tables grow between replays),
// mixes prefill into some steps (eager), and crosses a KV capacity tier. The counters must show, for consecutive
// decode steps of the same bucket and tier: a warm-up, then a capture, then replays.
// Skips cleanly (GTEST_SKIP) without a CUDA device; the shape-policy tests at the top need none.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/device_skip.h"
#include "kernels/cuda/backend/decode_graphs.h"
#include "model/gguf.h"
#include "model/kv_cache_storage.h"
#include "model/llama_model.h"
#include "model/step_batch.h"

namespace glimpse {
namespace {

constexpr int32_t kBlockSize = 16;
constexpr int32_t kNumBlocks = 1024;

using kernels::cuda::DecodeBucketFor;
using kernels::cuda::DecodeGraphRecorder;
using kernels::cuda::GraphEagerReason;
using kernels::cuda::KvCapacityFor;

// ---- Shape policy (host only) ----------------------------------------------------------------

TEST(DecodeGraphPolicyTest, BatchesPadToTheNextBucketUpTo256) {
  const std::pair<int64_t, int32_t> cases[] = {
      {0, 0},     {1, 1},     {2, 2},     {3, 4},     {5, 8},     {9, 16},  {16, 16},  {17, 24},
      {25, 32},   {33, 48},   {49, 64},   {64, 64},   {65, 80},   {81, 96}, {97, 112}, {113, 128},
      {129, 160}, {161, 192}, {193, 224}, {225, 256}, {256, 256}, {257, 0}, {4096, 0}};
  for (const auto& [batch, bucket] : cases) EXPECT_EQ(DecodeBucketFor(batch), bucket) << batch;
}

TEST(DecodeGraphPolicyTest, KvCapacityTiersArePowersOfTwoFrom256) {
  EXPECT_EQ(KvCapacityFor(1), 256);
  EXPECT_EQ(KvCapacityFor(256), 256);
  EXPECT_EQ(KvCapacityFor(257), 512);
  EXPECT_EQ(KvCapacityFor(5000), 8192);
  EXPECT_EQ(KvCapacityFor(1 << 17), 1 << 17);
  EXPECT_EQ(KvCapacityFor((1 << 17) + 1), 0);
}

TEST(DecodeGraphPolicyTest, OnlyDecodeStepsWithOneLogitsRowPerSequenceQualify) {
  const DecodeGraphRecorder recorder(DecodeGraphRecorder::Options{});
  kernels::ForwardShape decode;
  decode.num_tokens = 17;
  decode.num_seqs = 17;
  decode.num_logits_rows = 17;
  decode.max_kv_len = 300;
  decode.decode_only = true;
  EXPECT_EQ(recorder.Ineligibility(decode), GraphEagerReason::kNumReasons);

  kernels::ForwardShape s = decode;
  s.decode_only = false;
  s.num_tokens = 40;
  EXPECT_EQ(recorder.Ineligibility(s), GraphEagerReason::kNotDecode);
  s = decode;
  s.num_tokens = s.num_seqs = s.num_logits_rows = 257;
  EXPECT_EQ(recorder.Ineligibility(s), GraphEagerReason::kBatchTooLarge);
  s = decode;
  s.num_logits_rows = 16;
  EXPECT_EQ(recorder.Ineligibility(s), GraphEagerReason::kLogitsRows);
  s = decode;
  s.max_kv_len = (1 << 17) + 1;
  EXPECT_EQ(recorder.Ineligibility(s), GraphEagerReason::kKvCapacity);

  DecodeGraphRecorder::Options off;
  off.enabled = false;
  EXPECT_EQ(DecodeGraphRecorder(off).Ineligibility(decode), GraphEagerReason::kDisabled);
}

TEST(DecodeGraphPolicyTest, CountersNameCapturesReplaysAndEveryEagerReason) {
  DecodeGraphRecorder recorder(DecodeGraphRecorder::Options{});
  recorder.CountEager(GraphEagerReason::kNotDecode);
  std::map<std::string, int64_t> counters;
  for (const kernels::BackendCounter& c : recorder.Counters()) counters[c.name] = c.value;
  EXPECT_EQ(counters.at("cuda_graph_captures_total"), 0);
  EXPECT_EQ(counters.at("cuda_graph_replays_total"), 0);
  EXPECT_EQ(counters.at("cuda_graph_eager_not_decode_steps_total"), 1);
  EXPECT_EQ(counters.at("cuda_graph_eager_warmup_steps_total"), 0);
  EXPECT_EQ(counters.at("cuda_graphs_cached"), 0);
  EXPECT_EQ(counters.at("cuda_graph_evictions_total"), 0);
  EXPECT_EQ(counters.size(), 4u + static_cast<size_t>(GraphEagerReason::kNumReasons));
  EXPECT_EQ(recorder.Summary(), "0 captures, 0 replays, eager steps: not_decode 1");
}

// ---- Graphs on the device ---------------------------------------------------------------------

// A full cache drops its least recently used graph for a new capture, and counts it: a
// signature seen once runs eagerly, the second time it is captured, then replayed.
TEST(DecodeGraphCacheTest, AFullCacheDropsTheLeastRecentlyUsedGraph) {
  cudaStream_t stream = nullptr;
  if (const cudaError_t err = cudaStreamCreate(&stream); err != cudaSuccess) {
    (void)cudaGetLastError();
    GLIMPSE_SKIP_WITHOUT_CUDA(cudaGetErrorString(err));
  }
  using Outcome = kernels::cuda::DecodeGraphCache::Outcome;
  kernels::cuda::DecodeGraphCache cache(/*max_graphs=*/2);
  int runs = 0;
  const std::vector<kernels::cuda::RecordedLaunch> launches = {[&runs](cudaStream_t) {
    ++runs;  // on the host: counts captures, not replays
    return cudaSuccess;
  }};
  auto run = [&](uint64_t signature) {
    std::string error;
    cudaError_t launch_error = cudaSuccess;
    const Outcome outcome = cache.Run({signature}, launches, stream, &error, &launch_error);
    EXPECT_EQ(launch_error, cudaSuccess) << error;
    return outcome;
  };
  EXPECT_EQ(run(1), Outcome::kFirstSeen);
  EXPECT_EQ(run(1), Outcome::kCaptured);
  EXPECT_EQ(run(2), Outcome::kFirstSeen);
  EXPECT_EQ(run(2), Outcome::kCaptured);
  EXPECT_EQ(run(1), Outcome::kReplayed);  // 1 now used more recently than 2
  EXPECT_EQ(cache.num_evicted(), 0);
  EXPECT_EQ(run(3), Outcome::kFirstSeen);
  EXPECT_EQ(run(3), Outcome::kCaptured);  // drops 2
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.num_evicted(), 1);
  EXPECT_EQ(run(1), Outcome::kReplayed);
  EXPECT_EQ(run(2), Outcome::kCaptured);  // seen before: captured again at once; drops 3
  EXPECT_EQ(cache.num_evicted(), 2);
  EXPECT_EQ(run(1), Outcome::kReplayed);
  EXPECT_EQ(run(2), Outcome::kReplayed);
  EXPECT_EQ(runs, 4);  // the four captures
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  (void)cudaStreamDestroy(stream);
}

std::map<std::string, int64_t> CountersOf(const kernels::Backend& backend) {
  std::map<std::string, int64_t> out;
  for (const kernels::BackendCounter& c : backend.Counters()) out[c.name] = c.value;
  return out;
}

int64_t Delta(const std::map<std::string, int64_t>& after,
              const std::map<std::string, int64_t>& before, const std::string& name) {
  const auto a = after.find(name);
  const auto b = before.find(name);
  EXPECT_TRUE(a != after.end()) << "no counter " << name;
  return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
}

struct Engine {
  std::string label;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<model::KvCacheStorage> kv;
};

// One sequence of the schedule: its tokens so far (prompt, then decode tokens) and blocks.
struct Sequence {
  std::vector<int32_t> tokens;
  int32_t num_computed = 0;
  std::vector<int32_t> blocks;
};

enum class Outcome { kEager, kWarmup, kCapture, kReplay };

// A model file and the KV cache's element type.
struct GraphCase {
  const char* model;
  kernels::cuda::CudaKvCacheDType kv_dtype;
  kernels::cuda::DecodeKernel decode = kernels::cuda::DecodeKernel::kCudaCores;
  // F32 weights: fp32 everywhere, only summation order differs from eager. bf16 weights: the
  // activations are rounded to bf16 before every matmul, so an fp32 difference can flip a
  // rounding and grow through the layers.
  double max_rel_l2() const {
    return std::string(model).find("f16") != std::string::npos ? 2e-2 : 1e-4;
  }
};

std::string GraphCaseName(const ::testing::TestParamInfo<GraphCase>& info) {
  const std::string model = info.param.model;
  return std::string(model.find("f16") != std::string::npos ? "F16" : "F32") +
         (info.param.kv_dtype == kernels::cuda::CudaKvCacheDType::kBFloat16 ? "Bf16Kv" : "Fp32Kv") +
         (info.param.decode == kernels::cuda::DecodeKernel::kMmaSync ? "MmaDecode" : "");
}

class CudaGraphTest : public ::testing::TestWithParam<GraphCase> {
 protected:
  void SetUp() override {
    kernels::cuda::CudaBackendOptions graphs;
    graphs.kv_cache_dtype = GetParam().kv_dtype;
    graphs.decode_attention = GetParam().decode;
    kernels::cuda::CudaBackendOptions recorded = graphs;
    recorded.graphs_run_eagerly_for_testing = true;
    kernels::cuda::CudaBackendOptions eager = graphs;
    eager.cuda_graphs = false;
    auto probe = kernels::cuda::CreateCudaBackend(graphs);
    if (!probe.ok()) GLIMPSE_SKIP_WITHOUT_CUDA(probe.status().message());
    auto file = model::GgufFile::Open(GetParam().model);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    const std::pair<const char*, kernels::cuda::CudaBackendOptions> kinds[] = {
        {"graphs", graphs}, {"recorded", recorded}, {"eager", eager}};
    for (const auto& [label, options] : kinds) {
      Engine e;
      e.label = label;
      if (engines_.empty()) {
        e.backend = std::move(*probe);
      } else {
        auto backend = kernels::cuda::CreateCudaBackend(options);
        ASSERT_TRUE(backend.ok()) << backend.status();
        e.backend = std::move(*backend);
      }
      auto m = model::LlamaModel::Load(*file_, *e.backend);
      ASSERT_TRUE(m.ok()) << m.status();
      e.model = std::move(*m);
      // Activations sized for the largest step below (a prefill of 192 prompts of <= 8
      // tokens; 257 logits rows), as a server sizes them for its step budget: otherwise the
      // first larger step moves them and every graph captured before never replays again.
      e.model->ReserveActivations(2048, 257);
      e.kv = std::make_unique<model::KvCacheStorage>(*e.backend, e.model->config(), kNumBlocks,
                                                     kBlockSize);
      engines_.push_back(std::move(e));
    }
    vocab_ = engines_[0].model->config().vocab_size;
    // Blocks handed out in a scrambled order, so page tables are not the identity.
    for (int32_t b = 0; b < kNumBlocks; ++b) free_blocks_.push_back((b * 37) % kNumBlocks);
  }

  int32_t Token() { return std::uniform_int_distribution<int32_t>(3, vocab_ - 1)(rng_); }

  int AddSequence(int32_t prompt_len) {
    Sequence s;
    for (int32_t i = 0; i < prompt_len; ++i) s.tokens.push_back(Token());
    seqs_.push_back(std::move(s));
    return static_cast<int>(seqs_.size()) - 1;
  }

  // One step over `members`: each runs all its not yet computed tokens (a prefill chunk, or one
  // decode token); every sequence wants its last logits unless it is in `no_logits`. Checks the
  // three engines' logits and returns what the graphs engine did with the step.
  Outcome Step(const std::vector<int>& members, const std::vector<int>& no_logits = {}) {
    model::StepBatch batch;
    bool decode_only = true;
    for (int id : members) {
      Sequence& s = seqs_[id];
      const int32_t n = static_cast<int32_t>(s.tokens.size()) - s.num_computed;
      decode_only = decode_only && n == 1;
      const int32_t kv_len = static_cast<int32_t>(s.tokens.size());
      while (static_cast<int32_t>(s.blocks.size()) * kBlockSize < kv_len) {
        s.blocks.push_back(free_blocks_.back());
        free_blocks_.pop_back();
      }
      const bool want = std::find(no_logits.begin(), no_logits.end(), id) == no_logits.end();
      batch.AddSequence(std::span<const int32_t>(s.tokens).subspan(s.num_computed),
                        s.num_computed, s.blocks, kBlockSize, want);
    }
    const size_t num_rows = batch.logits_rows.size();
    std::vector<std::vector<float>> logits(engines_.size());
    std::vector<std::map<std::string, int64_t>> before(engines_.size());
    std::vector<std::map<std::string, int64_t>> after(engines_.size());
    for (size_t e = 0; e < engines_.size(); ++e) {
      before[e] = CountersOf(*engines_[e].backend);
      logits[e].assign(num_rows * vocab_, std::nanf(""));
      const absl::Status status = engines_[e].model->Forward(batch, *engines_[e].kv,
                                                             logits[e].data());
      EXPECT_TRUE(status.ok()) << engines_[e].label << ": " << status;
      after[e] = CountersOf(*engines_[e].backend);
    }
    const std::string what = "step " + std::to_string(num_steps_) + " (" +
                             std::to_string(members.size()) + " sequences)";
    ++num_steps_;
    for (float v : logits[0]) {
      if (std::isnan(v)) {
        ADD_FAILURE() << what << ": NaN logits";
        break;
      }
    }
    // graphs == recorded, bitwise.
    for (size_t i = 0; i < logits[0].size(); ++i) {
      if (std::memcmp(&logits[0][i], &logits[1][i], sizeof(float)) != 0) {
        ADD_FAILURE() << what << ": graph logits differ from the recorded step run eagerly at "
                      << "row " << i / vocab_ << ", token " << i % vocab_ << ": "
                      << logits[0][i] << " vs " << logits[1][i];
        break;
      }
    }
    // graphs ~ eager, row by row.
    for (size_t r = 0; r < num_rows; ++r) {
      double err = 0.0;
      double norm = 0.0;
      for (int32_t v = 0; v < vocab_; ++v) {
        const double a = logits[0][r * vocab_ + v];
        const double b = logits[2][r * vocab_ + v];
        err += (a - b) * (a - b);
        norm += b * b;
      }
      EXPECT_LT(std::sqrt(err / norm), max_rel_l2_) << what << ", row " << r;
    }
    // The recorded and eager engines never capture or replay.
    for (size_t e = 1; e < engines_.size(); ++e) {
      EXPECT_EQ(Delta(after[e], before[e], "cuda_graph_captures_total"), 0) << what;
      EXPECT_EQ(Delta(after[e], before[e], "cuda_graph_replays_total"), 0) << what;
    }
    EXPECT_EQ(Delta(after[2], before[2], "cuda_graph_eager_disabled_steps_total"), 1) << what;
    // Which decode kernel ran: the tensor-core one on every layer of a decode step when chosen
    // (graphed, recorded or eager), never on a step with a multi-token sequence (those run
    // the prefill kernel over a bf16 cache).
    const bool mma_decode = GetParam().decode == kernels::cuda::DecodeKernel::kMmaSync &&
                            GetParam().kv_dtype == kernels::cuda::CudaKvCacheDType::kBFloat16;
    const int64_t layers = engines_[0].model->config().num_layers;
    for (size_t e = 0; e < engines_.size(); ++e) {
      EXPECT_EQ(Delta(after[e], before[e], "cuda_attention_mma_decode_calls_total"),
                mma_decode && decode_only ? layers : 0)
          << what << " on " << engines_[e].label;
    }

    for (int id : members) {
      Sequence& s = seqs_[id];
      s.num_computed = static_cast<int32_t>(s.tokens.size());
      s.tokens.push_back(Token());  // the next decode token (any token will do)
    }

    const int64_t captures = Delta(after[0], before[0], "cuda_graph_captures_total");
    const int64_t replays = Delta(after[0], before[0], "cuda_graph_replays_total");
    const int64_t warmups = Delta(after[0], before[0], "cuda_graph_eager_warmup_steps_total");
    const bool eligible =
        decode_only && members.size() <= kernels::cuda::kMaxGraphBatch && no_logits.empty();
    // A recorded step folds the cast before each bf16 MatMul into the op that wrote its input:
    // per layer the attention norm (q/k/v), the attention (o), the FFN norm (gate/up) and
    // SiluMul (down), and the final norm (logits). Only recorded steps fold, and only over
    // bf16 weights.
    const bool bf16_weights = std::string(GetParam().model).find("f16") != std::string::npos;
    for (size_t e = 0; e < engines_.size(); ++e) {
      const bool recorded = eligible && e < 2;
      EXPECT_EQ(Delta(after[e], before[e], "cuda_graph_bf16_casts_folded_total"),
                recorded && bf16_weights ? 4 * layers + 1 : 0)
          << what << " on " << engines_[e].label;
      // And k's RoPE joins q's launch, and the KV append that launch, whatever the weights
      // and the cache's dtype.
      EXPECT_EQ(Delta(after[e], before[e], "cuda_graph_rope_pairs_fused_total"),
                recorded ? layers : 0)
          << what << " on " << engines_[e].label;
      EXPECT_EQ(Delta(after[e], before[e], "cuda_graph_kv_appends_fused_total"),
                recorded ? layers : 0)
          << what << " on " << engines_[e].label;
      // Every engine joins the projections (the model packs q/k/v and gate/up together and
      // places their outputs side by side): a one-row step (padded or not) runs one GEMM for
      // q|k|v and one for gate|up; more rows run q alone (k too unless it has q's shape), k
      // and v as one batch, gate and up as one batch.
      const int64_t rows =
          recorded ? kernels::cuda::DecodeBucketFor(static_cast<int64_t>(members.size()))
                   : batch.num_tokens();
      const auto& config = engines_[e].model->config();
      const int64_t qkv_joined = rows == 1 || config.num_heads == config.num_kv_heads ? 2 : 1;
      EXPECT_EQ(Delta(after[e], before[e], "cuda_gemm_calls_joined_total"),
                layers * (qkv_joined + 1))
          << what << " on " << engines_[e].label;
    }
    if (!eligible) {
      EXPECT_EQ(captures + replays + warmups, 0) << what;
      EXPECT_EQ(Delta(after[1], before[1], "cuda_graph_eager_testing_steps_total"), 0) << what;
      const char* reason = !decode_only ? "cuda_graph_eager_not_decode_steps_total"
                           : members.size() > kernels::cuda::kMaxGraphBatch
                               ? "cuda_graph_eager_batch_too_large_steps_total"
                               : "cuda_graph_eager_logits_rows_steps_total";
      EXPECT_EQ(Delta(after[0], before[0], reason), 1) << what << ": " << reason;
      return Outcome::kEager;
    }
    EXPECT_EQ(Delta(after[1], before[1], "cuda_graph_eager_testing_steps_total"), 1) << what;
    EXPECT_EQ(captures + replays + warmups, 1) << what;
    return replays == 1 ? Outcome::kReplay : captures == 1 ? Outcome::kCapture : Outcome::kWarmup;
  }

  // `num_steps` decode steps of `members` whose logits are reduced on the device: through
  // ForwardArgMax (top_k 0: ArgMaxRows) or ForwardTopK (TopKRows, with the rows' normalizers
  // if asked). The graphs engine's output (tokens and values; counts, candidates, values and
  // normalizers) equals the recorded one's bitwise, the
  // eager one's largest value is close, and each sequence goes on with the graphs engine's
  // most likely token. Returns the graphs engine's replays.
  int ReducedDecodeSteps(const std::vector<int>& members, int num_steps, int32_t top_k = 0,
                         bool normalizers = false) {
    int64_t replays = 0;
    const size_t rows = members.size();
    const size_t width = top_k > 0 ? static_cast<size_t>(top_k) : 1;
    for (int step = 0; step < num_steps; ++step) {
      model::StepBatch batch;
      for (int id : members) {
        Sequence& s = seqs_[id];
        const int32_t kv_len = static_cast<int32_t>(s.tokens.size());
        while (static_cast<int32_t>(s.blocks.size()) * kBlockSize < kv_len) {
          s.blocks.push_back(free_blocks_.back());
          free_blocks_.pop_back();
        }
        batch.AddSequence(std::span<const int32_t>(s.tokens).subspan(s.num_computed),
                          s.num_computed, s.blocks, kBlockSize, /*wants_logits=*/true);
      }
      const std::string what = (top_k > 0 ? "top-k step " : "greedy step ") + std::to_string(step);
      std::vector<std::vector<int32_t>> count(engines_.size(), std::vector<int32_t>(rows, -1));
      std::vector<std::vector<int32_t>> index(engines_.size(),
                                              std::vector<int32_t>(rows * width, -1));
      std::vector<std::vector<float>> value(engines_.size(), std::vector<float>(rows * width));
      std::vector<std::vector<float>> row_max(engines_.size(), std::vector<float>(rows, -1.0f));
      std::vector<std::vector<double>> row_exp_sum(engines_.size(),
                                                   std::vector<double>(rows, -1.0));
      std::vector<std::vector<double>> row_exp_sum_t1(engines_.size(),
                                                      std::vector<double>(rows, -1.0));
      // The normalizers at a temperature per row (1, as for logprobs, and a nucleus's).
      std::vector<float> temperature(rows);
      for (size_t i = 0; i < rows; ++i) temperature[i] = i % 2 == 0 ? 1.0f : 0.8f;
      const std::map<std::string, int64_t> before = CountersOf(*engines_[0].backend);
      for (size_t e = 0; e < engines_.size(); ++e) {
        const absl::Status status =
            top_k > 0 ? engines_[e].model->ForwardTopK(
                            batch, *engines_[e].kv, top_k, count[e].data(), index[e].data(),
                            value[e].data(), normalizers ? row_max[e].data() : nullptr,
                            normalizers ? row_exp_sum[e].data() : nullptr,
                            normalizers ? temperature.data() : nullptr,
                            normalizers ? row_exp_sum_t1[e].data() : nullptr)
                      : engines_[e].model->ForwardArgMax(batch, *engines_[e].kv, index[e].data(),
                                                         value[e].data());
        if (!status.ok()) {
          ADD_FAILURE() << engines_[e].label << ": " << status;
          return static_cast<int>(replays);
        }
      }
      replays += Delta(CountersOf(*engines_[0].backend), before, "cuda_graph_replays_total");
      EXPECT_EQ(count[0], count[1]) << what;
      EXPECT_EQ(index[0], index[1]) << what;
      EXPECT_EQ(std::memcmp(value[0].data(), value[1].data(), value[0].size() * sizeof(float)), 0)
          << what;
      EXPECT_EQ(row_max[0], row_max[1]) << what;
      EXPECT_EQ(row_exp_sum[0], row_exp_sum[1]) << what;
      EXPECT_EQ(row_exp_sum_t1[0], row_exp_sum_t1[1]) << what;
      // The step's rows stay on the device until the next step (a nucleus's fallback): the
      // graphs engine's equal the recorded one's, and hold the candidates' values.
      std::vector<std::vector<float>> fetched(2, std::vector<float>(vocab_));
      for (size_t i = 0; i < rows; ++i) {
        for (size_t e = 0; e < 2; ++e) {
          const absl::Status copied = engines_[e].model->CopyStepLogitsRow(i, fetched[e].data());
          if (!copied.ok()) {
            ADD_FAILURE() << engines_[e].label << ": " << copied;
            return static_cast<int>(replays);
          }
        }
        EXPECT_EQ(fetched[0], fetched[1]) << what << ", row " << i;
        // A few of its logits gathered on the device (a biased row's fallback) are the row's.
        const std::vector<int32_t> ids = {vocab_ - 1, 3, static_cast<int32_t>(i), 3};
        const std::vector<int32_t> of_row(ids.size(), static_cast<int32_t>(i));
        std::vector<float> gathered(ids.size(), std::nanf(""));
        for (size_t e = 0; e < engines_.size(); ++e) {
          const absl::Status status =
              engines_[e].model->GatherStepLogits(of_row, ids, gathered.data());
          if (!status.ok()) {
            ADD_FAILURE() << engines_[e].label << ": " << status;
            return static_cast<int>(replays);
          }
          for (size_t j = 0; j < ids.size() && e < 2; ++j) {
            EXPECT_EQ(gathered[j], fetched[0][ids[j]]) << what << ", row " << i;
          }
        }
        // And the row again, side by side with row 0, in one copy.
        const std::vector<int32_t> two_rows = {static_cast<int32_t>(i), 0};
        std::vector<float> both(2 * static_cast<size_t>(vocab_), std::nanf(""));
        for (size_t e = 0; e < 2; ++e) {
          const absl::Status status = engines_[e].model->CopyStepLogitsRows(two_rows, both.data());
          if (!status.ok()) {
            ADD_FAILURE() << engines_[e].label << ": " << status;
            return static_cast<int>(replays);
          }
          EXPECT_TRUE(std::equal(both.begin(), both.begin() + vocab_, fetched[0].begin()))
              << what << ", row " << i;
        }
        const size_t n = top_k > 0 ? static_cast<size_t>(count[0][i]) : 1;
        for (size_t j = 0; j < n; ++j) {
          EXPECT_EQ(fetched[0][index[0][i * width + j]], value[0][i * width + j]) << what;
        }
        if (normalizers) {
          // The normalizer of the row at its temperature, as the host sampler sums it, and
          // its sum at temperature 1 besides.
          const float max = *std::max_element(fetched[0].begin(), fetched[0].end());
          double sum = 0.0;
          double sum_t1 = 0.0;
          for (float x : fetched[0]) {
            sum += std::exp((x - max) / temperature[i]);
            sum_t1 += std::exp(x - max);
          }
          EXPECT_EQ(row_max[0][i], max) << what << ", row " << i;
          EXPECT_NEAR(row_exp_sum[0][i], sum, 1e-6 * sum) << what << ", row " << i;
          EXPECT_NEAR(row_exp_sum_t1[0][i], sum_t1, 1e-6 * sum_t1) << what << ", row " << i;
        }
      }
      for (size_t i = 0; normalizers && i < rows; ++i) {
        // The row's largest logit (its largest candidate's), and a sum of vocab_ terms in
        // [0, 1] of which that one's is 1.
        const float* v = value[0].data() + i * width;
        EXPECT_EQ(row_max[0][i], *std::max_element(v, v + count[0][i])) << what;
        EXPECT_GE(row_exp_sum[0][i], 1.0) << what;
        EXPECT_LE(row_exp_sum[0][i], vocab_) << what;
      }
      for (size_t i = 0; i < rows; ++i) {
        // The row's most likely token and its value (the first largest of the candidates).
        auto best = [&](size_t e) {
          const size_t n = top_k > 0 ? static_cast<size_t>(count[e][i]) : 1;
          const float* v = value[e].data() + i * width;
          return std::max_element(v, v + n) - v;
        };
        if (top_k > 0) {
          EXPECT_EQ(count[0][i], std::min(top_k, vocab_)) << what << ", row " << i;
          EXPECT_EQ(count[2][i], count[0][i]) << what << ", row " << i;
          for (int32_t j = 1; j < count[0][i]; ++j) {
            EXPECT_LT(index[0][i * width + j - 1], index[0][i * width + j]) << what;
          }
        }
        const int32_t token = index[0][i * width + best(0)];
        EXPECT_GE(token, 0) << what;
        EXPECT_LT(token, vocab_) << what;
        const float eager = value[2][i * width + best(2)];
        EXPECT_NEAR(value[0][i * width + best(0)], eager, 0.1 * (1.0 + std::fabs(eager)))
            << what << ", row " << i;
        Sequence& s = seqs_[members[i]];
        s.num_computed = static_cast<int32_t>(s.tokens.size());
        s.tokens.push_back(token);
      }
    }
    return static_cast<int>(replays);
  }

  // `num_steps` decode steps of `members`: consecutive steps of one bucket and KV tier must go
  // warm-up -> capture -> replay (a replayed signature may replay from the first step). A step
  // that crosses into the next tier starts over. Returns the number of replays.
  int DecodeSteps(const std::vector<int>& members, int num_steps) {
    int num_replays = 0;
    Outcome prev = Outcome::kEager;
    int32_t prev_tier = 0;
    for (int i = 0; i < num_steps; ++i) {
      int32_t max_kv = 0;
      for (int id : members) {
        max_kv = std::max(max_kv, static_cast<int32_t>(seqs_[id].tokens.size()));
      }
      const int32_t tier = max_kv <= 256 ? 256 : 512;
      const Outcome now = Step(members);
      const std::string what = "decode step " + std::to_string(i) + " of " +
                               std::to_string(members.size()) + " sequences";
      if (tier == prev_tier && prev == Outcome::kWarmup) {
        EXPECT_EQ(now, Outcome::kCapture) << what << ": a warm-up is followed by a capture";
      }
      if (tier == prev_tier && (prev == Outcome::kCapture || prev == Outcome::kReplay)) {
        EXPECT_EQ(now, Outcome::kReplay) << what << ": a captured shape must replay";
      }
      if (now == Outcome::kReplay) ++num_replays;
      prev = now;
      prev_tier = tier;
    }
    return num_replays;
  }

  std::vector<int> Range(int begin, int end) {
    std::vector<int> v;
    for (int i = begin; i < end; ++i) v.push_back(i);
    return v;
  }

  std::unique_ptr<model::GgufFile> file_;
  std::vector<Engine> engines_;
  std::vector<Sequence> seqs_;
  std::vector<int32_t> free_blocks_;
  std::mt19937 rng_{12345};
  int32_t vocab_ = 0;
  int num_steps_ = 0;
  double max_rel_l2_ = 0.0;
};

TEST_P(CudaGraphTest, ReplaysEqualTheRecordedStepsRunEagerly) {
  max_rel_l2_ = GetParam().max_rel_l2();
  int num_replays = 0;

  // Batch 1: a prompt ending 2 tokens before a block boundary, so the page table grows
  // between replays.
  const int a = AddSequence(14);
  Step({a});
  num_replays += DecodeSteps({a}, 5);

  // Batch 3: two sequences join in a mixed prefill + decode step (eager).
  const int b = AddSequence(20);
  const int c = AddSequence(9);
  Step({a, b, c});
  Step({a, b, c}, /*no_logits=*/{b});  // logits rows != tokens: eager
  num_replays += DecodeSteps({a, b, c}, 4);

  // Batch 17: fourteen join (a prefill-only step), then decode.
  std::vector<int> joined;
  for (int i = 0; i < 14; ++i) joined.push_back(AddSequence(3 + 5 * i % 29));
  Step(joined);
  std::vector<int> batch17 = {a, b, c};
  batch17.insert(batch17.end(), joined.begin(), joined.end());
  num_replays += DecodeSteps(batch17, 4);

  // Batch 64, then 65 (bucket 80), then 257 (over the largest bucket: eager).
  std::vector<int> more;
  for (int i = 0; i < 48; ++i) more.push_back(AddSequence(1 + 7 * i % 40));
  Step(std::vector<int>(more.begin(), more.end() - 1));
  std::vector<int> batch64 = batch17;
  batch64.insert(batch64.end(), more.begin(), more.end() - 1);
  ASSERT_EQ(batch64.size(), 64u);
  num_replays += DecodeSteps(batch64, 3);
  Step({more.back()});
  std::vector<int> batch65 = batch64;
  batch65.push_back(more.back());
  num_replays += DecodeSteps(batch65, 3);
  if (GetParam().kv_dtype == kernels::cuda::CudaKvCacheDType::kFloat32 &&
      std::string(GetParam().model).find("f16") == std::string::npos) {
    // Over the largest bucket the step runs eagerly whatever the kernels: once (of the four
    // cases, the slowest part of this test under emulation).
    std::vector<int> many;
    for (int i = 0; i < 192; ++i) many.push_back(AddSequence(1 + 3 * i % 8));
    Step(many);
    std::vector<int> batch257 = batch65;
    batch257.insert(batch257.end(), many.begin(), many.end());
    ASSERT_EQ(batch257.size(), 257u);
    DecodeSteps(batch257, 2);
  }

  // Sequences finish: back to 17 (bucket 24), then 3 (bucket 4), then 1.
  num_replays += DecodeSteps(batch17, 4);
  num_replays += DecodeSteps({a, b, c}, 3);
  num_replays += DecodeSteps({c}, 3);
  EXPECT_GE(num_replays, 15);
}

// Greedy decoding's steps end in the device-side argmax instead of a logits copy, and top-k
// sampling's in the device-side candidate selection (with the rows' normalizers for logprobs),
// launched after the step's graph: equal to the recorded steps run eagerly, and one graph per
// bucket and KV tier whatever the rows ask of the logits, so that a server mixing greedy,
// top-k and logprob requests does not capture (and cache) the forward pass once per mix.
TEST_P(CudaGraphTest, GreedyAndTopKStepsShareTheDecodeStepsGraph) {
  max_rel_l2_ = GetParam().max_rel_l2();
  const int a = AddSequence(12);
  const int b = AddSequence(30);
  const int c = AddSequence(5);
  Step({a, b, c});
  // 3 rows pad to bucket 4: a warm-up, a capture, then replays.
  EXPECT_EQ(ReducedDecodeSteps({a, b, c}, 6), 4);
  EXPECT_EQ(ReducedDecodeSteps({b}, 5), 3);  // bucket 1: its own graph
  // Back in bucket 4 (KV still in the 256-key tier): the greedy steps' graph, from the first
  // step, whatever k and whether the normalizers (and their temperatures) are asked for.
  EXPECT_EQ(ReducedDecodeSteps({a, b, c}, 5, /*top_k=*/64), 5);
  EXPECT_EQ(ReducedDecodeSteps({a, b, c}, 4, /*top_k=*/64, /*normalizers=*/true), 4);
  EXPECT_EQ(ReducedDecodeSteps({a, b, c}, 3, /*top_k=*/8, /*normalizers=*/true), 3);
  EXPECT_EQ(ReducedDecodeSteps({a, b, c}, 2), 2);
  const std::map<std::string, int64_t> counters = CountersOf(*engines_[0].backend);
  EXPECT_EQ(counters.at("cuda_graph_captures_total"), 2);
  EXPECT_EQ(counters.at("cuda_graphs_cached"), 2);
}

TEST_P(CudaGraphTest, CrossingAKvCapacityTierCapturesAgain) {
  max_rel_l2_ = GetParam().max_rel_l2();
  // kv_len 250 .. 262: the tier changes from 256 to 512 keys at 257.
  const int a = AddSequence(249);
  const int b = AddSequence(40);
  Step({a, b});
  EXPECT_GE(DecodeSteps({a, b}, 13), 8);
}

// Activations reserved for a step budget that is not a bucket (3 rows) hold the decode steps
// padded to the next bucket (4): the CUDA backend says how far it pads (MaxPaddedRows), so no
// step moves them (a move orphans every graph captured before), and the steps replay.
TEST(CudaGraphReservationTest, ReservedActivationsHoldDecodeStepsPaddedToTheirBucket) {
  auto backend = kernels::cuda::CreateCudaBackend(kernels::cuda::CudaBackendOptions{});
  if (!backend.ok()) GLIMPSE_SKIP_WITHOUT_CUDA(backend.status().message());
  EXPECT_EQ((*backend)->MaxPaddedRows(3), 4);
  EXPECT_EQ((*backend)->MaxPaddedRows(65), 80);
  EXPECT_EQ((*backend)->MaxPaddedRows(256), 256);
  EXPECT_EQ((*backend)->MaxPaddedRows(300), 300);  // beyond the buckets: eager, unpadded
  auto file = model::GgufFile::Open("models/tinycode-4m-f16.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto loaded = model::LlamaModel::Load(**file, **backend);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  model::LlamaModel& m = **loaded;
  m.ReserveActivations(/*max_tokens=*/3, /*max_logits_rows=*/3);
  model::KvCacheStorage kv(**backend, m.config(), /*num_blocks=*/8, kBlockSize);
  const int32_t vocab = m.config().vocab_size;
  std::vector<std::vector<int32_t>> tokens = {{5, 6, 7}, {8, 9}, {10, 11, 12}};
  std::vector<int32_t> computed(tokens.size(), 0);
  std::vector<float> logits(3 * static_cast<size_t>(vocab));
  auto step = [&](const std::vector<size_t>& members) {
    model::StepBatch batch;
    for (size_t i : members) {
      const std::vector<int32_t> blocks = {static_cast<int32_t>(2 * i),
                                           static_cast<int32_t>(2 * i + 1)};
      batch.AddSequence(std::span<const int32_t>(tokens[i]).subspan(computed[i]), computed[i],
                        blocks, kBlockSize, /*wants_logits=*/true);
    }
    const absl::Status status = m.Forward(batch, kv, logits.data());
    ASSERT_TRUE(status.ok()) << status;
    for (size_t i : members) {
      computed[i] = static_cast<int32_t>(tokens[i].size());
      tokens[i].push_back(static_cast<int32_t>(13 + i));
    }
  };
  for (size_t i = 0; i < tokens.size(); ++i) step({i});  // prefills of up to 3 tokens
  const std::map<std::string, int64_t> before = CountersOf(**backend);
  for (int i = 0; i < 5; ++i) step({0, 1, 2});  // 3 rows, padded to 4
  const std::map<std::string, int64_t> after = CountersOf(**backend);
  EXPECT_EQ(m.activation_moves(), 0);
  EXPECT_GE(Delta(after, before, "cuda_graph_replays_total"), 2);
}

// The bf16 cache: decode steps (graphed or not) read it through the decode kernel with fp32
// queries (or, last, the tensor-core decode kernel); the prefill steps between them run the
// tensor-core prefill kernel in all three engines.
INSTANTIATE_TEST_SUITE_P(
    BundledModel, CudaGraphTest,
    ::testing::Values(
        GraphCase{"tests/data/tinycode-4m.gguf", kernels::cuda::CudaKvCacheDType::kFloat32},
        GraphCase{"models/tinycode-4m-f16.gguf", kernels::cuda::CudaKvCacheDType::kFloat32},
        GraphCase{"models/tinycode-4m-f16.gguf", kernels::cuda::CudaKvCacheDType::kBFloat16},
        GraphCase{"models/tinycode-4m-f16.gguf", kernels::cuda::CudaKvCacheDType::kBFloat16,
                  kernels::cuda::DecodeKernel::kMmaSync}),
    GraphCaseName);

}  // namespace
}  // namespace glimpse
