// StepLogits over a runner whose logits rows are known (FixedRowsRunner): what each kind of
// row brings back and how its sample is decided, against Sampler::Sample on the whole row.
#include "model/step_logits.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cpu/testing/instrumented_cpu_backend.h"
#include "model/llama_config.h"
#include "model/sampler.h"
#include "model/sampling_params.h"
#include "model/step_batch.h"
#include "model/step_runner.h"

namespace glimpse::model {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A StepRunner whose every step's logits are `rows` (one per logits row), reduced on the host
// by the rules StepRunner states: what a device step would hand StepLogits. It counts the
// gathers and fetches after a step. GatherStepLogits is StepRunner's default (rows copied).
class FixedRowsRunner final : public StepRunner {
 public:
  explicit FixedRowsRunner(std::vector<std::vector<float>> rows) : rows_(std::move(rows)) {
    config_.vocab_size = static_cast<int32_t>(rows_[0].size());
  }

  const LlamaConfig& config() const override { return config_; }
  int tensor_parallel_size() const override { return 1; }
  void AllocateKvCache(int32_t, int32_t, int32_t) override {}
  void ReserveActivations(int32_t, int32_t) override {}
  int32_t kv_num_blocks() const override { return 0; }
  int32_t kv_block_size() const override { return 0; }
  size_t kv_element_bytes() const override { return 4; }
  void MoveKvBlocks(std::span<const KvBlockMove>) override {}

  absl::Status Forward(const StepBatch& batch, float* logits) override {
    last_forward_logits_ = logits;
    for (size_t r = 0; r < batch.logits_rows.size(); ++r) {
      std::copy(rows_[r].begin(), rows_[r].end(), logits + r * rows_[r].size());
    }
    return absl::OkStatus();
  }
  absl::Status ForwardGreedy(const StepBatch& batch, int32_t* tokens) override {
    for (size_t r = 0; r < batch.logits_rows.size(); ++r) {
      tokens[r] = static_cast<int32_t>(std::max_element(rows_[r].begin(), rows_[r].end()) -
                                       rows_[r].begin());
    }
    return absl::OkStatus();
  }
  absl::Status ForwardTopK(const StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           TopTokens* top) override {
    const size_t n = batch.logits_rows.size();
    const bool normalizers = !normalizer_temperatures.empty();
    top->Resize(n, k, normalizers, sums_t1);
    for (size_t r = 0; r < n; ++r) {
      const std::vector<float>& row = rows_[r];
      std::vector<int32_t> ids;
      for (int32_t i = 0; i < static_cast<int32_t>(row.size()); ++i) {
        if (!std::isnan(row[i]) && row[i] != -kInf) ids.push_back(i);
      }
      std::stable_sort(ids.begin(), ids.end(),
                       [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      ids.resize(std::min(ids.size(), static_cast<size_t>(k)));
      std::sort(ids.begin(), ids.end());
      top->count[r] = static_cast<int32_t>(ids.size());
      for (size_t j = 0; j < ids.size(); ++j) {
        top->ids[r * k + j] = ids[j];
        top->logits[r * k + j] = row[ids[j]];
      }
      if (!normalizers) continue;
      const Sampler::RowNormalizer at_t1 = Sampler::NormalizerOf(row);
      top->row_max[r] = at_t1.max;
      double sum = 0.0;
      for (float x : row) {
        if (x > -kInf) sum += std::exp((x - at_t1.max) / normalizer_temperatures[r]);
      }
      top->row_exp_sum[r] = sum;
      if (sums_t1) top->row_exp_sum_t1[r] = at_t1.exp_sum;
    }
    return absl::OkStatus();
  }
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override {
    ++rows_copied_;
    std::copy(rows_[row].begin(), rows_[row].end(), logits);
    return absl::OkStatus();
  }
  absl::Status CopyStepLogitsRows(std::span<const int32_t> rows, float* logits) override {
    ++row_copies_;
    last_rows_logits_ = logits;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || static_cast<size_t>(rows[i]) >= rows_.size()) {
        return absl::OutOfRangeError("row");
      }
      rows_copied_ += 1;
      std::copy(rows_[rows[i]].begin(), rows_[rows[i]].end(), logits + i * rows_[0].size());
    }
    return absl::OkStatus();
  }
  absl::Status GatherStepLogits(std::span<const int32_t> rows, std::span<const int32_t> ids,
                                float* logits) override {
    ++gathers_;
    gathered_logits_ += static_cast<int64_t>(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) logits[i] = rows_[rows[i]][ids[i]];
    return absl::OkStatus();
  }

  kernels::Backend* host_memory_backend() override { return host_backend_; }
  void set_host_memory_backend(kernels::Backend* backend) { host_backend_ = backend; }
  // Where the last Forward wrote its logits, and the last CopyStepLogitsRows its rows.
  const float* last_forward_logits() const { return last_forward_logits_; }
  const float* last_rows_logits() const { return last_rows_logits_; }

  int rows_copied() const { return rows_copied_; }
  int row_copies() const { return row_copies_; }  // CopyStepLogitsRows calls
  int gathers() const { return gathers_; }
  int64_t gathered_logits() const { return gathered_logits_; }

 private:
  LlamaConfig config_;
  std::vector<std::vector<float>> rows_;
  int rows_copied_ = 0;
  int row_copies_ = 0;
  int gathers_ = 0;
  int64_t gathered_logits_ = 0;
  kernels::Backend* host_backend_ = nullptr;
  const float* last_forward_logits_ = nullptr;
  const float* last_rows_logits_ = nullptr;
};

// `num_rows` rows of `vocab` logits drawn from N(0, 3²) with `seed`: flat enough that top-p
// nuclei are wider than the candidates a step brings back.
std::vector<std::vector<float>> FlatRows(size_t num_rows, int32_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(num_rows, std::vector<float>(vocab));
  for (auto& row : rows) {
    for (float& x : row) x = normal(rng);
  }
  return rows;
}

// Sampling at temperature 1.5 with top-p 0.95 for `num_rows` rows: on FlatRows no nucleus fits
// in the candidates a step brings back, so every row is fetched.
std::vector<SamplingParams> WideNucleusParams(size_t num_rows) {
  std::vector<SamplingParams> params(num_rows);
  for (SamplingParams& p : params) {
    p.temperature = 1.5f;
    p.top_p = 0.95f;
  }
  return params;
}

// Plans a step of rows sampled with `params` (no logprobs) at `vocab` and runs it on `runner`.
void PlanAndForward(const std::vector<SamplingParams>& params, int32_t vocab,
                    const StepLogitsOptions& options, FixedRowsRunner& runner, StepLogits* step) {
  step->Begin(options, vocab);
  for (const SamplingParams& p : params) step->AddRow(p, /*report_logprobs=*/false);
  step->Finish();
  StepBatch batch;
  batch.logits_rows.resize(params.size());
  ASSERT_TRUE(step->Forward(runner, batch).ok());
}

// Rows whose sample hinges on one gathered logit each: a biased token far down the row lifted
// to just above (or below) the row's best, and penalised nucleus rows. Gathered for all rows
// in one call, each row's values must be its own: every token equals Sampler::Sample's on the
// whole row, by a twin sampler with the same seed and history.
TEST(StepLogitsTest, GatheredLogitsDecideEachRowAsItsWholeRow) {
  constexpr int32_t kVocab = 2000;
  constexpr size_t kRows = 8;
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(kRows, std::vector<float>(kVocab));
  for (size_t r = 0; r < kRows; ++r) {
    for (float& x : rows[r]) x = normal(rng) * (r < 4 ? 1.0f : 3.0f);  // nuclei: peaked
  }
  std::vector<SamplingParams> params(kRows);
  for (size_t r = 0; r < kRows; ++r) {
    // Token 100 + r, set far down the row, biased to land 0.01 above or below the row's best:
    // from another row's logit it would land elsewhere.
    const int32_t lifted = static_cast<int32_t>(100 + r);
    rows[r][lifted] = -6.0f - static_cast<float>(r);
    const float best = *std::max_element(rows[r].begin(), rows[r].end());
    const float margin = r % 2 == 0 ? 0.01f : -0.01f;
    params[r].logit_bias = {{lifted, best - rows[r][lifted] + margin}};
    if (r < 4) {
      params[r].temperature = 0.0f;  // greedy: the lifted token or the best
    } else {
      params[r].temperature = 0.7f;  // a nucleus with a penalty too
      params[r].top_p = r % 3 == 0 ? 0.9f : 1.0f;
      params[r].frequency_penalty = 0.4f;
    }
  }
  StepLogitsOptions options;
  StepLogits step;
  FixedRowsRunner runner(rows);
  ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, options, runner, &step));
  ASSERT_EQ(step.kind(), StepLogits::Kind::kTopK);

  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<std::unique_ptr<Sampler>> twins;
  std::vector<Sampler*> sampler_ptrs;
  std::vector<size_t> row_ids;
  for (size_t r = 0; r < kRows; ++r) {
    samplers.push_back(std::make_unique<Sampler>(params[r], kVocab, r, false));
    twins.push_back(std::make_unique<Sampler>(params[r], kVocab, r, false));
    for (int32_t t : {3, 200 + static_cast<int32_t>(r), 3}) {  // a history for the penalty
      samplers.back()->Accept(t);
      twins.back()->Accept(t);
    }
    sampler_ptrs.push_back(samplers.back().get());
    row_ids.push_back(r);
  }
  step.Gather(row_ids, sampler_ptrs);
  EXPECT_EQ(runner.gathers(), 1);  // every row's in one call
  EXPECT_GE(runner.gathered_logits(), static_cast<int64_t>(kRows));
  for (size_t r = 0; r < kRows; ++r) {
    const int32_t want = twins[r]->Sample(rows[r]).token;
    std::optional<Sampler::SampleResult> got = step.TrySample(*samplers[r], r);
    const std::string what = "row " + std::to_string(r);
    ASSERT_TRUE(got.has_value()) << what << ": not decided by its candidates and gathers";
    EXPECT_EQ(got->token, want) << what;
    if (r < 4 && r % 2 == 0) {
      EXPECT_EQ(want, 100 + static_cast<int32_t>(r)) << what;  // lifted above the best
    } else if (r < 4) {
      EXPECT_NE(want, 100 + static_cast<int32_t>(r)) << what;  // and just below it
    }
  }
  EXPECT_EQ(runner.rows_copied(), 0);
  EXPECT_EQ(step.num_rows_gathered(), static_cast<int64_t>(kRows));
  EXPECT_EQ(step.num_adjusted_rows_decided(), static_cast<int64_t>(kRows));
}

// Sample() without Gather gathers for its own row; a row past the gather limit, or one whose
// candidates and gathers cannot decide, is fetched whole (SampleFetched): the same tokens.
TEST(StepLogitsTest, SampleGathersForItsRowAndFetchesWhatCannotBeDecided) {
  constexpr int32_t kVocab = 6000;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(3, std::vector<float>(kVocab));
  for (auto& row : rows) {
    for (float& x : row) x = normal(rng);
  }
  // Row 2: the 5000 prompt tokens (ids below 5000) all at 5, the rest N(0, 3): doubled by
  // repetition 0.5, any prompt token may reach 10, above nearly every candidate.
  for (int32_t i = 0; i < 5000; ++i) rows[2][i] = 5.0f;
  std::vector<SamplingParams> params(3);
  params[0].temperature = 0.0f;
  params[0].logit_bias = {{4321, 50.0f}};  // gathered by Sample itself
  params[1].temperature = 1.0f;
  params[1].repetition_penalty = 1.1f;  // a prompt of 5000 distinct tokens: too many
  params[2].temperature = 0.9f;
  params[2].top_k = 5;
  params[2].repetition_penalty = 0.5f;  // prompt tokens rise past any bound: fetched
  StepLogits step;
  FixedRowsRunner runner(rows);
  ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, StepLogitsOptions{}, runner, &step));
  std::vector<int32_t> prompt(5000);
  for (int32_t i = 0; i < 5000; ++i) prompt[i] = i;
  for (size_t r = 0; r < 3; ++r) {
    Sampler sampler(params[r], kVocab, r, false);
    Sampler twin(params[r], kVocab, r, false);
    sampler.AddPromptTokens(prompt);
    twin.AddPromptTokens(prompt);
    EXPECT_EQ(step.Sample(sampler, r).token, twin.Sample(rows[r]).token) << "row " << r;
  }
  EXPECT_EQ(runner.gathers(), 1);      // row 0's own
  EXPECT_EQ(runner.rows_copied(), 2);  // rows 1 and 2, each by itself
  EXPECT_EQ(step.num_rows_fetched(), 2);
}

// The parts a multi-threaded driver calls: Gather, TrySample on every row, then Fetch of the
// rows left in one copy and SampleFetched on them — the same tokens as Sample() of the whole
// rows, with one gather and one row copy for the step.
TEST(StepLogitsTest, RowsLeftOpenAreFetchedInOneCopy) {
  constexpr int32_t kVocab = 3000;
  constexpr size_t kRows = 4;
  const std::vector<std::vector<float>> rows = FlatRows(kRows, kVocab, 9);
  std::vector<SamplingParams> params = WideNucleusParams(kRows);
  for (size_t r = 1; r < kRows; r += 2) params[r].presence_penalty = 0.5f;  // adjusted nucleus
  StepLogits step;
  FixedRowsRunner runner(rows);
  ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, StepLogitsOptions{}, runner, &step));
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<Sampler*> sampler_ptrs;
  std::vector<size_t> row_ids;
  for (size_t r = 0; r < kRows; ++r) {
    samplers.push_back(std::make_unique<Sampler>(params[r], kVocab, r, false));
    samplers.back()->Accept(7);
    sampler_ptrs.push_back(samplers.back().get());
    row_ids.push_back(r);
  }
  step.Gather(row_ids, sampler_ptrs);
  std::vector<size_t> left;
  std::vector<int32_t> tokens(kRows, -1);
  for (size_t r = 0; r < kRows; ++r) {
    std::optional<Sampler::SampleResult> got = step.TrySample(*samplers[r], r);
    if (got.has_value()) {
      tokens[r] = got->token;
    } else {
      left.push_back(r);
    }
  }
  ASSERT_EQ(left.size(), kRows) << "flat rows: every nucleus wider than 256 candidates";
  EXPECT_EQ(runner.rows_copied(), 0);
  step.Fetch(left);
  EXPECT_EQ(runner.row_copies(), 1);
  EXPECT_EQ(runner.rows_copied(), static_cast<int>(kRows));
  for (size_t r : left) tokens[r] = step.SampleFetched(*samplers[r], r).token;
  EXPECT_EQ(runner.row_copies(), 1);  // nothing fetched twice
  EXPECT_EQ(step.num_rows_fetched(), static_cast<int64_t>(kRows));
  for (size_t r = 0; r < kRows; ++r) {
    Sampler twin(params[r], kVocab, r, false);
    twin.Accept(7);
    EXPECT_EQ(tokens[r], twin.Sample(rows[r]).token) << "row " << r;
  }
}

// Whole rows (a step that brings them back, and rows fetched after a reduced step) land in
// host memory from the runner's backend (page-locked on a GPU), reused from step to step, and
// the samples are the whole rows' own.
TEST(StepLogitsTest, WholeRowsLandInTheRunnersHostMemory) {
  constexpr int32_t kVocab = 2000;
  constexpr size_t kRows = 3;
  const std::vector<std::vector<float>> rows = FlatRows(kRows, kVocab, 5);
  const std::vector<SamplingParams> params = WideNucleusParams(kRows);
  kernels::cpu::InstrumentedCpuBackend backend;
  FixedRowsRunner runner(rows);
  runner.set_host_memory_backend(&backend);
  StepLogits step;
  StepLogitsOptions whole_rows;
  whole_rows.max_device_top_k = 0;
  for (int s = 0; s < 2; ++s) {
    ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, whole_rows, runner, &step));
    EXPECT_TRUE(backend.Holds(runner.last_forward_logits(), kRows * kVocab * sizeof(float)));
    for (size_t r = 0; r < kRows; ++r) {
      Sampler sampler(params[r], kVocab, r, false);
      Sampler twin(params[r], kVocab, r, false);
      EXPECT_EQ(step.Sample(sampler, r).token, twin.Sample(rows[r]).token) << "row " << r;
    }
  }
  EXPECT_EQ(backend.num_allocations(), 1) << "the second step reuses the first's memory";

  ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, StepLogitsOptions{}, runner, &step));
  std::vector<size_t> all(kRows);
  std::iota(all.begin(), all.end(), 0);
  step.Fetch(all);
  EXPECT_EQ(runner.row_copies(), 1);
  EXPECT_TRUE(backend.Holds(runner.last_rows_logits(), kRows * kVocab * sizeof(float)));
  for (size_t r = 0; r < kRows; ++r) {
    Sampler sampler(params[r], kVocab, r, false);
    Sampler twin(params[r], kVocab, r, false);
    EXPECT_EQ(step.SampleFetched(sampler, r).token, twin.Sample(rows[r]).token) << "row " << r;
  }
}

// Reserve allocates the whole rows' host memory once, up front: whole-row steps and fetches
// of up to that many rows then allocate nothing (a GPU would stall pinning it mid-step), and
// both kinds of step share it.
TEST(StepLogitsTest, ReservedRowsServeWholeRowStepsAndFetchesWithoutAllocating) {
  constexpr int32_t kVocab = 2000;
  constexpr size_t kRows = 4;
  const std::vector<std::vector<float>> rows = FlatRows(kRows, kVocab, 9);
  const std::vector<SamplingParams> params = WideNucleusParams(kRows);
  kernels::cpu::InstrumentedCpuBackend backend;
  FixedRowsRunner runner(rows);
  runner.set_host_memory_backend(&backend);
  StepLogits step;
  step.Reserve(runner, kRows, kVocab);
  ASSERT_EQ(backend.num_allocations(), 1);
  StepLogitsOptions whole_rows;
  whole_rows.max_device_top_k = 0;
  for (const StepLogitsOptions& options : {whole_rows, StepLogitsOptions{}, whole_rows}) {
    ASSERT_NO_FATAL_FAILURE(PlanAndForward(params, kVocab, options, runner, &step));
    std::vector<Sampler::SampleResult> got;
    for (size_t r = 0; r < kRows; ++r) {
      Sampler sampler(params[r], kVocab, r, false);
      got.push_back(step.Sample(sampler, r));  // fetches row by row after a reduced step
    }
    const float* landed = step.kind() == StepLogits::Kind::kRows ? runner.last_forward_logits()
                                                                 : runner.last_rows_logits();
    EXPECT_TRUE(backend.Holds(landed, kVocab * sizeof(float)));
    for (size_t r = 0; r < kRows; ++r) {
      Sampler twin(params[r], kVocab, r, false);
      EXPECT_EQ(got[r].token, twin.Sample(rows[r]).token) << "row " << r;
    }
  }
  EXPECT_EQ(step.num_rows_fetched(), static_cast<int64_t>(kRows));
  EXPECT_EQ(backend.num_allocations(), 1) << "no step allocated";
  EXPECT_EQ(backend.num_live(), 1u);
}

}  // namespace
}  // namespace glimpse::model
