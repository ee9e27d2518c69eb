// What a step brings back of its logits rows, and the samples drawn from that. Every row's
// sampler says what its sample needs (Sampler::CandidatesNeeded), and the step takes the least
// that serves all of its rows:
//
//   every row plain greedy          → each row's argmax       (StepRunner::ForwardGreedy)
//   every row decided by its top k, → each row's k candidates (StepRunner::ForwardTopK),
//   a nucleus or an adjusted row      with its softmax normalizer when a row reports logprobs
//                                     or samples a nucleus
//   otherwise                       → the rows themselves     (StepRunner::Forward)
//
// On a GPU at a 128k vocabulary that is 8 bytes, k x 8 (+ 12) bytes or 513 KB a row, and a
// host pass over the row only in the last case. A nucleus row (sampling without top-k: top-p,
// min-p or plain temperature; Sampler::SamplesNucleus) is usually decided by its candidates
// and weight sum; an adjusted row (greedy or top-k with a logit bias or penalties;
// Sampler::SamplesAdjustedTopK) by its candidates once the bias and penalties are applied to
// them, or else (a biased or penalised token outside them could win) by those tokens' logits
// gathered after the step (StepRunner::GatherStepLogits); a nucleus row with a bias or
// penalties (Sampler::SamplesAdjustedNucleus) by its candidates, weight sum and the gathered
// logits of every token the bias or penalties touch. When not (the nucleus or the draw
// reaches past them, a threshold is too close to call, too many tokens could win), its row
// is fetched
// after the step (StepRunner::CopyStepLogitsRow) and sampled whole. The tokens are the same
// whichever way (the Sampler guarantees it, seed for seed; logprob values from a device's
// normalizer may differ in the last bits). The serving engine and the offline generator both plan
// their steps with it.
//
// Thread-safety: Plan, Forward, Gather, SampleFetched and Sample on the driving thread;
// TrySample may run concurrently for distinct rows (it only reads this object but for atomic
// counters; each row's Sampler is its own).
#ifndef GLIMPSE_MODEL_STEP_LOGITS_H_
#define GLIMPSE_MODEL_STEP_LOGITS_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/host_buffer.h"
#include "model/sampler.h"
#include "model/sampling_params.h"
#include "model/step_batch.h"
#include "model/step_runner.h"

namespace glimpse::model {

struct StepLogitsOptions {
  // Plain greedy steps reduce each row to its argmax where the logits are.
  bool device_greedy = true;
  // Steps whose rows need at most this many candidates each select them where the logits are;
  // the k asked for is the rows' largest need rounded up to a power of two, at most this
  // (the few candidates beyond a row's need cost little and let more biased or penalised rows
  // decide; CUDA decode graphs no longer depend on k). 0: never.
  int32_t max_device_top_k = 1024;
  // A nucleus row (Sampler::SamplesNucleus) needs this many candidates (at most
  // max_device_top_k): more decide more nuclei but cost more to bring back and sort. 0: such
  // rows need the whole row.
  int32_t nucleus_candidates = 256;
  // A greedy or top-k row with a logit bias or penalties (Sampler::SamplesAdjustedTopK)
  // needs this many candidates beyond its k (and top logprobs), for those of its most likely
  // tokens that the bias or penalties push out of its top k. 0: such rows need the whole row.
  int32_t adjusted_extra_candidates = 32;
};

class StepLogits {
 public:
  enum class Kind {
    kRows,    // the rows (StepRunner::Forward)
    kArgMax,  // each row's argmax (StepRunner::ForwardGreedy)
    kTopK,    // each row's k most likely tokens (StepRunner::ForwardTopK)
  };

  // Plans a step: Begin, then AddRow for each logits row in row order (its sampler's params
  // and report_logprobs), then Finish.
  void Begin(const StepLogitsOptions& options, int32_t vocab_size);
  void AddRow(const SamplingParams& params, bool report_logprobs);
  void Finish();

  Kind kind() const { return kind_; }

  // Host memory for `max_rows` whole rows of `vocab_size` logits now, from the runner's
  // host_memory_backend() as every step's (page-locked on a GPU, which takes the driver tens
  // of milliseconds per 100 MiB): steps that bring back or fetch whole rows, up to that many,
  // then never stall to allocate it. The serving engine reserves a row per running sequence
  // at start-up; without it the memory grows with the steps.
  void Reserve(StepRunner& runner, size_t max_rows, int32_t vocab_size);

  // Runs the step's forward pass the planned way. Errors as StepRunner's.
  absl::Status Forward(StepRunner& runner, const StepBatch& batch);
  // Sampler::Sample's result for logits row `row` of the step Forward ran: from the row
  // (with logprobs if the sampler reports them), its argmax (SampleArgMax) or its candidates
  // (SampleFromCandidates, TrySampleNucleus, TrySampleAdjusted, TrySampleAdjustedNucleus,
  // with the logits Gather brought or, when it did not run for the row, the row's own
  // gathers; the row fetched when those do not decide). Driving thread only.
  Sampler::SampleResult Sample(Sampler& sampler, size_t row);

  // Sample in parts, for a driver that samples rows on several threads:
  //   1. Gather (driving thread): of a kTopK step's biased or penalised rows `rows` (their
  //      samplers beside them), the few tokens' logits they need besides their candidates,
  //      all in one StepRunner::GatherStepLogits. Once per row per step.
  //   2. TrySample (any thread, distinct rows concurrently; each sampler its own): Sample's
  //      result when it needs nothing more from where the logits are, else nullopt without
  //      drawing.
  //   3. Fetch (driving thread): the rows TrySample left, in one StepRunner::CopyStepLogitsRows.
  //   4. SampleFetched for those rows: from the row fetched — any thread for rows Fetch
  //      brought (distinct rows concurrently), else the driving thread (it fetches the row).
  void Gather(std::span<const size_t> rows, std::span<Sampler* const> samplers);
  std::optional<Sampler::SampleResult> TrySample(Sampler& sampler, size_t row);
  void Fetch(std::span<const size_t> rows);
  Sampler::SampleResult SampleFetched(Sampler& sampler, size_t row);
  // Rows of the planned step whose candidates are sampled with a bias or penalties over a
  // nucleus (the costliest on the host, ~50 µs at a 128k vocabulary): what makes sampling
  // them on several threads worth it.
  size_t num_adjusted_nucleus_rows() const {
    return static_cast<size_t>(
        std::count(row_kinds_.begin(), row_kinds_.end(), RowKind::kAdjustedNucleus));
  }
  // Nucleus rows, and rows with a logit bias or penalties (Sampler::SamplesAdjustedTopK,
  // SamplesAdjustedNucleus), sampled from their candidates, and those whose row had to be
  // fetched, since this object was made.
  int64_t num_nucleus_rows_decided() const { return nucleus_decided_; }
  int64_t num_adjusted_rows_decided() const { return adjusted_decided_; }
  int64_t num_rows_fetched() const { return rows_fetched_; }
  // Adjusted rows that gathered a few tokens' logits (StepRunner::GatherStepLogits) to decide
  // instead of fetching the row: top-k ones whose candidates did not decide, nucleus ones
  // with any touched token outside their candidates.
  int64_t num_rows_gathered() const { return rows_gathered_; }
  // At most this many tokens' logits are gathered for a row (else the row is fetched).
  static constexpr size_t kMaxGatheredLogits = 4096;

 private:
  // How a row of a kTopK step is sampled from its candidates.
  enum class RowKind : uint8_t {
    kDecided,          // always decided by them (SampleFromCandidates)
    kNucleus,          // TrySampleNucleus, else the row is fetched
    kAdjusted,         // TrySampleAdjusted, else the row is fetched
    kAdjustedNucleus,  // TrySampleAdjustedNucleus with gathered logits, else the row is fetched
  };
  enum class GatherState : uint8_t { kNotAsked, kGathered, kTooMany };
  // What Gather brought for a row: the tokens and their logits (none needed: empty).
  struct RowGathers {
    GatherState state = GatherState::kNotAsked;
    std::vector<int32_t> ids;
    std::vector<float> values;
  };
  // The softmax normalizer a row's logprobs take (a nucleus row's at temperature 1).
  Sampler::RowNormalizer NormalizerOf(size_t row) const;
  // The tokens whose logits a kTopK row needs besides its candidates (Sampler's
  // AdjustedSuspects or AdjustedNucleusGathers); empty for the other rows.
  std::vector<int32_t> GathersOf(const Sampler& sampler, size_t row) const;

  StepLogitsOptions options_;
  int32_t vocab_size_ = 0;
  size_t num_rows_ = 0;
  bool all_greedy_ = true;
  int32_t candidates_ = 1;  // the rows' largest need; 0: some row needs the whole row
  // Per row: the temperature of its softmax normalizer (1 for logprobs, the sampling
  // temperature for a nucleus row) and how its candidates are sampled.
  std::vector<float> normalizer_temperatures_;
  std::vector<RowKind> row_kinds_;
  bool normalizers_ = false;  // some row reports logprobs or samples a nucleus
  // Some nucleus row reports logprobs at a temperature other than 1: its logprobs need the exp
  // sum at 1 besides its weight sum.
  bool sums_t1_ = false;
  Kind kind_ = Kind::kRows;
  int32_t k_ = 0;
  StepRunner* runner_ = nullptr;     // of the last Forward (nucleus rows' fallback)
  std::vector<RowGathers> gathers_;  // [rows] of the last Forward
  // Rows Fetch brought: fetched_at_[row] is the row's index in whole_rows_, or -1.
  std::vector<int64_t> fetched_at_;
  // Counted by TrySample and SampleFetched, which may run on several threads at once.
  std::atomic<int64_t> nucleus_decided_ = 0;
  std::atomic<int64_t> adjusted_decided_ = 0;
  int64_t rows_gathered_ = 0;
  std::atomic<int64_t> rows_fetched_ = 0;
  // The step's outputs, reused across steps.
  // Whole rows, [rows][vocab] in StepRunner::host_memory_backend()'s host memory: a kRows
  // step's every row, or the rows a kTopK step fetched, in fetch order (one buffer serves
  // both: a step is of one kind).
  kernels::HostBuffer<float> whole_rows_;
  std::vector<int32_t> argmax_;  // kArgMax: [rows]
  TopTokens top_;                // kTopK
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_STEP_LOGITS_H_
