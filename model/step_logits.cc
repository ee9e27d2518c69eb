#include "model/step_logits.h"

#include <algorithm>
#include <bit>
#include <optional>
#include <span>
#include <utility>

#include "common/check.h"

namespace glimpse::model {

void StepLogits::Begin(const StepLogitsOptions& options, int32_t vocab_size) {
  options_ = options;
  vocab_size_ = vocab_size;
  num_rows_ = 0;
  all_greedy_ = true;
  candidates_ = 1;
  normalizers_ = false;
  sums_t1_ = false;
  normalizer_temperatures_.clear();
  row_kinds_.clear();
}

void StepLogits::AddRow(const SamplingParams& params, bool report_logprobs) {
  ++num_rows_;
  all_greedy_ = all_greedy_ && Sampler::IsPlainGreedy(params, report_logprobs);
  int32_t needed = Sampler::CandidatesNeeded(params, report_logprobs, vocab_size_);
  const bool nucleus_candidates =
      needed == 0 && options_.nucleus_candidates > 0 && options_.max_device_top_k > 0;
  const bool nucleus = nucleus_candidates && Sampler::SamplesNucleus(params, vocab_size_);
  // With a logit bias or penalties: also the raw logits of the tokens those touch, gathered.
  const bool adjusted_nucleus =
      nucleus_candidates && Sampler::SamplesAdjustedNucleus(params, vocab_size_);
  if (nucleus || adjusted_nucleus) {
    // At least the top logprobs too, when it reports them.
    needed = std::max(std::min(options_.nucleus_candidates, options_.max_device_top_k),
                      Sampler::LogprobCandidates(params, report_logprobs, vocab_size_));
    sums_t1_ = sums_t1_ || (report_logprobs && params.temperature != 1.0f);
  }
  const bool adjusted = needed == 0 && options_.adjusted_extra_candidates > 0 &&
                        options_.max_device_top_k > 0 &&
                        Sampler::SamplesAdjustedTopK(params, vocab_size_);
  if (adjusted) {
    // Above max_device_top_k: the whole rows (Finish).
    needed = Sampler::AdjustedCandidatesNeeded(params, report_logprobs, vocab_size_) +
             options_.adjusted_extra_candidates;
  }
  candidates_ = needed == 0 || candidates_ == 0 ? 0 : std::max(candidates_, needed);
  normalizers_ = normalizers_ || report_logprobs || nucleus || adjusted_nucleus;
  normalizer_temperatures_.push_back(nucleus || adjusted_nucleus ? params.temperature : 1.0f);
  row_kinds_.push_back(nucleus            ? RowKind::kNucleus
                       : adjusted_nucleus ? RowKind::kAdjustedNucleus
                       : adjusted         ? RowKind::kAdjusted
                                          : RowKind::kDecided);
}

void StepLogits::Finish() {
  kind_ = Kind::kRows;
  k_ = 0;
  if (num_rows_ == 0) return;
  if (options_.device_greedy && all_greedy_) {
    kind_ = Kind::kArgMax;
  } else if (candidates_ > 0 && candidates_ <= options_.max_device_top_k) {
    kind_ = Kind::kTopK;
    k_ = std::min(static_cast<int32_t>(std::bit_ceil(static_cast<uint32_t>(candidates_))),
                  options_.max_device_top_k);
  }
}

absl::Status StepLogits::Forward(StepRunner& runner, const StepBatch& batch) {
  CHECK(batch.logits_rows.size() == num_rows_);
  runner_ = &runner;
  switch (kind_) {
    case Kind::kArgMax:
      argmax_.resize(num_rows_);
      return runner.ForwardGreedy(batch, argmax_.data());
    case Kind::kTopK:
      return runner.ForwardTopK(batch, k_,
                                normalizers_ ? std::span<const float>(normalizer_temperatures_)
                                             : std::span<const float>(),
                                sums_t1_, &top_);
    case Kind::kRows:
      break;
  }
  logits_.resize(num_rows_ * static_cast<size_t>(vocab_size_));
  return runner.Forward(batch, logits_.data());
}

Sampler::SampleResult StepLogits::Sample(Sampler& sampler, size_t row) {
  CHECK(row < num_rows_);
  switch (kind_) {
    case Kind::kArgMax:
      return sampler.SampleArgMax(argmax_[row]);
    case Kind::kTopK: {
      if (row_kinds_[row] == RowKind::kAdjustedNucleus) return SampleAdjustedNucleus(sampler, row);
      if (row_kinds_[row] == RowKind::kNucleus) {
        // The logprobs' normalizer: the weight sum itself at temperature 1, else the sum at 1
        // the step brought besides.
        const Sampler::RowNormalizer normalizer = {
            top_.row_max[row],
            top_.row_exp_sum_t1.empty() ? top_.row_exp_sum[row] : top_.row_exp_sum_t1[row]};
        std::optional<Sampler::SampleResult> result = sampler.TrySampleNucleus(
            top_.Ids(row), top_.Logits(row), k_, top_.row_exp_sum[row], &normalizer);
        if (result.has_value()) {
          ++nucleus_decided_;
          return *std::move(result);
        }
        return FetchAndSample(sampler, row);
      }
      Sampler::RowNormalizer normalizer;
      if (normalizers_) normalizer = {top_.row_max[row], top_.row_exp_sum[row]};
      if (row_kinds_[row] == RowKind::kAdjusted) {
        const Sampler::RowNormalizer* row_normalizer = normalizers_ ? &normalizer : nullptr;
        std::optional<Sampler::SampleResult> result =
            sampler.TrySampleAdjusted(top_.Ids(row), top_.Logits(row), k_, row_normalizer);
        if (!result.has_value()) {
          // The biased or penalised tokens that could still win: their logits alone, when
          // few, decide it.
          const std::vector<int32_t> suspects =
              sampler.AdjustedSuspects(top_.Ids(row), top_.Logits(row), k_);
          if (!suspects.empty() && suspects.size() <= kMaxGatheredLogits) {
            ++rows_gathered_;
            gathered_.resize(suspects.size());
            const absl::Status status = runner_->GatherStepLogits(row, suspects, gathered_.data());
            CHECK(status.ok());
            result = sampler.TrySampleAdjusted(top_.Ids(row), top_.Logits(row), k_, row_normalizer,
                                               suspects, gathered_);
          }
        }
        if (result.has_value()) {
          ++adjusted_decided_;
          return *std::move(result);
        }
        return FetchAndSample(sampler, row);
      }
      return sampler.SampleFromCandidates(top_.Ids(row), top_.Logits(row),
                                          normalizers_ ? &normalizer : nullptr);
    }
    case Kind::kRows:
      break;
  }
  const size_t vocab = static_cast<size_t>(vocab_size_);
  return sampler.Sample(std::span<const float>(logits_).subspan(row * vocab, vocab));
}

Sampler::SampleResult StepLogits::SampleAdjustedNucleus(Sampler& sampler, size_t row) {
  const Sampler::RowNormalizer normalizer = {top_.row_max[row], top_.row_exp_sum_t1.empty()
                                                                    ? top_.row_exp_sum[row]
                                                                    : top_.row_exp_sum_t1[row]};
  // The raw logits of every biased or penalised token outside the candidates, gathered.
  const std::vector<int32_t> gathers = sampler.AdjustedNucleusGathers(top_.Ids(row), k_);
  if (gathers.size() > kMaxGatheredLogits) return FetchAndSample(sampler, row);
  gathered_.resize(gathers.size());
  if (!gathers.empty()) {
    ++rows_gathered_;
    const absl::Status status = runner_->GatherStepLogits(row, gathers, gathered_.data());
    CHECK(status.ok());
  }
  std::optional<Sampler::SampleResult> result =
      sampler.TrySampleAdjustedNucleus(top_.Ids(row), top_.Logits(row), k_, top_.row_max[row],
                                       top_.row_exp_sum[row], &normalizer, gathers, gathered_);
  if (!result.has_value()) return FetchAndSample(sampler, row);
  ++adjusted_decided_;
  return *std::move(result);
}

Sampler::SampleResult StepLogits::FetchAndSample(Sampler& sampler, size_t row) {
  // Not decided by the candidates: the row itself, still where the step left it.
  ++rows_fetched_;
  fetched_row_.resize(static_cast<size_t>(vocab_size_));
  const absl::Status status = runner_->CopyStepLogitsRow(row, fetched_row_.data());
  CHECK(status.ok());
  return sampler.Sample(fetched_row_);
}

}  // namespace glimpse::model
