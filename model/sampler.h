// Token sampler: turns one row of model logits into the next token of one sequence.
//
// Processing order (fixed; the speculative verifier relies on it, see
// reference/algorithms.md §1.1 — its target distribution p is exactly ProcessedProbabilities):
//
//   raw logits (fp32, [vocab_size])
//     1. logit_bias          l[t] += bias[t]            (-inf bans t)
//     2. penalties           repetition (prompt + output tokens, multiplicative), then
//                            frequency and presence (output tokens only, additive)
//     3. temperature         l / T; T < kGreedyTemperatureEpsilon ⇒ greedy (steps 4–6 skipped,
//                            the distribution is a one-hot at the argmax, ties → lowest id)
//     4. top-k               keep the k highest (ties → lower id), exactly min(k, #finite) tokens
//     5. top-p               keep the smallest prefix of the survivors, most likely first, whose
//                            cumulative probability >= top_p (at least one token)
//     6. min-p               drop tokens with p < min_p * p_max
//     7. renormalise, draw   inverse CDF: over token ids in increasing order after a top-p or
//                            min-p cut; when neither cuts, over the weights w = exp((l - max)/T)
//                            by binade, heaviest first (binade b: w in [2^-b, 2^(1-b))), ids
//                            increasing within one — a row's few most likely tokens then
//                            usually decide a plain-temperature draw (TrySampleNucleus), and
//                            the order costs one pass, not a sort
//
// NaN logits are treated as -inf. If every token ends up at -inf (e.g. all banned), the
// distribution degenerates to a one-hot at token 0 (the greedy tie rule on an all -inf row).
//
// Logprobs are those of the RAW model logits (log-softmax of the unprocessed row, vLLM's default),
// so they describe the model, not the sampling knobs.
//
// Reproducibility: the RNG is std::mt19937_64 (bit-exact by the C++ standard) with our own
// conversion to a double in [0, 1); every sum runs in a fixed order (token ids; binades, then
// ids, in step 7's walk), and every selection uses a total order (value, then id). The same seed
// and the same logits sequence give the same tokens with any standard library (libm's expf/log are
// the only outside arithmetic).
//
// Cost per call at vocabulary V: O(V) for greedy (two passes plus one expf pass for the logprob)
// and for top-k (one heap pass, then work on k tokens); top-p without top-k sorts incrementally,
// only as far as the nucleus reaches (worst case a full sort); plain temperature is O(V) (the
// binade walk, step 7, needs no sort). Measured at V = 128k on one loaded x86 core: greedy
// ≈ 0.6 ms, top-k 50 + top-p ≈ 1 ms, plain ≈ 1.4 ms, a flat top-p 0.9 nucleus of ~15k tokens
// ≈ 2.4 ms. Without logprobs (report_logprobs false) the raw row's log-softmax is skipped:
// greedy ≈ 0.08 ms, top-k 50 + top-p ≈ 0.16–0.45 ms, plain ≈ 0.9 ms (//model:sampler_bench);
// from the row's 50 candidates alone (SampleFromCandidates) ≈ 1 µs, greedy with 5 top
// logprobs from 5 candidates and the row's normalizer ≈ 0.1 µs (≈ 1 ms from the whole row),
// plain temperature or top-p from 256 candidates and the row's weight sum (TrySampleNucleus)
// ≈ 2–3 µs; greedy or top-k 50 with a repetition penalty over a 1100-token history
// ≈ 0.15–0.2 ms from the whole row, ≈ 0.5–3 µs from 64 or 128 candidates (TrySampleAdjusted);
// top-p 0.9 or plain temperature with that penalty ≈ 0.85–4.4 ms from the whole row,
// ≈ 45–70 µs from 256 candidates and the ~1100 penalised tokens' gathered logits
// (TrySampleAdjustedNucleus).
// Scratch buffers are thread_local, so memory per Sampler is O(#distinct history tokens), not
// O(V).
#ifndef GLIMPSE_MODEL_SAMPLER_H_
#define GLIMPSE_MODEL_SAMPLER_H_

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "model/sampling_params.h"

namespace glimpse::model {

// One Sampler per sequence. It owns the sequence's RNG and the token history that the penalties
// need (prompt token set, per-token counts of generated tokens). Not thread-safe: the engine thread
// owns it. Sampling never records the token by itself; the caller calls Accept() for each token it
// commits, so that speculative verification can draw and reject without changing the history.
class Sampler {
 public:
  struct SampleResult {
    int32_t token = 0;
    // log-softmax of the raw logits at `token` (NaN from Sample() of a sampler made with
    // report_logprobs false).
    float logprob = 0.0f;
    // The params.num_logprobs most likely tokens under the raw logits, as (token id, logprob),
    // sorted by logprob descending, ties by lower id. Empty when num_logprobs == 0.
    std::vector<std::pair<int32_t, float>> top_logprobs;
  };

  // `params` must pass ValidateSamplingParams(params, vocab_size) (CHECKed). The RNG is seeded with
  // params.seed if set, else with `default_seed` (the engine's per-request seed).
  // report_logprobs false: Sample() returns the token alone (logprob NaN, no top_logprobs;
  // params.num_logprobs must be 0, CHECKed) and skips the raw row's log-softmax, an expf per
  // vocabulary entry: most of a greedy sample's cost (at V = 128k ~0.5 of ~0.6 ms). The tokens
  // and the RNG's draws are the same either way.
  Sampler(const SamplingParams& params, int32_t vocab_size, uint64_t default_seed,
          bool report_logprobs = true);

  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Records prompt tokens for the repetition penalty. May be called more than once (chunks).
  // Ids must be in [0, vocab_size) (CHECKed).
  void AddPromptTokens(std::span<const int32_t> tokens);

  // Records one committed generated token (for all three penalties). Id CHECKed as above.
  void Accept(int32_t token);

  // Draws the next token from ProcessedProbabilities(logits) with this sampler's RNG and returns
  // it with its raw logprobs. Does NOT call Accept(). One RNG draw per call, also when greedy.
  // With a top-p or min-p cut (or greedy) exactly equivalent to
  // ResultForToken(logits, SampleFromProbabilities(ProcessedProbabilities(logits))); without
  // one the same distribution, drawn in binade order (step 7), so the token a given draw
  // picks differs.
  // `logits`: fp32, [vocab_size], one row of the model output.
  SampleResult Sample(std::span<const float> logits);

  // Fills `probs` ([vocab_size] fp32, resized) with the final sampling distribution after steps
  // 1–6 above, renormalised to sum to 1; a one-hot at the argmax when greedy.
  void ProcessedProbabilities(std::span<const float> logits, std::vector<float>* probs) const;

  // As above, with `pending_tokens` counted as generated after the accepted history (for the
  // penalties) without being accepted: the verifier's distribution at a draft-tree node whose path
  // from the last committed token is `pending_tokens`.
  void ProcessedProbabilities(std::span<const float> logits,
                              std::span<const int32_t> pending_tokens,
                              std::vector<float>* probs) const;

  // Draws a token id with probability probs[i] / sum(probs), using this sampler's RNG (one draw).
  // `probs`: [vocab_size]; need not be normalised (e.g. a verifier residual); entries <= 0 or NaN
  // are never drawn; the sum of the positive entries must be > 0 (CHECKed).
  int32_t SampleFromProbabilities(std::span<const float> probs);

  // The next uniform double in [0, 1) from this sampler's RNG (for the verifier's accept test).
  double NextUniform();

  // Raw-logit logprobs for `token` (and the top num_logprobs tokens), as Sample() returns them.
  // Lets the verifier report logprobs of draft tokens it accepted without calling Sample().
  SampleResult ResultForToken(std::span<const float> logits, int32_t token) const;

  bool is_greedy() const { return is_greedy_; }
  // Whether Sample() of these params is the raw row's argmax alone: greedy, no logit bias, no
  // penalties, no logprobs. The engine then lets the device reduce the rows
  // (StepRunner::ForwardGreedy) and hands the token to SampleArgMax.
  static bool IsPlainGreedy(const SamplingParams& params, bool report_logprobs);
  // Sample()'s result for a row whose argmax is `token`, without the row: the token, logprob
  // NaN, and the same one RNG draw. Only for plain greedy samplers (CHECKed).
  SampleResult SampleArgMax(int32_t token);

  // What the raw logprobs of a row take of the whole row: its largest value `max` (NaN
  // ignored; -inf when there is none) and `exp_sum`, the sum over values x above -inf of
  // expf(x - max) (in double) when max is finite, the number of +inf values when it is +inf,
  // 0 when it is -inf. A token of raw logit x has logprob x - (max + log(exp_sum)).
  struct RowNormalizer {
    float max = 0.0f;
    double exp_sum = 0.0;
  };
  // The row's normalizer by this class's rule: the sum in id order.
  static RowNormalizer NormalizerOf(std::span<const float> logits);

  // How many of a row's most likely raw logits decide Sample()'s result by themselves, with
  // the row's RowNormalizer when report_logprobs: 0 when the sample needs the whole row;
  // else for greedy 1, for sampling with 0 < top_k < vocab_size top_k (temperature, top-p
  // and min-p then act on the top_k survivors only), with logprobs at least
  // params.num_logprobs — all only without logit bias or penalties. The engine then lets the
  // device select the candidates (StepRunner::ForwardTopK) and hands them to
  // SampleFromCandidates.
  static int32_t CandidatesNeeded(const SamplingParams& params, bool report_logprobs,
                                  int32_t vocab_size);
  // The candidates a row's top logprobs take (its num_logprobs most likely; 0 without).
  static int32_t LogprobCandidates(const SamplingParams& params, bool report_logprobs,
                                   int32_t vocab_size);
  // Sample()'s result for a row known only by its most likely entries: `ids` (increasing) and
  // their raw `logits`, which must include the row's CandidatesNeeded() most likely tokens by
  // the top-k order (value descending, id ascending; all tokens above -inf when there are
  // fewer) and nothing at NaN or -inf, and, when this sampler reports logprobs, the row's
  // `normalizer` (else ignored; may be null). Extra candidates are allowed. The same token,
  // the same one RNG draw and the same top_logprobs ids as Sample() on the whole row; the
  // logprob values too given NormalizerOf's normalizer (one summed in another order differs
  // in the last bits). Only when CandidatesNeeded() > 0 (CHECKed).
  SampleResult SampleFromCandidates(std::span<const int32_t> ids, std::span<const float> logits,
                                    const RowNormalizer* normalizer);
  // Whether Sample() of these params draws from a nucleus over the whole vocabulary: sampling
  // without top-k, logit bias or penalties — with top-p < 1 or min-p > 0, or neither (plain
  // temperature: the nucleus is the whole row, but the draw walks it heaviest binade first and
  // usually stops within its head). The engine may then hand such a row over as its most
  // likely entries and the row's sum of weights (TrySampleNucleus; with logprobs also the
  // row's normalizer at temperature 1), falling back to the whole row when those do not
  // decide.
  static bool SamplesNucleus(const SamplingParams& params, int32_t vocab_size);
  // The relative error TrySampleNucleus allows in the weight sum it is given, against this
  // class's own (the id-order double sum of expf((x - max) / T)): one computed elsewhere with
  // an exp within 2 ulp of this libm's and in another order is well inside it.
  static constexpr double kNucleusSumTolerance = 1e-6;
  // Sample()'s result for a nucleus row (SamplesNucleus) known by its most likely entries —
  // `ids` (increasing) and their raw `logits` as SampleFromCandidates takes them, the row's top
  // `requested` by the top-k order (every token above -inf when there are fewer) — and
  // `weight_sum`, the row's sum over values x above -inf of exp((x - max) / temperature) (the
  // number of +inf values when max is +inf) within kNucleusSumTolerance; with logprobs also
  // the row's `normalizer` (as SampleFromCandidates takes it; requested >= num_logprobs),
  // else ignored (may be null).
  // When they decide Sample()'s draw — every token above -inf is there, or the nucleus (top-p)
  // and min-p's survivors close among them, farther from their threshold than the sum's
  // tolerance could move it, or (neither cut) the draw's target lands within the candidates'
  // complete binades, farther from the steps between them than that tolerance — the same
  // token (logprobs as SampleFromCandidates, or NaN without) and the same one RNG draw;
  // otherwise nullopt without drawing (the caller samples the whole row).
  std::optional<SampleResult> TrySampleNucleus(std::span<const int32_t> ids,
                                               std::span<const float> logits, int32_t requested,
                                               double weight_sum, const RowNormalizer* normalizer);
  // Whether Sample() of these params keeps a row's k most likely tokens after a logit bias or
  // penalties: greedy (k = 1) or top-k sampling (0 < top_k < vocab_size), with a logit bias or
  // a penalty on. Those change a few tokens' logits (the biased ones and the history's), so
  // the row's most likely raw entries usually still decide the sample (TrySampleAdjusted); the
  // engine may hand such a row over as those, falling back to the whole row when they do not.
  static bool SamplesAdjustedTopK(const SamplingParams& params, int32_t vocab_size);
  // The fewest raw candidates TrySampleAdjusted can decide an adjusted top-k row from:
  // max(k, the top logprobs' candidates). More decide more rows (the biased and penalised
  // tokens among the row's most likely may drop out of its top k). 0 when not such a row.
  static int32_t AdjustedCandidatesNeeded(const SamplingParams& params, bool report_logprobs,
                                          int32_t vocab_size);
  // Sample()'s result for an adjusted top-k row (SamplesAdjustedTopK) known by its most likely
  // raw entries — `ids` (increasing) and their raw `logits` as SampleFromCandidates takes
  // them, the row's top `requested` by the top-k order (every token above -inf when there are
  // fewer), requested >= AdjustedCandidatesNeeded — and, with logprobs, the row's
  // `normalizer` (else ignored; may be null). Steps 1–2 act on the candidates' logits; a token
  // outside them has a raw logit no larger than theirs, so the bias or penalty it gets bounds
  // what it can reach (each step is monotone). When k candidates end above every such bound
  // (or no token lies outside), they are the processed row's top k: the same token, logprobs
  // as SampleFromCandidates and one RNG draw as Sample(); otherwise nullopt without drawing
  // (e.g. a token outside with a large positive bias could win). The caller may then gather
  // the raw logits of AdjustedSuspects and try again with them as `gathered_ids` (increasing,
  // none of `ids`) and `gathered_logits` (any values, NaN and -inf included): those tokens are
  // then known exactly; else it samples the whole row.
  std::optional<SampleResult> TrySampleAdjusted(std::span<const int32_t> ids,
                                                std::span<const float> logits, int32_t requested,
                                                const RowNormalizer* normalizer,
                                                std::span<const int32_t> gathered_ids = {},
                                                std::span<const float> gathered_logits = {});
  // The tokens whose raw logits TrySampleAdjusted (given the same candidates) lacked to
  // decide: those outside the candidates, biased or generated, whose bias or penalties could
  // lift them into the top k; with their raw logits it decides. In increasing id order; empty
  // when those would not be enough (an untouched token or a prompt token under a repetition
  // penalty below 1 could reach the top k: only the whole row decides) or not needed.
  std::vector<int32_t> AdjustedSuspects(std::span<const int32_t> ids, std::span<const float> logits,
                                        int32_t requested) const;
  // Whether Sample() of these params draws from a nucleus over the whole vocabulary (no
  // top-k; top-p, min-p or plain temperature) after a logit bias or penalties. Such a row is
  // decided by its most likely raw entries, the row's raw weight sum and the raw logits of
  // every biased or penalised token among the rest (TrySampleAdjustedNucleus).
  static bool SamplesAdjustedNucleus(const SamplingParams& params, int32_t vocab_size);
  // The tokens an adjusted nucleus row needs the raw logits of besides its candidates `ids`
  // (increasing; `requested` asked for): every biased, generated or (under a repetition
  // penalty) prompt token outside them, in increasing id order; none when the candidates are
  // every token above -inf.
  std::vector<int32_t> AdjustedNucleusGathers(std::span<const int32_t> ids,
                                              int32_t requested) const;
  // Sample()'s result for an adjusted nucleus row (SamplesAdjustedNucleus) known by its most
  // likely raw entries (`ids`, `logits`, `requested` as TrySampleNucleus takes them), the
  // row's largest raw logit `row_max` and `weight_sum`, its sum over raw values x above -inf
  // of exp((x - row_max) / temperature) within kNucleusSumTolerance, with logprobs its
  // `normalizer`, and the raw logits of its AdjustedNucleusGathers (`gathered_ids`,
  // `gathered_logits`: any values). Bias and penalties act on those known tokens; every
  // other token is untouched, so the processed row's weight sum is the raw one with the known
  // tokens' raw weights taken out and their processed weights put in (to a tolerance that
  // grows as they take more of the raw sum). When that decides the draw as TrySampleNucleus
  // would, the same token, logprobs and one RNG draw as Sample(); otherwise nullopt without
  // drawing.
  std::optional<SampleResult> TrySampleAdjustedNucleus(
      std::span<const int32_t> ids, std::span<const float> logits, int32_t requested, float row_max,
      double weight_sum, const RowNormalizer* normalizer, std::span<const int32_t> gathered_ids,
      std::span<const float> gathered_logits);
  const SamplingParams& params() const { return params_; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  // Sample()'s result for `token`: ResultForToken, or the token alone without logprobs.
  SampleResult Result(std::span<const float> logits, int32_t token) const;

  // Steps 1–2: `processed` ([vocab_size], resized) = raw logits with NaN → -inf, biased and
  // penalised (with `pending_tokens` counted as generated).
  void ProcessedLogits(std::span<const float> logits, std::span<const int32_t> pending_tokens,
                       std::vector<float>* processed) const;

  // Step 2 on one token's logit `l` (after step 1): repetition when the token is in the
  // prompt or generated, then frequency and presence by its generated `count`.
  float Penalized(float l, bool in_prompt, int32_t count) const;
  // Steps 1–2 on one token of raw logit `raw` (not NaN), with the accepted history alone.
  float AdjustedLogit(int32_t token, float raw) const;
  // The largest logit steps 1–2 can give a token outside `ids` and `gathered_ids` (both
  // increasing) whose raw logit is at most `raw_bound`.
  float AdjustedBound(float raw_bound, std::span<const int32_t> ids,
                      std::span<const int32_t> gathered_ids) const;
  // The top k an adjusted row keeps (1 when greedy).
  size_t AdjustedTopK() const;
  // The candidates `ids`/`logits` and the gathered tokens above -inf (NaN as -inf; ids
  // increasing, none of `ids`; CHECKed), merged in id order into `known_ids`/`known_logits`.
  void MergeKnown(std::span<const int32_t> ids, std::span<const float> logits,
                  std::span<const int32_t> gathered_ids, std::span<const float> gathered_logits,
                  std::vector<int32_t>* known_ids, std::vector<float>* known_logits) const;
  // Steps 1–2 in place on `logits` ([vocab_size], NaN already mapped to -inf).
  void ApplyBiasAndPenalties(std::span<const int32_t> pending_tokens,
                             std::span<float> logits) const;

  // Whether the raw logits alone decide the sample: no logit bias, no penalties (which read
  // the history).
  static bool NoBiasOrPenalties(const SamplingParams& params);
  // The raw logprob of a token of raw logit `logit` (NaN as -inf) in a row of `normalizer`.
  static float LogprobOf(float logit, const RowNormalizer& normalizer);
  // CHECKs that `ids` and `logits` are candidates as SampleFromCandidates takes them.
  void CheckCandidates(std::span<const int32_t> ids, std::span<const float> logits) const;
  // Sample()'s result for `token` from the candidates SampleFromCandidates takes: with logprobs
  // ResultForToken's given the row's `normalizer`, else the token alone (normalizer ignored).
  SampleResult ResultFromCandidates(std::span<const int32_t> ids, std::span<const float> logits,
                                    const RowNormalizer* normalizer, int32_t token) const;
  // What TryDrawNucleus knows of the tokens it is not given.
  struct NucleusOutside {
    // No token outside is above -inf: the given ones are Sample()'s candidates themselves.
    bool none = false;
    // Else every one of them has a processed logit at most `max_z`; `ties_rank_after`: one
    // equal to a given token's ranks after it (a raw row's top-k order), else may rank before.
    float max_z = 0.0f;
    bool ties_rank_after = true;
  };
  // A nucleus draw decided by known tokens: `ids` (increasing) and their processed logits `z`
  // (above -inf), the row's sum of weights exp((z - max z) / T) `weight_sum` within relative
  // `sum_tolerance`, and `outside`. The draw (one) when they decide it, else nullopt without
  // drawing. `weights`: z's weights as TemperatureWeights computes them, when the caller has
  // them already (empty: computed here).
  std::optional<int32_t> TryDrawNucleus(std::span<const int32_t> ids, std::span<const float> z,
                                        const NucleusOutside& outside, double weight_sum,
                                        double sum_tolerance, std::span<const float> weights = {});
  // Steps 1, 2 and 4 of a non-greedy sample: the tokens that can be drawn (the top_k, or every
  // token above -inf), in increasing id order, and their processed logits.
  void Candidates(std::span<const float> logits, std::span<const int32_t> pending_tokens,
                  std::vector<int32_t>* ids, std::vector<float>* candidate_logits) const;
  // Steps 3, 5 and 6, renormalised, over candidates in increasing id order (at least one):
  // probs[i] for the candidate whose processed logit is z[i].
  void CandidateProbabilities(std::span<const float> z, std::vector<float>* probs) const;
  // Step 3: `weights` (resized) = exp((z - max z) / T) per candidate, the largest exactly 1.
  void TemperatureWeights(std::span<const float> z, std::vector<float>* weights) const;
  // Step 6 over weights w (those outside the nucleus already 0), then renormalised in id order.
  void MinPAndRenormalise(std::span<float> w) const;
  // A draw (one) from the candidates' distribution; token 0 when there are none.
  int32_t DrawFromCandidates(std::span<const int32_t> ids, std::span<const float> z);
  // Whether a draw walks the weights by binade (step 7): no top-p and no min-p cut.
  bool DrawsByBinade() const;
  // Steps 3 and 7 without a cut over candidates in increasing id order (at least one): the
  // position drawn in the binade walk (one RNG draw).
  size_t DrawByBinade(std::span<const float> z);
  // Inverse CDF over the positive entries of `probs` in index order (one RNG draw).
  int32_t DrawIndex(std::span<const float> probs);
  // The uniform the next NextUniform() will return, without drawing it.
  double PeekUniform() const;
  // The uniform double in [0, 1) that 64 random bits give.
  static double UniformFrom(uint64_t bits);

  const SamplingParams params_;
  const int32_t vocab_size_;
  const bool report_logprobs_;
  const bool is_greedy_;
  // Whether any history-dependent penalty is on; when not, no history is stored.
  const bool tracks_prompt_;  // repetition_penalty != 1.
  const bool tracks_output_;  // any of the three penalties on.
  // Whether a penalty can raise a logit (repetition below 1, a negative frequency or presence
  // penalty): only then can a generated token outside a row's candidates beat its least
  // likely one without a bias.
  const bool penalties_can_raise_;
  // params_.logit_bias sorted by token id (AdjustedLogit's lookup).
  std::vector<std::pair<int32_t, float>> sorted_bias_;
  // Every token a bias or penalty may change: the biased ones and the history's, increasing
  // (AdjustedNucleusGathers).
  std::vector<int32_t> touched_;
  std::mt19937_64 rng_;
  // Distinct prompt token ids (only if tracks_prompt_).
  absl::flat_hash_set<int32_t> prompt_tokens_;
  // Generated token id → number of times accepted (only if tracks_output_).
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_SAMPLER_H_
