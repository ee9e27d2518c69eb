#include "model/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include "common/check.h"
#include "model/sampling_params.h"

namespace glimpse::model {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// First size of the incremental top-p sort; it doubles until the nucleus is covered.
constexpr size_t kTopPFirstChunk = 64;

// Per-thread scratch space, reused across calls and across Samplers so that a Sampler holds no
// O(vocab) buffers (hundreds of sequences × 128k vocab would otherwise cost hundreds of MB).
// Each buffer is used by one function at a time; see the comments where they are used.
struct Scratch {
  std::vector<float> logits;     // [vocab] fp32: processed logits (ProcessedProbabilities).
  std::vector<int32_t> ids;      // candidate token ids (ProcessedProbabilities, ResultForToken).
  std::vector<int32_t> pending;  // sorted copy of pending tokens (ApplyBiasAndPenalties).
  std::vector<float> candidate_logits;  // [candidates]: their processed logits (Candidates).
  std::vector<float> candidate_probs;   // [candidates]: CandidateProbabilities' output.
  std::vector<int32_t> order;           // [candidates]: positions, most likely first (top-p).
  std::vector<std::pair<float, int32_t>> heap;  // (logit, id), at most top_k (SelectTopK).
  std::vector<int32_t> positions;               // [candidates]: TopPositionsInOrder's selection.
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

float NanToNegInf(float x) { return std::isnan(x) ? kNegInf : x; }

// Index of the largest value, the lowest index among ties; NaN is never chosen; 0 if there is
// no value above -inf.
[[gnu::noinline]] int32_t ArgMax(std::span<const float> values) {
  int32_t best = 0;
  float best_value = kNegInf;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > best_value) {  // False for NaN.
      best_value = values[i];
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

// The largest value, NaN ignored; -inf if there is none. Kept out of line: inlined into
// ResultForToken, GCC 12 keeps the running maximum in memory and the loop runs 3x slower.
[[gnu::noinline]] float MaxIgnoringNan(std::span<const float> values) {
  float max = kNegInf;
  for (float x : values) {
    if (x > max) max = x;  // False for NaN.
  }
  return max;
}

// Writes to `ids` (in no particular order) the `k` ids with the highest values, ties to lower ids,
// skipping -inf. One pass with a size-k heap whose front is the least likely entry kept: for
// k << V nearly every element fails one predictable comparison, so this is O(V + k log k · log V)
// in practice, several times faster than nth_element over all ids.
void SelectTopK(std::span<const float> values, size_t k,
                std::vector<std::pair<float, int32_t>>* heap, std::vector<int32_t>* ids) {
  auto more_likely = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  heap->clear();
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (v == kNegInf) continue;
    if (heap->size() < k) {
      heap->emplace_back(v, static_cast<int32_t>(i));
      std::push_heap(heap->begin(), heap->end(), more_likely);
    } else if (v > heap->front().first) {
      // Ids arrive in increasing order, so on equal values the kept entry (lower id) wins.
      std::pop_heap(heap->begin(), heap->end(), more_likely);
      heap->back() = {v, static_cast<int32_t>(i)};
      std::push_heap(heap->begin(), heap->end(), more_likely);
    }
  }
  ids->clear();
  for (const auto& entry : *heap) ids->push_back(entry.second);
}

// The entries of `ids` and `values` at `positions` (increasing), into `kept_ids` and
// `kept_values` (resized): a selection of candidates, still in id order.
void KeepPositions(std::span<const int32_t> positions, std::span<const int32_t> ids,
                   std::span<const float> values, std::vector<int32_t>* kept_ids,
                   std::vector<float>* kept_values) {
  kept_ids->resize(positions.size());
  kept_values->resize(positions.size());
  for (size_t i = 0; i < positions.size(); ++i) {
    (*kept_ids)[i] = ids[positions[i]];
    (*kept_values)[i] = values[positions[i]];
  }
}

// A strict total order on positions into `z` (in id order), most likely first, ties to the
// lower position: the sorts that use it give the same sequence on every standard library.
auto MoreLikelyOrder(std::span<const float> z) {
  return [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
}

// Writes to `positions` (increasing) the positions of the `k` most likely of `values` under
// MoreLikelyOrder (ties to the lower position): SelectTopK's choice, in id order, for a few
// candidates with none at -inf. One selection of the k-th most likely (O(n)) and a pass
// keeping it and what ranks before it, instead of a heap of k and a sort: a top-k step's rows
// are sampled one after another between two forward passes.
void TopPositionsInOrder(std::span<const float> values, size_t k, std::vector<int32_t>* scratch,
                         std::vector<int32_t>* positions) {
  const size_t n = values.size();
  positions->resize(std::min(k, n));
  if (k >= n) {
    std::iota(positions->begin(), positions->end(), 0);
    return;
  }
  if (k == 0) return;
  const auto more_likely = MoreLikelyOrder(values);
  scratch->resize(n);
  std::iota(scratch->begin(), scratch->end(), 0);
  std::nth_element(scratch->begin(), scratch->begin() + static_cast<std::ptrdiff_t>(k - 1),
                   scratch->end(), more_likely);
  const int32_t kth = (*scratch)[k - 1];
  size_t kept = 0;
  for (int32_t i = 0; i < static_cast<int32_t>(n); ++i) {
    // A strict total order: exactly k positions are kth or rank before it.
    if (i == kth || more_likely(i, kth)) (*positions)[kept++] = i;
  }
}

// Sums in array order (candidates are kept in increasing id order, so this is id order) so that
// the result does not depend on any algorithm's element order.
double SumInIdOrder(std::span<const float> values) {
  double total = 0.0;
  for (float v : values) total += v;
  return total;
}

// Without a top-p or min-p cut a draw walks the weights by binade, heaviest first: binade b
// holds the weights in [2^-b, 2^(1-b)) (b = 0: weight 1; 127: the subnormal ones and 0), the
// tokens of one binade in increasing id order. Ordering by binade takes one pass, not a sort,
// and a row's most likely tokens fill its heaviest binades, so they usually decide the draw.
constexpr int kNumBinades = 128;

int BinadeOf(float weight) {  // weight in [0, 1]: its biased float exponent, counted down
  return 127 - static_cast<int>(std::bit_cast<uint32_t>(weight) >> 23);
}

// The step of that walk over weights `w` (in id order) that holds every target in
// [low, high], when the binades below `complete` hold every weight of the row in them: its
// position, or nullopt when the range meets a step's end or goes past those binades. The step
// of weight w[i] ends at base + prefix, in double: base the sum of the heavier binades' sums
// (each summed in id order, added heaviest first), prefix the id-order sum of its own
// binade's weights up to w[i]. Weights of 0 are never a step.
std::optional<size_t> BinadeStepHolding(std::span<const float> w, int complete, double low,
                                        double high) {
  std::array<double, kNumBinades> sums{};
  for (float x : w) {
    if (x > 0.0f) sums[BinadeOf(x)] += x;
  }
  double base = 0.0;
  for (int b = 0; b < complete; ++b) {
    const double end = base + sums[b];
    if (high < end) {
      // Where the range begins, from this binade's start (below 0: in a heavier binade).
      const double from = low - base;
      const double to = high - base;
      double prefix = 0.0;
      for (size_t i = 0; i < w.size(); ++i) {
        if (w[i] > 0.0f && BinadeOf(w[i]) == b) {
          const double before = prefix;
          prefix += w[i];
          if (to < prefix) return from < before ? std::nullopt : std::optional<size_t>(i);
        }
      }
      return std::nullopt;  // the binade's own steps rounded below its sum
    }
    base = end;
  }
  return std::nullopt;
}

// The last step of that walk over weights `w` (at least one positive): the last token, in id
// order, of the lightest binade with a positive weight.
size_t LastBinadeStep(std::span<const float> w) {
  int lightest = 0;
  for (float x : w) {
    if (x > 0.0f) lightest = std::max(lightest, BinadeOf(x));
  }
  size_t last = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (w[i] > 0.0f && BinadeOf(w[i]) == lightest) last = i;
  }
  return last;
}

}  // namespace

Sampler::Sampler(const SamplingParams& params, int32_t vocab_size, uint64_t default_seed,
                 bool report_logprobs)
    : params_(params),
      vocab_size_(vocab_size),
      report_logprobs_(report_logprobs),
      is_greedy_(params.temperature < kGreedyTemperatureEpsilon),
      tracks_prompt_(params.repetition_penalty != 1.0f),
      tracks_output_(params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f ||
                     params.frequency_penalty != 0.0f),
      penalties_can_raise_(params.repetition_penalty < 1.0f || params.presence_penalty < 0.0f ||
                           params.frequency_penalty < 0.0f),
      sorted_bias_(params.logit_bias),
      rng_(params.seed.value_or(default_seed)) {
  CHECK(ValidateSamplingParams(params, vocab_size).ok());
  CHECK(report_logprobs || params.num_logprobs == 0);
  std::sort(sorted_bias_.begin(), sorted_bias_.end());
  for (const auto& [token, bias] : sorted_bias_) touched_.push_back(token);
}

void Sampler::AddPromptTokens(std::span<const int32_t> tokens) {
  for (int32_t token : tokens) CHECK(token >= 0 && token < vocab_size_);
  if (!tracks_prompt_) return;
  // The tokens new to the history join touched_ in one merge.
  std::vector<int32_t> fresh;
  for (int32_t token : tokens) {
    if (prompt_tokens_.insert(token).second) fresh.push_back(token);
  }
  std::sort(fresh.begin(), fresh.end());
  std::vector<int32_t> merged;
  merged.reserve(touched_.size() + fresh.size());
  std::set_union(touched_.begin(), touched_.end(), fresh.begin(), fresh.end(),
                 std::back_inserter(merged));
  touched_ = std::move(merged);
}

void Sampler::Accept(int32_t token) {
  CHECK(token >= 0 && token < vocab_size_);
  if (!tracks_output_) return;
  if (++output_counts_[token] == 1) {
    const auto at = std::lower_bound(touched_.begin(), touched_.end(), token);
    if (at == touched_.end() || *at != token) touched_.insert(at, token);
  }
}

void Sampler::ApplyBiasAndPenalties(std::span<const int32_t> pending_tokens,
                                    std::span<float> logits) const {
  for (const auto& [token, bias] : params_.logit_bias) {
    // A ban is absolute, also over a +inf logit (where inf + -inf would be NaN).
    logits[token] = bias == kNegInf ? kNegInf : logits[token] + bias;
  }
  if (!tracks_output_) return;

  // `count` = generated occurrences (accepted + pending). Each token is penalised exactly once,
  // so the iteration order of the hash containers below does not matter.
  auto penalize = [&](int32_t token, bool in_prompt, int32_t count) {
    logits[token] = Penalized(logits[token], in_prompt, count);
  };

  std::vector<int32_t>& pending = ThreadScratch().pending;
  pending.assign(pending_tokens.begin(), pending_tokens.end());
  std::sort(pending.begin(), pending.end());
  auto pending_count = [&pending](int32_t token) {
    auto [lo, hi] = std::equal_range(pending.begin(), pending.end(), token);
    return static_cast<int32_t>(hi - lo);
  };

  // 1. Tokens already generated (plus their pending occurrences).
  for (const auto& [token, count] : output_counts_) {
    penalize(token, prompt_tokens_.contains(token), count + pending_count(token));
  }
  // 2. Tokens generated only on the pending path.
  for (size_t i = 0; i < pending.size();) {
    const int32_t token = pending[i];
    size_t j = i;
    while (j < pending.size() && pending[j] == token) ++j;
    CHECK(token >= 0 && token < vocab_size_);
    if (!output_counts_.contains(token)) {
      penalize(token, prompt_tokens_.contains(token), static_cast<int32_t>(j - i));
    }
    i = j;
  }
  // 3. Tokens seen only in the prompt (repetition penalty alone).
  for (int32_t token : prompt_tokens_) {
    if (!output_counts_.contains(token) &&
        !std::binary_search(pending.begin(), pending.end(), token)) {
      penalize(token, /*in_prompt=*/true, /*count=*/0);
    }
  }
}

float Sampler::Penalized(float l, bool in_prompt, int32_t count) const {
  const float repetition = params_.repetition_penalty;
  if (repetition != 1.0f && (in_prompt || count > 0)) {
    l = l > 0.0f ? l / repetition : l * repetition;
  }
  if (count > 0) {
    l -= params_.frequency_penalty * static_cast<float>(count);
    l -= params_.presence_penalty;
  }
  return l;
}

float Sampler::AdjustedLogit(int32_t token, float raw) const {
  float l = raw;
  const auto biased = std::lower_bound(sorted_bias_.begin(), sorted_bias_.end(),
                                       std::pair<int32_t, float>(token, kNegInf));
  if (biased != sorted_bias_.end() && biased->first == token) {
    l = biased->second == kNegInf ? kNegInf : l + biased->second;  // as ApplyBiasAndPenalties
  }
  if (!tracks_output_) return l;
  const auto counted = output_counts_.find(token);
  return Penalized(l, prompt_tokens_.contains(token),
                   counted == output_counts_.end() ? 0 : counted->second);
}

float Sampler::AdjustedBound(float raw_bound, std::span<const int32_t> ids,
                             std::span<const int32_t> gathered_ids) const {
  // Each step is monotone in the logit (an added constant; a division or multiplication by a
  // positive penalty by sign; float rounding keeps the order), so a token of raw logit at
  // most raw_bound ends at most at AdjustedLogit(token, raw_bound). Untouched tokens end
  // where they began.
  float bound = raw_bound;
  auto outside = [ids, gathered_ids](int32_t token) {
    return !std::binary_search(ids.begin(), ids.end(), token) &&
           !std::binary_search(gathered_ids.begin(), gathered_ids.end(), token);
  };
  for (const auto& [token, bias] : sorted_bias_) {
    if (outside(token)) bound = std::max(bound, AdjustedLogit(token, raw_bound));
  }
  if (!tracks_output_) return bound;
  // Generated tokens without a bias end at most at raw_bound unless a penalty can raise
  // them (x / r <= x and x * r <= x for r >= 1, in float too); then each its own. (The
  // history grows with the output: the common case needs no walk over it.)
  if (penalties_can_raise_) {
    for (const auto& [token, count] : output_counts_) {
      if (outside(token)) bound = std::max(bound, AdjustedLogit(token, raw_bound));
    }
  }
  // Prompt tokens neither biased nor generated all take one rule: repetition alone (a bound
  // also when every one of them is a candidate).
  if (!prompt_tokens_.empty()) {
    bound = std::max(bound, Penalized(raw_bound, /*in_prompt=*/true, /*count=*/0));
  }
  return bound;
}

void Sampler::ProcessedLogits(std::span<const float> logits,
                              std::span<const int32_t> pending_tokens,
                              std::vector<float>* processed) const {
  CHECK(logits.size() == static_cast<size_t>(vocab_size_));
  processed->resize(logits.size());
  std::transform(logits.begin(), logits.end(), processed->begin(), NanToNegInf);
  ApplyBiasAndPenalties(pending_tokens, *processed);
}

void Sampler::ProcessedProbabilities(std::span<const float> logits,
                                     std::vector<float>* probs) const {
  ProcessedProbabilities(logits, /*pending_tokens=*/{}, probs);
}

void Sampler::ProcessedProbabilities(std::span<const float> logits,
                                     std::span<const int32_t> pending_tokens,
                                     std::vector<float>* probs) const {
  CHECK(probs != nullptr);
  Scratch& scratch = ThreadScratch();
  probs->assign(logits.size(), 0.0f);
  std::vector<float>& p = *probs;
  if (is_greedy_) {
    std::vector<float>& z = scratch.logits;
    ProcessedLogits(logits, pending_tokens, &z);
    p[ArgMax(z)] = 1.0f;
    return;
  }
  Candidates(logits, pending_tokens, &scratch.ids, &scratch.candidate_logits);
  if (scratch.ids.empty()) {  // Everything banned: the documented degenerate one-hot.
    p[0] = 1.0f;
    return;
  }
  CandidateProbabilities(scratch.candidate_logits, &scratch.candidate_probs);
  for (size_t i = 0; i < scratch.ids.size(); ++i) p[scratch.ids[i]] = scratch.candidate_probs[i];
}

void Sampler::Candidates(std::span<const float> logits, std::span<const int32_t> pending_tokens,
                         std::vector<int32_t>* ids, std::vector<float>* candidate_logits) const {
  Scratch& scratch = ThreadScratch();
  std::vector<float>& z = scratch.logits;
  ProcessedLogits(logits, pending_tokens, &z);
  // Step 4 first (it commutes with temperature, which is monotone): the candidates are the top_k
  // tokens, or every token when top-k is off; never a token at -inf.
  const size_t top_k = static_cast<size_t>(params_.top_k);
  if (top_k > 0 && top_k < logits.size()) {
    SelectTopK(z, top_k, &scratch.heap, ids);
    std::sort(ids->begin(), ids->end());
  } else {
    ids->clear();
    for (int32_t i = 0; i < vocab_size_; ++i) {
      if (z[i] != kNegInf) ids->push_back(i);
    }
  }
  candidate_logits->resize(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) (*candidate_logits)[i] = z[(*ids)[i]];
}

void Sampler::CandidateProbabilities(std::span<const float> z, std::vector<float>* probs) const {
  const size_t n = z.size();
  CHECK(n > 0);
  std::vector<float>& p = *probs;
  const auto more_likely = MoreLikelyOrder(z);
  TemperatureWeights(z, &p);  // step 3

  // Step 5: top-p. Sort the candidates most-likely-first only as far as the nucleus reaches:
  // select and sort a chunk, and double it until the cumulative mass reaches top_p.
  if (params_.top_p < 1.0f) {
    const double threshold = static_cast<double>(params_.top_p) * SumInIdOrder(p);
    std::vector<int32_t>& order = ThreadScratch().order;
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
    size_t keep = n;
    double cumulative = 0.0;
    for (size_t begin = 0, end = std::min(n, kTopPFirstChunk); begin < n;
         begin = end, end = std::min(n, 2 * end)) {
      if (end < n) {
        std::nth_element(order.begin() + begin, order.begin() + end, order.end(), more_likely);
      }
      std::sort(order.begin() + begin, order.begin() + end, more_likely);
      for (size_t i = begin; i < end; ++i) {
        cumulative += p[order[i]];
        if (cumulative >= threshold) {
          keep = i + 1;
          break;
        }
      }
      if (keep < n) break;
    }
    for (size_t i = keep; i < n; ++i) p[order[i]] = 0.0f;
  }
  MinPAndRenormalise(p);  // step 6
}

void Sampler::TemperatureWeights(std::span<const float> z, std::vector<float>* weights) const {
  // Unnormalised weights w = exp((z - z_max) / T) in (0, 1]; the most likely token has weight
  // exactly 1 (with +inf logits, the +inf ones share weight 1 each).
  std::vector<float>& w = *weights;
  w.resize(z.size());
  float z_max = kNegInf;
  for (float x : z) z_max = std::max(z_max, x);
  const float temperature = params_.temperature;
  for (size_t i = 0; i < z.size(); ++i) {
    w[i] =
        z_max == kPosInf ? (z[i] == kPosInf ? 1.0f : 0.0f) : std::exp((z[i] - z_max) / temperature);
  }
}

void Sampler::MinPAndRenormalise(std::span<float> w) const {
  // Min-p: p_i < min_p * p_max  ⇔  w_i < min_p, since w_max = 1 and both share the sum.
  if (params_.min_p > 0.0f) {
    for (float& x : w) {
      if (x < params_.min_p) x = 0.0f;
    }
  }
  // Renormalise in id order (the sum is >= 1: the most likely token survives with weight 1).
  const double total = SumInIdOrder(w);
  for (float& x : w) x = static_cast<float>(x / total);
}

double Sampler::UniformFrom(uint64_t bits) {
  // 53 random bits → a double in [0, 1) with uniform spacing 2^-53; portable, unlike
  // std::uniform_real_distribution whose algorithm is implementation-defined.
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

double Sampler::NextUniform() { return UniformFrom(rng_()); }

int32_t Sampler::SampleFromProbabilities(std::span<const float> probs) {
  CHECK(probs.size() == static_cast<size_t>(vocab_size_));
  return DrawIndex(probs);
}

int32_t Sampler::DrawIndex(std::span<const float> probs) {
  const int32_t n = static_cast<int32_t>(probs.size());
  double total = 0.0;
  int32_t last_positive = -1;
  for (int32_t i = 0; i < n; ++i) {
    if (probs[i] > 0.0f) {  // False for NaN.
      total += probs[i];
      last_positive = i;
    }
  }
  CHECK(total > 0.0 && std::isfinite(total));
  // Inverse CDF over ids in increasing order; strict `<` never lands on a zero-mass token.
  const double target = NextUniform() * total;
  double cumulative = 0.0;
  for (int32_t i = 0; i < n; ++i) {
    if (probs[i] > 0.0f) {
      cumulative += probs[i];
      if (target < cumulative) return i;
    }
  }
  return last_positive;  // Only if target * total rounded up to total.
}

Sampler::RowNormalizer Sampler::NormalizerOf(std::span<const float> logits) {
  // log-softmax of the raw row (NaN as -inf), accumulated in double in id order.
  RowNormalizer normalizer;
  normalizer.max = MaxIgnoringNan(logits);
  double sum = 0.0;
  if (normalizer.max == kPosInf) {
    for (float x : logits) sum += x == kPosInf ? 1.0 : 0.0;
  } else if (normalizer.max != kNegInf) {
    const float shift = normalizer.max;
    for (float x : logits) {
      if (x > kNegInf) sum += std::exp(x - shift);  // Skips -inf and NaN.
    }
  }
  normalizer.exp_sum = sum;
  return normalizer;
}

float Sampler::LogprobOf(float logit, const RowNormalizer& normalizer) {
  const float x = NanToNegInf(logit);
  if (normalizer.max == kNegInf) return kNegInf;  // No distribution at all (model bug).
  if (normalizer.max == kPosInf) {
    return x == kPosInf ? static_cast<float>(-std::log(normalizer.exp_sum)) : kNegInf;
  }
  const double log_normalizer = static_cast<double>(normalizer.max) + std::log(normalizer.exp_sum);
  return static_cast<float>(static_cast<double>(x) - log_normalizer);
}

Sampler::SampleResult Sampler::ResultForToken(std::span<const float> logits, int32_t token) const {
  CHECK(logits.size() == static_cast<size_t>(vocab_size_));
  CHECK(token >= 0 && token < vocab_size_);
  const RowNormalizer normalizer = NormalizerOf(logits);
  SampleResult result;
  result.token = token;
  result.logprob = LogprobOf(logits[token], normalizer);
  const size_t num_top = std::min(static_cast<size_t>(params_.num_logprobs), logits.size());
  if (num_top > 0) {
    std::vector<int32_t>& ids = ThreadScratch().ids;
    ids.resize(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    auto more_likely = [&logits](int32_t a, int32_t b) {
      const float la = NanToNegInf(logits[a]);
      const float lb = NanToNegInf(logits[b]);
      return la > lb || (la == lb && a < b);
    };
    std::partial_sort(ids.begin(), ids.begin() + num_top, ids.end(), more_likely);
    result.top_logprobs.reserve(num_top);
    for (size_t i = 0; i < num_top; ++i) {
      result.top_logprobs.emplace_back(ids[i], LogprobOf(logits[ids[i]], normalizer));
    }
  }
  return result;
}

Sampler::SampleResult Sampler::ResultFromCandidates(std::span<const int32_t> ids,
                                                    std::span<const float> logits,
                                                    const RowNormalizer* normalizer_or_null,
                                                    int32_t token) const {
  SampleResult result;
  result.token = token;
  if (!report_logprobs_) {
    result.logprob = std::numeric_limits<float>::quiet_NaN();
    return result;
  }
  const RowNormalizer& normalizer = *normalizer_or_null;
  // The token is a candidate (or token 0 of a row without any, whose logits are all -inf).
  const auto at = std::lower_bound(ids.begin(), ids.end(), token);
  const float token_logit = at != ids.end() && *at == token ? logits[at - ids.begin()] : kNegInf;
  result.logprob = LogprobOf(token_logit, normalizer);
  const size_t num_top =
      std::min(static_cast<size_t>(params_.num_logprobs), static_cast<size_t>(vocab_size_));
  if (num_top == 0) return result;
  // The candidates hold the row's num_top most likely (CandidatesNeeded), or every token
  // above -inf when there are fewer; the rest are -inf, most likely first by the id tie rule.
  std::vector<int32_t>& order = ThreadScratch().order;
  order.resize(ids.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t from_candidates = std::min(num_top, ids.size());
  std::partial_sort(order.begin(), order.begin() + from_candidates, order.end(),
                    MoreLikelyOrder(logits));
  result.top_logprobs.reserve(num_top);
  for (size_t i = 0; i < from_candidates; ++i) {
    result.top_logprobs.emplace_back(ids[order[i]], LogprobOf(logits[order[i]], normalizer));
  }
  size_t next_candidate = 0;  // ids are increasing: walk them beside the id
  for (int32_t id = 0; result.top_logprobs.size() < num_top; ++id) {
    if (next_candidate < ids.size() && ids[next_candidate] == id) {
      ++next_candidate;
      continue;
    }
    result.top_logprobs.emplace_back(id, LogprobOf(kNegInf, normalizer));
  }
  return result;
}

Sampler::SampleResult Sampler::Sample(std::span<const float> logits) {
  if (is_greedy_) {
    // Shortcut with the same outcome as drawing from the one-hot distribution, including the one
    // RNG draw, but without three more passes over the vocabulary.
    int32_t token;
    if (params_.logit_bias.empty() && !tracks_output_) {
      token = ArgMax(logits);  // Nothing to process; ArgMax ignores NaN by itself.
    } else {
      std::vector<float>& z = ThreadScratch().logits;
      ProcessedLogits(logits, /*pending_tokens=*/{}, &z);
      token = ArgMax(z);
    }
    NextUniform();
    return Result(logits, token);
  }
  // As drawing from ProcessedProbabilities(logits), over the candidates alone (the rest have
  // probability 0 and the draw runs in id order either way).
  Scratch& scratch = ThreadScratch();
  Candidates(logits, /*pending_tokens=*/{}, &scratch.ids, &scratch.candidate_logits);
  return Result(logits, DrawFromCandidates(scratch.ids, scratch.candidate_logits));
}

int32_t Sampler::DrawFromCandidates(std::span<const int32_t> ids, std::span<const float> z) {
  if (ids.empty()) {  // Everything banned: the one-hot at token 0, drawn as any distribution.
    NextUniform();
    return 0;
  }
  if (DrawsByBinade()) return ids[DrawByBinade(z)];
  std::vector<float>& probs = ThreadScratch().candidate_probs;
  CandidateProbabilities(z, &probs);
  return ids[DrawIndex(probs)];
}

bool Sampler::DrawsByBinade() const { return params_.top_p == 1.0f && params_.min_p == 0.0f; }

size_t Sampler::DrawByBinade(std::span<const float> z) {
  // Step 3's weights; with no top-p or min-p cut the distribution is w / sum(w). The target is
  // u times the id-order sum, found in the binade walk over the same weights: the same
  // distribution as DrawIndex over CandidateProbabilities, in another order.
  std::vector<float>& w = ThreadScratch().candidate_probs;
  TemperatureWeights(z, &w);
  const double target = NextUniform() * SumInIdOrder(w);
  const std::optional<size_t> drawn = BinadeStepHolding(w, kNumBinades, target, target);
  // nullopt only when the walk's sums rounded below the target: its last step.
  return drawn.has_value() ? *drawn : LastBinadeStep(w);
}

double Sampler::PeekUniform() const {
  std::mt19937_64 copy = rng_;
  return UniformFrom(copy());
}

int32_t Sampler::CandidatesNeeded(const SamplingParams& params, bool report_logprobs,
                                  int32_t vocab_size) {
  if (!NoBiasOrPenalties(params)) return 0;
  int32_t needed = 0;
  if (params.temperature < kGreedyTemperatureEpsilon) {
    needed = 1;
  } else if (params.top_k > 0 && params.top_k < vocab_size) {
    needed = params.top_k;
  } else {
    return 0;
  }
  // Logprobs: the top num_logprobs too, and the rest of the row only through its normalizer.
  return std::max(needed, LogprobCandidates(params, report_logprobs, vocab_size));
}

int32_t Sampler::LogprobCandidates(const SamplingParams& params, bool report_logprobs,
                                   int32_t vocab_size) {
  return report_logprobs ? std::min(params.num_logprobs, vocab_size) : 0;
}

Sampler::SampleResult Sampler::SampleFromCandidates(std::span<const int32_t> ids,
                                                    std::span<const float> logits,
                                                    const RowNormalizer* normalizer) {
  const int32_t needed = CandidatesNeeded(params_, report_logprobs_, vocab_size_);
  CHECK(needed > 0);
  CHECK(ids.size() == logits.size());
  CHECK(!report_logprobs_ || normalizer != nullptr);
  CheckCandidates(ids, logits);
  auto result_for = [&](int32_t token) {
    return ResultFromCandidates(ids, logits, normalizer, token);
  };
  if (is_greedy_) {
    // ArgMax over the candidates (the row's largest values; ids ascending, so the first of
    // equal values is the lowest id), 0 when there are none; one draw, as Sample().
    const int32_t token = ids.empty() ? 0 : ids[ArgMax(logits)];
    NextUniform();
    return result_for(token);
  }
  // Top-k sampling: as Sample() over the top_k (CandidatesNeeded may have asked for more, for
  // the logprobs), logprobs over every candidate.
  const int32_t top_k = params_.top_k;
  // The top_k most likely of the candidates (the caller may pass more), back in id order: the
  // step-4 selection over candidate positions (in id order, so its ties still go to lower ids).
  Scratch& scratch = ThreadScratch();
  std::vector<int32_t>& order = scratch.order;
  TopPositionsInOrder(logits, static_cast<size_t>(top_k), &scratch.positions, &order);
  std::vector<int32_t>& kept_ids = scratch.ids;
  std::vector<float>& kept_logits = scratch.candidate_logits;
  KeepPositions(order, ids, logits, &kept_ids, &kept_logits);
  return result_for(DrawFromCandidates(kept_ids, kept_logits));
}

void Sampler::CheckCandidates(std::span<const int32_t> ids, std::span<const float> logits) const {
  CHECK(ids.size() == logits.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(ids[i] >= 0 && ids[i] < vocab_size_ && (i == 0 || ids[i - 1] < ids[i]));
    CHECK(!std::isnan(logits[i]) && logits[i] != kNegInf);
  }
}

bool Sampler::SamplesNucleus(const SamplingParams& params, int32_t vocab_size) {
  return NoBiasOrPenalties(params) && params.temperature >= kGreedyTemperatureEpsilon &&
         !(params.top_k > 0 && params.top_k < vocab_size);
}

std::optional<Sampler::SampleResult> Sampler::TrySampleNucleus(std::span<const int32_t> ids,
                                                               std::span<const float> logits,
                                                               int32_t requested, double weight_sum,
                                                               const RowNormalizer* normalizer) {
  CHECK(SamplesNucleus(params_, vocab_size_));
  CHECK(requested >= 1 && ids.size() <= static_cast<size_t>(requested));
  CHECK(!report_logprobs_ || (normalizer != nullptr && requested >= params_.num_logprobs));
  CheckCandidates(ids, logits);
  NucleusOutside outside;
  outside.none = ids.size() < static_cast<size_t>(requested);
  if (!outside.none) outside.max_z = *std::min_element(logits.begin(), logits.end());
  const std::optional<int32_t> token =
      TryDrawNucleus(ids, logits, outside, weight_sum, kNucleusSumTolerance);
  if (!token.has_value()) return std::nullopt;
  return ResultFromCandidates(ids, logits, normalizer, *token);
}

std::optional<int32_t> Sampler::TryDrawNucleus(std::span<const int32_t> ids,
                                               std::span<const float> z,
                                               const NucleusOutside& outside, double weight_sum,
                                               double sum_tolerance,
                                               std::span<const float> weights) {
  // Every token above -inf: Sample()'s candidates themselves.
  if (outside.none) return DrawFromCandidates(ids, z);
  const size_t n = ids.size();
  if (n == 0) return std::nullopt;
  // The row's largest processed logit must be a given one (it sets every weight).
  const float z_max = *std::max_element(z.begin(), z.end());
  if (!(z_max > outside.max_z || (outside.ties_rank_after && z_max == outside.max_z))) {
    return std::nullopt;
  }
  // The given tokens' weights as CandidateProbabilities computes them (step 3), and the
  // largest weight a token outside can have.
  Scratch& scratch = ThreadScratch();
  std::vector<float>& w = scratch.candidate_probs;
  if (weights.empty()) {
    TemperatureWeights(z, &w);
  } else {
    CHECK(weights.size() == n);
    w.assign(weights.begin(), weights.end());
  }
  const float outside_weight = z_max == kPosInf
                                   ? (outside.max_z == kPosInf ? 1.0f : 0.0f)
                                   : std::exp((outside.max_z - z_max) / params_.temperature);
  if (DrawsByBinade()) {
    // No cut: Sample() finds u times the row's weight sum, a target in [low, high], in the
    // binade walk. The binades heavier than the heaviest weight outside are complete here.
    const double u = PeekUniform();
    const std::optional<size_t> drawn =
        BinadeStepHolding(w, BinadeOf(outside_weight), u * weight_sum * (1.0 - sum_tolerance),
                          u * weight_sum * (1.0 + sum_tolerance));
    if (!drawn.has_value()) return std::nullopt;
    NextUniform();
    return ids[*drawn];
  }
  // Top-p or min-p: most likely first. The first `ranked` of that order rank before every
  // token outside.
  std::vector<int32_t>& order = scratch.order;
  order.resize(n);
  std::iota(order.begin(), order.end(), 0);
  // Only those need an order (given tokens below them, e.g. penalised ones gathered, are
  // many): partition them to the front, then sort them.
  const auto ranks_first = [&](int32_t i) {
    return z[i] > outside.max_z || (outside.ties_rank_after && z[i] == outside.max_z);
  };
  const size_t ranked =
      static_cast<size_t>(std::partition(order.begin(), order.end(), ranks_first) - order.begin());
  std::sort(order.begin(), order.begin() + ranked, MoreLikelyOrder(z));
  if (params_.top_p < 1.0f) {
    // The whole row's threshold, top_p times its weight sum, lies in [low, high]; the nucleus
    // is decided when one prefix reaches high and the one before it stays below low.
    const double low = static_cast<double>(params_.top_p) * weight_sum * (1.0 - sum_tolerance);
    const double high = static_cast<double>(params_.top_p) * weight_sum * (1.0 + sum_tolerance);
    double cumulative = 0.0;
    size_t reaches_low = ranked;
    size_t reaches_high = ranked;
    for (size_t i = 0; i < ranked; ++i) {
      cumulative += w[order[i]];  // in Sample()'s order and arithmetic
      if (reaches_low == ranked && cumulative >= low) reaches_low = i;
      if (cumulative >= high) {
        reaches_high = i;
        break;
      }
    }
    if (reaches_high == ranked || reaches_low != reaches_high) return std::nullopt;
    for (size_t i = reaches_high + 1; i < n; ++i) w[order[i]] = 0.0f;
  } else if (outside_weight >= params_.min_p) {
    // No nucleus cut: min-p's survivors may go on past the given tokens.
    return std::nullopt;
  }
  // Step 6 and the renormalisation over the survivors, all among the given tokens: the sums
  // in id order are Sample()'s (the tokens it zeroes add nothing).
  MinPAndRenormalise(w);
  return ids[DrawIndex(w)];
}

bool Sampler::SamplesAdjustedTopK(const SamplingParams& params, int32_t vocab_size) {
  return !NoBiasOrPenalties(params) && (params.temperature < kGreedyTemperatureEpsilon ||
                                        (params.top_k > 0 && params.top_k < vocab_size));
}

int32_t Sampler::AdjustedCandidatesNeeded(const SamplingParams& params, bool report_logprobs,
                                          int32_t vocab_size) {
  if (!SamplesAdjustedTopK(params, vocab_size)) return 0;
  const int32_t k = params.temperature < kGreedyTemperatureEpsilon ? 1 : params.top_k;
  return std::max(k, LogprobCandidates(params, report_logprobs, vocab_size));
}

size_t Sampler::AdjustedTopK() const { return is_greedy_ ? 1 : static_cast<size_t>(params_.top_k); }

std::optional<Sampler::SampleResult> Sampler::TrySampleAdjusted(
    std::span<const int32_t> ids, std::span<const float> logits, int32_t requested,
    const RowNormalizer* normalizer, std::span<const int32_t> gathered_ids,
    std::span<const float> gathered_logits) {
  CHECK(SamplesAdjustedTopK(params_, vocab_size_));
  CHECK(requested >= AdjustedCandidatesNeeded(params_, report_logprobs_, vocab_size_) &&
        ids.size() <= static_cast<size_t>(requested));
  CHECK(!report_logprobs_ || normalizer != nullptr);
  CHECK(gathered_ids.size() == gathered_logits.size());
  CheckCandidates(ids, logits);
  // What the tokens outside the candidates (and the gathered ones) can reach after steps 1–2:
  // nothing above -inf when the candidates are every token above -inf; else the bound from
  // the least likely candidate's raw logit, which no token outside exceeds.
  float bound = kNegInf;
  if (ids.size() == static_cast<size_t>(requested)) {
    bound = AdjustedBound(*std::min_element(logits.begin(), logits.end()), ids, gathered_ids);
  }
  // The tokens known by their raw logits: the candidates, and the gathered ones above -inf
  // merged in id order (the rest of those end at -inf, below anything kept).
  std::vector<int32_t> known_ids;
  std::vector<float> known_logits;
  if (!gathered_ids.empty()) {
    MergeKnown(ids, logits, gathered_ids, gathered_logits, &known_ids, &known_logits);
    ids = known_ids;
    logits = known_logits;
  }
  const size_t n = ids.size();
  Scratch& scratch = ThreadScratch();
  std::vector<float>& z = scratch.logits;  // the known tokens' processed logits, in id order
  z.resize(n);
  for (size_t i = 0; i < n; ++i) z[i] = AdjustedLogit(ids[i], logits[i]);
  // Step 4 over them (greedy: the argmax, as ArgMax's lowest-id tie rule): the whole row's
  // when the least likely kept one ends above the bound — or when nothing outside is above
  // -inf (fewer than k kept then, as Sample() keeps).
  const size_t k = AdjustedTopK();
  std::vector<int32_t>& order = scratch.order;
  SelectTopK(z, k, &scratch.heap, &order);
  if (bound != kNegInf) {
    if (order.size() < k) return std::nullopt;
    for (int32_t position : order) {
      if (!(z[position] > bound)) return std::nullopt;
    }
  }
  std::sort(order.begin(), order.end());
  std::vector<int32_t>& kept_ids = scratch.ids;
  std::vector<float>& kept_logits = scratch.candidate_logits;
  KeepPositions(order, ids, z, &kept_ids, &kept_logits);
  int32_t token;
  if (is_greedy_) {
    token = kept_ids.empty() ? 0 : kept_ids[0];  // nothing above -inf: ArgMax's token 0
    NextUniform();                               // as Sample(): one draw, also when greedy
  } else {
    token = DrawFromCandidates(kept_ids, kept_logits);
  }
  // The known tokens include the row's top `requested` by raw logit: the logprobs' too.
  return ResultFromCandidates(ids, logits, normalizer, token);
}

void Sampler::MergeKnown(std::span<const int32_t> ids, std::span<const float> logits,
                         std::span<const int32_t> gathered_ids,
                         std::span<const float> gathered_logits, std::vector<int32_t>* known_ids,
                         std::vector<float>* known_logits) const {
  CHECK(gathered_ids.size() == gathered_logits.size());
  known_ids->clear();
  known_logits->clear();
  size_t c = 0;
  for (size_t g = 0; g <= gathered_ids.size(); ++g) {
    const int32_t next = g < gathered_ids.size() ? gathered_ids[g] : vocab_size_;
    CHECK(next >= 0 && next <= vocab_size_ && (g == 0 || gathered_ids[g - 1] < next));
    for (; c < ids.size() && ids[c] < next; ++c) {
      known_ids->push_back(ids[c]);
      known_logits->push_back(logits[c]);
    }
    if (g == gathered_ids.size()) break;
    CHECK(c == ids.size() || ids[c] != next);  // disjoint from the candidates
    const float x = NanToNegInf(gathered_logits[g]);
    if (x != kNegInf) {
      known_ids->push_back(next);
      known_logits->push_back(x);
    }
  }
}

bool Sampler::SamplesAdjustedNucleus(const SamplingParams& params, int32_t vocab_size) {
  return !NoBiasOrPenalties(params) && params.temperature >= kGreedyTemperatureEpsilon &&
         !(params.top_k > 0 && params.top_k < vocab_size);
}

std::vector<int32_t> Sampler::AdjustedNucleusGathers(std::span<const int32_t> ids,
                                                     int32_t requested) const {
  CHECK(SamplesAdjustedNucleus(params_, vocab_size_));
  std::vector<int32_t> gathers;
  if (ids.size() < static_cast<size_t>(requested)) return gathers;
  std::set_difference(touched_.begin(), touched_.end(), ids.begin(), ids.end(),
                      std::back_inserter(gathers));
  return gathers;
}

std::optional<Sampler::SampleResult> Sampler::TrySampleAdjustedNucleus(
    std::span<const int32_t> ids, std::span<const float> logits, int32_t requested, float row_max,
    double weight_sum, const RowNormalizer* normalizer, std::span<const int32_t> gathered_ids,
    std::span<const float> gathered_logits) {
  CHECK(SamplesAdjustedNucleus(params_, vocab_size_));
  CHECK(requested >= 1 && ids.size() <= static_cast<size_t>(requested));
  CHECK(!report_logprobs_ || (normalizer != nullptr && requested >= params_.num_logprobs));
  CheckCandidates(ids, logits);
  NucleusOutside outside;
  outside.none = ids.size() < static_cast<size_t>(requested);
  if (!outside.none) {
    // Every token outside must be untouched (its raw logit at most the least likely
    // candidate's, and its weight in the raw sum unchanged): the touched ones gathered. One
    // walk over the three increasing lists.
    size_t c = 0;
    size_t g = 0;
    for (int32_t token : touched_) {
      while (c < ids.size() && ids[c] < token) ++c;
      if (c < ids.size() && ids[c] == token) continue;  // a candidate
      while (g < gathered_ids.size() && gathered_ids[g] < token) ++g;
      if (g == gathered_ids.size() || gathered_ids[g] != token) return std::nullopt;
    }
    outside.max_z = *std::min_element(logits.begin(), logits.end());
    outside.ties_rank_after = false;  // a touched known token may tie an untouched one
  }
  // The known tokens: raw logits, then processed (steps 1–2), those above -inf drawn from.
  std::vector<int32_t> known_ids;
  std::vector<float> known_logits;
  MergeKnown(ids, logits, gathered_ids, gathered_logits, &known_ids, &known_logits);
  std::vector<int32_t> drawn_ids;
  std::vector<float> z;
  for (size_t i = 0; i < known_ids.size(); ++i) {
    const float processed = AdjustedLogit(known_ids[i], known_logits[i]);
    if (processed == kNegInf) continue;
    drawn_ids.push_back(known_ids[i]);
    z.push_back(processed);
  }
  double processed_sum = 0.0;
  double tolerance = kNucleusSumTolerance;
  std::vector<float> weights;  // z's, when the sum needs them
  if (!outside.none) {
    // The processed row's weight sum at its own maximum z_max: the untouched rest's raw sum
    // (the raw sum less the known tokens' raw weights) rescaled by exp((row_max - z_max) / T),
    // plus the known tokens' processed weights. The rest's error grows with what was taken
    // out (the raw sum's tolerance, absolute) and by the exponent's rounding at the other
    // maximum (each weight within ~1e-7 of |exponent| relative; 1e-5 of the rest covers
    // exponents to ~100).
    if (z.empty() || !std::isfinite(row_max)) return std::nullopt;
    const float z_max = *std::max_element(z.begin(), z.end());
    if (!std::isfinite(z_max)) return std::nullopt;
    const double temperature = params_.temperature;
    double known_raw = 0.0;
    for (float x : known_logits) {
      known_raw += static_cast<double>(std::exp((x - row_max) / params_.temperature));
    }
    const double rest = std::max(0.0, weight_sum - known_raw);
    const double scale = std::exp((static_cast<double>(row_max) - z_max) / temperature);
    TemperatureWeights(z, &weights);  // TryDrawNucleus draws with them too
    const double known_processed = SumInIdOrder(weights);
    processed_sum = scale * rest + known_processed;
    const double error = scale * (kNucleusSumTolerance * weight_sum + 1e-5 * rest);
    if (!std::isfinite(processed_sum) || !std::isfinite(error) || processed_sum <= 0.0) {
      return std::nullopt;
    }
    tolerance = error / processed_sum + 1e-12;
    if (tolerance > 1e-3) return std::nullopt;  // too loose to decide anything
  }
  const std::optional<int32_t> token =
      TryDrawNucleus(drawn_ids, z, outside, processed_sum, tolerance, weights);
  if (!token.has_value()) return std::nullopt;
  return ResultFromCandidates(known_ids, known_logits, normalizer, *token);
}

std::vector<int32_t> Sampler::AdjustedSuspects(std::span<const int32_t> ids,
                                               std::span<const float> logits,
                                               int32_t requested) const {
  CHECK(SamplesAdjustedTopK(params_, vocab_size_));
  CheckCandidates(ids, logits);
  std::vector<int32_t> suspects;
  if (ids.size() < static_cast<size_t>(requested)) return suspects;  // nothing outside
  // The k-th largest of the candidates' processed logits (-inf when fewer are above -inf):
  // what a token outside must reach to matter.
  std::vector<float> z(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) z[i] = AdjustedLogit(ids[i], logits[i]);
  const size_t k = AdjustedTopK();
  std::vector<std::pair<float, int32_t>> heap;
  std::vector<int32_t> order;
  SelectTopK(z, k, &heap, &order);
  float kth = kNegInf;
  if (order.size() == k) {
    kth = z[order[0]];
    for (int32_t position : order) kth = std::min(kth, z[position]);
  }
  const float raw_bound = *std::min_element(logits.begin(), logits.end());
  // Untouched tokens, and prompt tokens under one shared repetition rule, are too many to
  // gather: when they could matter, only the whole row decides.
  if (!(raw_bound < kth)) return suspects;
  if (tracks_prompt_ && !prompt_tokens_.empty() &&
      !(Penalized(raw_bound, /*in_prompt=*/true, /*count=*/0) < kth)) {
    return suspects;
  }
  auto consider = [&](int32_t token) {
    if (!std::binary_search(ids.begin(), ids.end(), token) &&
        !(AdjustedLogit(token, raw_bound) < kth)) {
      suspects.push_back(token);
    }
  };
  for (const auto& [token, bias] : sorted_bias_) consider(token);
  if (penalties_can_raise_) {  // else no unbiased generated token ends above raw_bound
    for (const auto& [token, count] : output_counts_) consider(token);
  }
  std::sort(suspects.begin(), suspects.end());
  suspects.erase(std::unique(suspects.begin(), suspects.end()), suspects.end());
  return suspects;
}

bool Sampler::NoBiasOrPenalties(const SamplingParams& params) {
  return params.logit_bias.empty() && params.repetition_penalty == 1.0f &&
         params.presence_penalty == 0.0f && params.frequency_penalty == 0.0f;
}

bool Sampler::IsPlainGreedy(const SamplingParams& params, bool report_logprobs) {
  return params.temperature < kGreedyTemperatureEpsilon && NoBiasOrPenalties(params) &&
         !report_logprobs;
}

Sampler::SampleResult Sampler::SampleArgMax(int32_t token) {
  CHECK(IsPlainGreedy(params_, report_logprobs_));
  CHECK(token >= 0 && token < vocab_size_);
  NextUniform();  // as Sample(): one draw per call, also when greedy
  SampleResult result;
  result.token = token;
  result.logprob = std::numeric_limits<float>::quiet_NaN();
  return result;
}

Sampler::SampleResult Sampler::Result(std::span<const float> logits, int32_t token) const {
  if (report_logprobs_) return ResultForToken(logits, token);
  SampleResult result;
  result.token = token;
  result.logprob = std::numeric_limits<float>::quiet_NaN();
  return result;
}

}  // namespace glimpse::model
