#include "model/step_logits.h"

#include <algorithm>
#include <bit>
#include <iterator>
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
  gathers_.assign(num_rows_, RowGathers{});
  fetched_at_.assign(num_rows_, -1);
  // Where the device's copies of whole rows land fastest (a no-op while the runner is the
  // same).
  whole_rows_.SetBackend(runner.host_memory_backend());
  whole_rows_.Clear();
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
  whole_rows_.Resize(num_rows_ * static_cast<size_t>(vocab_size_));
  return runner.Forward(batch, whole_rows_.data());
}

void StepLogits::Reserve(StepRunner& runner, size_t max_rows, int32_t vocab_size) {
  whole_rows_.SetBackend(runner.host_memory_backend());
  whole_rows_.Reserve(max_rows * static_cast<size_t>(vocab_size));
}

Sampler::RowNormalizer StepLogits::NormalizerOf(size_t row) const {
  if (!normalizers_) return {};
  // A nucleus row's logprobs: the weight sum itself at temperature 1, else the sum at 1 the
  // step brought besides; other rows' normalizers are at 1.
  const bool at_t1 = !top_.row_exp_sum_t1.empty() && (row_kinds_[row] == RowKind::kNucleus ||
                                                      row_kinds_[row] == RowKind::kAdjustedNucleus);
  return {top_.row_max[row], at_t1 ? top_.row_exp_sum_t1[row] : top_.row_exp_sum[row]};
}

std::vector<int32_t> StepLogits::GathersOf(const Sampler& sampler, size_t row) const {
  std::vector<int32_t> ids;
  if (kind_ != Kind::kTopK) return ids;
  if (row_kinds_[row] == RowKind::kAdjusted) {
    // The biased or penalised tokens that could still win; none when the candidates decide.
    ids = sampler.AdjustedSuspects(top_.Ids(row), top_.Logits(row), k_);
  } else if (row_kinds_[row] == RowKind::kAdjustedNucleus) {
    // Every touched token outside the candidates.
    ids = sampler.AdjustedNucleusGathers(top_.Ids(row), k_);
  }
  return ids;
}

void StepLogits::Gather(std::span<const size_t> rows, std::span<Sampler* const> samplers) {
  CHECK(rows.size() == samplers.size());
  if (kind_ != Kind::kTopK) return;
  // Per row asked for, the union of its samplers' needs (the n > 1 sequences of a request
  // sample one prompt row each): the row's raw logits serve every sampler of it.
  std::vector<size_t> asked;
  std::vector<std::vector<int32_t>> needs(num_rows_);
  for (size_t i = 0; i < rows.size(); ++i) {
    const size_t row = rows[i];
    CHECK(row < num_rows_);
    if (gathers_[row].state != GatherState::kNotAsked) continue;  // gathered before
    if (std::find(asked.begin(), asked.end(), row) == asked.end()) asked.push_back(row);
    const std::vector<int32_t> ids = GathersOf(*samplers[i], row);
    std::vector<int32_t> merged;
    std::set_union(needs[row].begin(), needs[row].end(), ids.begin(), ids.end(),
                   std::back_inserter(merged));
    needs[row] = std::move(merged);
  }
  std::vector<int32_t> gather_rows;
  std::vector<int32_t> gather_ids;
  for (size_t row : asked) {
    if (needs[row].size() > kMaxGatheredLogits) {
      gathers_[row].state = GatherState::kTooMany;
      continue;
    }
    gathers_[row].state = GatherState::kGathered;
    if (needs[row].empty()) continue;
    ++rows_gathered_;
    gather_rows.insert(gather_rows.end(), needs[row].size(), static_cast<int32_t>(row));
    gather_ids.insert(gather_ids.end(), needs[row].begin(), needs[row].end());
  }
  if (gather_ids.empty()) return;
  std::vector<float> values(gather_ids.size());
  const absl::Status status = runner_->GatherStepLogits(gather_rows, gather_ids, values.data());
  CHECK(status.ok());
  size_t offset = 0;
  for (size_t row : asked) {
    if (gathers_[row].state != GatherState::kGathered || needs[row].empty()) continue;
    gathers_[row].ids = std::move(needs[row]);
    const size_t count = gathers_[row].ids.size();
    gathers_[row].values.assign(values.begin() + offset, values.begin() + offset + count);
    offset += count;
  }
}

std::optional<Sampler::SampleResult> StepLogits::TrySample(Sampler& sampler, size_t row) {
  CHECK(row < num_rows_);
  switch (kind_) {
    case Kind::kArgMax:
      return sampler.SampleArgMax(argmax_[row]);
    case Kind::kRows: {
      const size_t vocab = static_cast<size_t>(vocab_size_);
      return sampler.Sample(whole_rows_.span().subspan(row * vocab, vocab));
    }
    case Kind::kTopK:
      break;
  }
  const Sampler::RowNormalizer normalizer = NormalizerOf(row);
  const Sampler::RowNormalizer* row_normalizer = normalizers_ ? &normalizer : nullptr;
  const RowGathers& gathered = gathers_[row];
  std::optional<Sampler::SampleResult> result;
  switch (row_kinds_[row]) {
    case RowKind::kDecided:
      return sampler.SampleFromCandidates(top_.Ids(row), top_.Logits(row), row_normalizer);
    case RowKind::kNucleus:
      result = sampler.TrySampleNucleus(top_.Ids(row), top_.Logits(row), k_, top_.row_exp_sum[row],
                                        &normalizer);
      if (result.has_value()) ++nucleus_decided_;
      return result;
    case RowKind::kAdjusted:
      // Declines without the suspects' logits when it needs them (it never draws then).
      if (gathered.state == GatherState::kTooMany) return std::nullopt;
      result = sampler.TrySampleAdjusted(top_.Ids(row), top_.Logits(row), k_, row_normalizer,
                                         gathered.ids, gathered.values);
      break;
    case RowKind::kAdjustedNucleus:
      if (gathered.state == GatherState::kTooMany) return std::nullopt;
      result = sampler.TrySampleAdjustedNucleus(top_.Ids(row), top_.Logits(row), k_,
                                                top_.row_max[row], top_.row_exp_sum[row],
                                                &normalizer, gathered.ids, gathered.values);
      break;
  }
  if (result.has_value()) ++adjusted_decided_;
  return result;
}

void StepLogits::Fetch(std::span<const size_t> rows) {
  if (kind_ != Kind::kTopK) return;
  std::vector<int32_t> wanted;
  for (size_t row : rows) {
    CHECK(row < num_rows_);
    if (fetched_at_[row] >= 0) continue;
    fetched_at_[row] = static_cast<int64_t>(wanted.size());  // within this call, then shifted
    wanted.push_back(static_cast<int32_t>(row));
  }
  if (wanted.empty()) return;
  const size_t vocab = static_cast<size_t>(vocab_size_);
  const size_t before = whole_rows_.size() / vocab;
  for (int32_t row : wanted) fetched_at_[row] += static_cast<int64_t>(before);
  whole_rows_.Resize((before + wanted.size()) * vocab);
  const absl::Status status =
      runner_->CopyStepLogitsRows(wanted, whole_rows_.data() + before * vocab);
  CHECK(status.ok());
  rows_fetched_ += static_cast<int64_t>(wanted.size());
}

Sampler::SampleResult StepLogits::SampleFetched(Sampler& sampler, size_t row) {
  CHECK(kind_ == Kind::kTopK && row < num_rows_);
  // Not decided by the candidates: the row itself, still where the step left it.
  if (fetched_at_[row] < 0) {
    const size_t rows[] = {row};
    Fetch(rows);
  }
  const size_t vocab = static_cast<size_t>(vocab_size_);
  return sampler.Sample(std::as_const(whole_rows_)
                            .span()
                            .subspan(static_cast<size_t>(fetched_at_[row]) * vocab, vocab));
}

Sampler::SampleResult StepLogits::Sample(Sampler& sampler, size_t row) {
  CHECK(row < num_rows_);
  if (kind_ == Kind::kTopK && gathers_[row].state == GatherState::kNotAsked) {
    Sampler* const samplers[] = {&sampler};
    const size_t rows[] = {row};
    Gather(rows, samplers);
  }
  std::optional<Sampler::SampleResult> result = TrySample(sampler, row);
  if (result.has_value()) return *std::move(result);
  return SampleFetched(sampler, row);
}

}  // namespace glimpse::model
