#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sampling_params.h"

namespace glimpse::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();

// softmax in double, as the hand reference.
std::vector<double> Softmax(const std::vector<double>& logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] - max);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> LogitsOfProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Deterministic pseudo-random logits in [0, scale), independent of <random> distributions.
std::vector<float> RandomLogits(int32_t vocab_size, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::vector<float> logits(vocab_size);
  for (float& l : logits) l = static_cast<float>((rng() >> 11) * 0x1.0p-53) * scale;
  return logits;
}

std::vector<float> Processed(const Sampler& sampler, const std::vector<float>& logits) {
  std::vector<float> probs;
  sampler.ProcessedProbabilities(logits, &probs);
  return probs;
}

// Expects probs == expected (a dense distribution) within an absolute tolerance.
void ExpectProbsNear(const std::vector<float>& probs, const std::vector<double>& expected,
                     double tolerance = 1e-6) {
  ASSERT_EQ(probs.size(), expected.size());
  for (size_t i = 0; i < probs.size(); ++i) {
    EXPECT_NEAR(probs[i], expected[i], tolerance) << "token " << i;
  }
}

SamplingParams Greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

// ---------------------------------------------------------------------------------------------
// Greedy and temperature.

TEST(SamplerTest, GreedyPicksArgmaxAndProcessedProbabilitiesIsOneHot) {
  Sampler sampler(Greedy(), 4, /*default_seed=*/1);
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f};
  EXPECT_EQ(sampler.Sample(logits).token, 1);
  EXPECT_THAT(Processed(sampler, logits), ElementsAre(0.0f, 1.0f, 0.0f, 0.0f));
}

TEST(SamplerTest, GreedyBreaksTiesTowardLowestId) {
  const std::vector<float> logits = {1.0f, 3.0f, 0.0f, 3.0f, 3.0f};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Sampler sampler(Greedy(), 5, seed);
    EXPECT_EQ(sampler.Sample(logits).token, 1);
  }
}

TEST(SamplerTest, TemperatureBelowEpsilonIsGreedy) {
  SamplingParams params;
  params.temperature = kGreedyTemperatureEpsilon / 2;
  Sampler sampler(params, 3, 1);
  EXPECT_TRUE(sampler.is_greedy());
  EXPECT_THAT(Processed(sampler, {1.0f, 1.0001f, 0.0f}), ElementsAre(0.0f, 1.0f, 0.0f));
}

TEST(SamplerTest, SmallTemperatureApproachesArgmax) {
  SamplingParams params;
  params.temperature = 0.01f;
  Sampler sampler(params, 3, 1);
  EXPECT_FALSE(sampler.is_greedy());
  const std::vector<float> probs = Processed(sampler, {1.0f, 1.2f, 0.5f});
  EXPECT_GT(probs[1], 1.0f - 1e-6f);
  for (uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(sampler.Sample({{1.0f, 1.2f, 0.5f}}).token, 1);
}

TEST(SamplerTest, TemperatureScalesLogitsBeforeSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
  for (float temperature : {0.5f, 1.0f, 2.0f}) {
    SamplingParams params;
    params.temperature = temperature;
    Sampler sampler(params, 4, 1);
    std::vector<double> scaled;
    for (float l : logits) scaled.push_back(l / static_cast<double>(temperature));
    ExpectProbsNear(Processed(sampler, logits), Softmax(scaled));
  }
}

// ---------------------------------------------------------------------------------------------
// top-k, top-p, min-p.

TEST(SamplerTest, TopKOneEqualsGreedy) {
  for (uint64_t trial = 0; trial < 20; ++trial) {
    std::vector<float> logits = RandomLogits(1000, trial, 5.0f);
    if (trial % 2 == 0) logits[700] = logits[300] = 6.0f;  // A tie at the top: id 300 wins.
    SamplingParams params;
    params.top_k = 1;
    Sampler top1(params, 1000, /*default_seed=*/trial);
    Sampler greedy(Greedy(), 1000, /*default_seed=*/trial);
    const int32_t expected = greedy.Sample(logits).token;
    if (trial % 2 == 0) {
      EXPECT_EQ(expected, 300);
    }
    EXPECT_EQ(top1.Sample(logits).token, expected);
  }
}

TEST(SamplerTest, TopKNeverSamplesOutsideTopK) {
  const std::vector<float> logits = RandomLogits(50, 7, 3.0f);
  std::vector<int32_t> order(50);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const std::set<int32_t> top5(order.begin(), order.begin() + 5);

  SamplingParams params;
  params.top_k = 5;
  Sampler sampler(params, 50, 42);
  std::set<int32_t> seen;
  for (int i = 0; i < 20000; ++i) {
    const int32_t token = sampler.Sample(logits).token;
    ASSERT_TRUE(top5.contains(token)) << token;
    seen.insert(token);
  }
  EXPECT_EQ(seen, top5);  // The support is the whole top-5, not less.

  // And the processed distribution is the softmax restricted to the top-5.
  const std::vector<float> probs = Processed(sampler, logits);
  double top5_mass = 0.0;
  for (int32_t id : top5) top5_mass += std::exp(static_cast<double>(logits[id]));
  for (int32_t id = 0; id < 50; ++id) {
    const double expected = top5.contains(id) ? std::exp(logits[id]) / top5_mass : 0.0;
    EXPECT_NEAR(probs[id], expected, 1e-6) << id;
  }
}

TEST(SamplerTest, TopKBreaksTiesTowardLowerIds) {
  SamplingParams params;
  params.top_k = 2;
  Sampler sampler(params, 5, 1);
  const std::vector<float> probs = Processed(sampler, {1.0f, 2.0f, 2.0f, 2.0f, 0.0f});
  ExpectProbsNear(probs, {0.0, 0.5, 0.5, 0.0, 0.0});
}

TEST(SamplerTest, TopKMatchesFullSortReferenceWithManyTies) {
  constexpr int32_t kVocab = 5000;
  std::mt19937_64 rng(5);
  std::vector<float> logits(kVocab);
  for (float& l : logits) l = static_cast<float>(rng() % 20);  // ~250 tokens per value.
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (int32_t top_k : {1, 100, 333, 4999}) {
    SCOPED_TRACE(top_k);
    SamplingParams params;
    params.top_k = top_k;
    const std::vector<float> probs = Processed(Sampler(params, kVocab, 1), logits);
    const std::set<int32_t> expected(order.begin(), order.begin() + top_k);
    std::set<int32_t> support;
    for (int32_t id = 0; id < kVocab; ++id) {
      if (probs[id] > 0.0f) support.insert(id);
    }
    EXPECT_EQ(support, expected);
  }
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  // Ids deliberately not in probability order.
  const std::vector<float> logits = LogitsOfProbs({0.05, 0.5, 0.15, 0.3});
  struct Case {
    float top_p;
    std::vector<double> expected;
  };
  const std::vector<Case> cases = {
      {0.01f, {0.0, 1.0, 0.0, 0.0}},
      {0.5f, {0.0, 1.0, 0.0, 0.0}},  // 0.5 >= 0.5 after one token (rounding-safe: 0.5 is exact).
      {0.75f, {0.0, 0.625, 0.0, 0.375}},
      {0.9f, {0.0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95}},
      {1.0f, {0.05, 0.5, 0.15, 0.3}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.top_p);
    SamplingParams params;
    params.top_p = c.top_p;
    Sampler sampler(params, 4, 1);
    ExpectProbsNear(Processed(sampler, logits), c.expected);
  }
}

TEST(SamplerTest, TopPRunsOnTheTopKRenormalisedDistribution) {
  // After top-k=2: {0.4, 0.3} → {0.571, 0.429}; top_p=0.5 then keeps only token 0. Applied to the
  // unrestricted distribution, top_p=0.5 would keep tokens 0 and 1.
  SamplingParams params;
  params.top_k = 2;
  params.top_p = 0.5f;
  Sampler sampler(params, 4, 1);
  ExpectProbsNear(Processed(sampler, LogitsOfProbs({0.4, 0.3, 0.2, 0.1})), {1.0, 0.0, 0.0, 0.0});
}

TEST(SamplerTest, TopPOnLargeVocabMatchesFullSortReference) {
  constexpr int32_t kVocab = 128000;
  const std::vector<float> logits = RandomLogits(kVocab, 3, 12.0f);
  // Reference: full sort, cumulative sum in double.
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<double> weights(kVocab);
  double total = 0.0;
  for (int32_t i = 0; i < kVocab; ++i) total += weights[i] = std::exp(logits[i] - logits[order[0]]);

  for (float top_p : {0.3f, 0.9f, 0.999f}) {
    SCOPED_TRACE(top_p);
    size_t nucleus = 0;
    double cumulative = 0.0;
    while (cumulative < top_p * total) cumulative += weights[order[nucleus++]];
    ASSERT_GT(nucleus, 64u);  // Exercises the incremental sort beyond its first chunk.

    SamplingParams params;
    params.top_p = top_p;
    Sampler sampler(params, kVocab, 1);
    const std::vector<float> probs = Processed(sampler, logits);
    const std::set<int32_t> kept(order.begin(), order.begin() + nucleus);
    for (int32_t id = 0; id < kVocab; ++id) {
      if (kept.contains(id)) {
        ASSERT_NEAR(probs[id], weights[id] / cumulative, 1e-9) << id;
        ASSERT_GT(probs[id], 0.0f) << id;
      } else {
        ASSERT_EQ(probs[id], 0.0f) << id;
      }
    }
  }
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfMax) {
  const std::vector<float> logits = LogitsOfProbs({0.5, 0.3, 0.15, 0.05});
  SamplingParams params;
  params.min_p = 0.35f;  // Threshold 0.175: keeps 0.5 and 0.3.
  ExpectProbsNear(Processed(Sampler(params, 4, 1), logits), {0.625, 0.375, 0.0, 0.0});
  params.min_p = 0.25f;  // Threshold 0.125: keeps 0.15 too.
  ExpectProbsNear(Processed(Sampler(params, 4, 1), logits),
                  {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0});
  params.min_p = 1.0f;  // Only the maximum.
  ExpectProbsNear(Processed(Sampler(params, 4, 1), logits), {1.0, 0.0, 0.0, 0.0});
}

// ---------------------------------------------------------------------------------------------
// Penalties and bias.

TEST(SamplerTest, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  Sampler sampler(params, 5, 1);
  sampler.AddPromptTokens(std::vector<int32_t>{0, 0});
  sampler.Accept(1);
  sampler.Accept(0);  // In prompt and output: still penalised once.
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 1.0f, 0.0f};
  ExpectProbsNear(Processed(sampler, logits), Softmax({1.0, -2.0, 0.5, 1.0, 0.0}));
}

TEST(SamplerTest, PresencePenaltyAppliesOncePerGeneratedTokenAndIgnoresPrompt) {
  SamplingParams params;
  params.presence_penalty = 0.5f;
  Sampler sampler(params, 4, 1);
  sampler.AddPromptTokens(std::vector<int32_t>{2});
  sampler.Accept(0);
  sampler.Accept(0);
  sampler.Accept(1);
  const std::vector<float> logits = {1.0f, 0.8f, 0.3f, 0.0f};
  ExpectProbsNear(Processed(sampler, logits), Softmax({0.5, 0.3, 0.3, 0.0}));
}

TEST(SamplerTest, FrequencyPenaltyScalesWithCount) {
  SamplingParams params;
  params.frequency_penalty = 0.3f;
  Sampler sampler(params, 4, 1);
  sampler.AddPromptTokens(std::vector<int32_t>{2, 2, 2});
  for (int32_t token : {0, 0, 0, 1}) sampler.Accept(token);
  const std::vector<float> logits = {1.0f, 0.8f, 0.3f, 0.0f};
  ExpectProbsNear(Processed(sampler, logits), Softmax({0.1, 0.5, 0.3, 0.0}));
}

TEST(SamplerTest, NegativePenaltiesEncourageRepetition) {
  SamplingParams params;
  params.presence_penalty = -1.0f;
  params.frequency_penalty = -0.5f;
  Sampler sampler(params, 3, 1);
  sampler.Accept(2);
  sampler.Accept(2);
  ExpectProbsNear(Processed(sampler, {1.0f, 0.0f, 0.0f}), Softmax({1.0, 0.0, 2.0}));
}

TEST(SamplerTest, LogitBiasIsAppliedBeforeRepetitionPenalty) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  params.logit_bias = {{0, 1.0f}};
  Sampler sampler(params, 2, 1);
  sampler.Accept(0);
  // (1 + 1) / 2 = 1; penalty first would give 1 / 2 + 1 = 1.5.
  ExpectProbsNear(Processed(sampler, {1.0f, 0.0f}), Softmax({1.0, 0.0}));
}

TEST(SamplerTest, PendingTokensArePenalisedLikeAcceptedOnesWithoutBeingRecorded) {
  SamplingParams params;
  params.repetition_penalty = 1.5f;
  params.presence_penalty = 0.2f;
  params.frequency_penalty = 0.1f;
  params.temperature = 0.7f;
  const std::vector<float> logits = RandomLogits(30, 11, 4.0f);
  const std::vector<int32_t> prompt = {3, 4, 5};
  const std::vector<int32_t> committed = {5, 6};
  const std::vector<int32_t> pending = {6, 7, 7, 3};

  Sampler speculating(params, 30, 1);
  Sampler committed_all(params, 30, 1);
  speculating.AddPromptTokens(prompt);
  committed_all.AddPromptTokens(prompt);
  for (int32_t t : committed) speculating.Accept(t);
  for (int32_t t : committed) committed_all.Accept(t);
  const std::vector<float> before = Processed(speculating, logits);
  for (int32_t t : pending) committed_all.Accept(t);

  std::vector<float> with_pending;
  speculating.ProcessedProbabilities(logits, pending, &with_pending);
  const std::vector<float> expected = Processed(committed_all, logits);
  std::vector<double> expected_d(expected.begin(), expected.end());
  ExpectProbsNear(with_pending, expected_d, 0.0);  // Same arithmetic: bitwise equal.
  EXPECT_NE(with_pending, before);
  EXPECT_EQ(Processed(speculating, logits), before);  // Pending tokens were not recorded.
}

TEST(SamplerTest, LogitBiasMinusInfBansTheArgmax) {
  const std::vector<float> logits = {0.0f, 5.0f, 4.0f};
  SamplingParams params;
  params.logit_bias = {{1, -kInf}};
  Sampler sampler(params, 3, 9);
  EXPECT_EQ(Processed(sampler, logits)[1], 0.0f);
  for (int i = 0; i < 10000; ++i) ASSERT_NE(sampler.Sample(logits).token, 1);

  SamplingParams greedy = Greedy();
  greedy.logit_bias = {{1, -kInf}};
  EXPECT_EQ(Sampler(greedy, 3, 9).Sample(logits).token, 2);
}

TEST(SamplerTest, LargePositiveLogitBiasForcesToken) {
  const std::vector<float> logits = {0.0f, 5.0f, 4.0f};
  SamplingParams params;
  params.logit_bias = {{0, 100.0f}};
  Sampler sampler(params, 3, 9);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sampler.Sample(logits).token, 0);
}

TEST(SamplerTest, AllTokensBannedDegeneratesToTokenZero) {
  SamplingParams params;
  params.logit_bias = {{0, -kInf}, {1, -kInf}};
  Sampler sampler(params, 2, 1);
  EXPECT_THAT(Processed(sampler, {1.0f, 2.0f}), ElementsAre(1.0f, 0.0f));
}

TEST(SamplerTest, NanLogitsAreNeverSampled) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Sampler sampler(SamplingParams(), 3, 1);
  const std::vector<float> logits = {nan, 0.0f, 0.0f};
  ExpectProbsNear(Processed(sampler, logits), {0.0, 0.5, 0.5});
  EXPECT_EQ(Sampler(Greedy(), 3, 1).Sample(logits).token, 1);
}

// ---------------------------------------------------------------------------------------------
// RNG and distribution.

std::vector<int32_t> SampleSequence(const SamplingParams& params, uint64_t default_seed) {
  Sampler sampler(params, 100, default_seed);
  std::vector<int32_t> tokens;
  for (uint64_t step = 0; step < 200; ++step) {
    tokens.push_back(sampler.Sample(RandomLogits(100, step, 4.0f)).token);
    sampler.Accept(tokens.back());
  }
  return tokens;
}

TEST(SamplerTest, SameSeedReproducesAndDifferentSeedsDiffer) {
  SamplingParams params;
  params.top_p = 0.95f;
  params.frequency_penalty = 0.1f;
  EXPECT_EQ(SampleSequence(params, 1), SampleSequence(params, 1));
  EXPECT_NE(SampleSequence(params, 1), SampleSequence(params, 2));
  params.seed = 77;  // An explicit seed overrides the engine's default seed...
  EXPECT_EQ(SampleSequence(params, 1), SampleSequence(params, 2));
  const std::vector<int32_t> seed_77 = SampleSequence(params, 1);
  params.seed = 78;  // ...and is what decides the draws.
  EXPECT_NE(SampleSequence(params, 1), seed_77);
}

TEST(SamplerTest, SeededDrawsArePinned) {
  // mt19937_64 is bit-exact by the standard and the [0, 1) conversion and the inverse CDF are ours,
  // so these values must never change between platforms, compilers or library versions.
  Sampler sampler(SamplingParams(), 4, /*default_seed=*/5489);
  EXPECT_EQ(sampler.NextUniform(), static_cast<double>(14514284786278117030ull >> 11) * 0x1.0p-53);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 16; ++i) {
    tokens.push_back(sampler.SampleFromProbabilities(std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f}));
  }
  // Cross-checked against an independent Python implementation of mt19937_64.
  EXPECT_THAT(tokens, ElementsAre(1, 3, 3, 0, 2, 1, 0, 2, 2, 1, 2, 1, 2, 2, 3, 2));
}

// Without a top-p or min-p cut the draw walks the weights w = exp((l - max) / T) by binade,
// heaviest first, ids increasing within one (step 7): checked against that rule computed here
// (binades by std::ilogb) from the seed's first mt19937_64 output, on a row where it differs
// both from id order and from likelihood order (tokens 1 and 3 share a binade, 3 the more
// likely), for plain temperature and for top-k 3 (whose draw has no cut either).
TEST(SamplerTest, DrawWithoutACutWalksTheWeightsByBinade) {
  const std::vector<float> logits = {0.1f, 1.5f, -1.0f, 2.0f, 0.7f, 3.0f};
  constexpr float kTemperature = 1.3f;
  for (int32_t top_k : {0, 3}) {
    SamplingParams params;
    params.temperature = kTemperature;
    params.top_k = top_k;
    std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5};
    if (top_k > 0) ids = {1, 3, 5};
    // Weights and binades, the walk order sorted by (binade, id); and two other orders.
    std::vector<float> w(logits.size(), 0.0f);
    for (int32_t id : ids) w[id] = std::exp((logits[id] - 3.0f) / kTemperature);
    auto binade = [&](int32_t id) { return -std::ilogb(w[id]); };
    std::vector<int32_t> walk = ids;
    std::sort(walk.begin(), walk.end(), [&](int32_t a, int32_t b) {
      return binade(a) < binade(b) || (binade(a) == binade(b) && a < b);
    });
    std::vector<int32_t> by_likelihood = ids;
    std::sort(by_likelihood.begin(), by_likelihood.end(),
              [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    ASSERT_EQ(binade(1), binade(3));
    auto draw = [&](const std::vector<int32_t>& order, double target) {
      double cumulative = 0.0;
      for (int32_t id : order) {
        cumulative += w[id];
        if (target < cumulative) return id;
      }
      return order.back();
    };
    int differs_from_id_order = 0;
    int differs_from_likelihood_order = 0;
    for (uint64_t seed = 0; seed < 400; ++seed) {
      double total = 0.0;
      for (int32_t id : ids) total += w[id];
      std::mt19937_64 rng(seed);
      const double target = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;
      const int32_t want = draw(walk, target);
      differs_from_id_order += draw(ids, target) != want ? 1 : 0;
      differs_from_likelihood_order += draw(by_likelihood, target) != want ? 1 : 0;
      Sampler sampler(params, static_cast<int32_t>(logits.size()), seed,
                      /*report_logprobs=*/false);
      ASSERT_EQ(sampler.Sample(logits).token, want) << "top_k " << top_k << " seed " << seed;
    }
    EXPECT_GT(differs_from_id_order, 40) << top_k;
    EXPECT_GT(differs_from_likelihood_order, 40) << top_k;
  }
}

TEST(SamplerTest, EmpiricalFrequenciesMatchProcessedProbabilities) {
  SamplingParams params;
  params.temperature = 0.8f;
  params.top_k = 8;
  params.top_p = 0.95f;
  params.presence_penalty = 0.4f;
  params.seed = 12345;
  constexpr int32_t kVocab = 10;
  Sampler sampler(params, kVocab, 0);
  sampler.Accept(9);
  const std::vector<float> logits = {1.0f, 0.2f, 2.0f, 1.5f, -0.5f, 0.7f, 1.1f, 0.0f, -2.0f, 2.1f};
  const std::vector<float> probs = Processed(sampler, logits);

  constexpr int kDraws = 100000;
  std::vector<int> counts(kVocab, 0);
  for (int i = 0; i < kDraws; ++i) ++counts[sampler.Sample(logits).token];
  double chi_square = 0.0;
  int support = 0;
  for (int32_t id = 0; id < kVocab; ++id) {
    if (probs[id] == 0.0f) {
      EXPECT_EQ(counts[id], 0) << id;
      continue;
    }
    ++support;
    const double expected = kDraws * static_cast<double>(probs[id]);
    chi_square += (counts[id] - expected) * (counts[id] - expected) / expected;
    EXPECT_NEAR(counts[id] / static_cast<double>(kDraws), probs[id], 0.005) << id;
  }
  ASSERT_GE(support, 4);
  ASSERT_LE(support, 8);
  // 99.99th percentile of chi-square with 7 degrees of freedom is 29.88 (support - 1 <= 7).
  EXPECT_LT(chi_square, 29.88);
}

TEST(SamplerTest, SampleEqualsDrawingFromProcessedProbabilities) {
  SamplingParams params;
  params.temperature = 1.3f;
  params.top_k = 40;
  params.top_p = 0.9f;
  params.min_p = 0.01f;
  params.repetition_penalty = 1.2f;
  SamplingParams greedy = params;
  greedy.temperature = 0.0f;
  for (const SamplingParams& p : {params, greedy}) {
    SCOPED_TRACE(p.temperature);
    Sampler direct(p, 500, 3);
    Sampler composed(p, 500, 3);
    std::vector<float> probs;
    for (uint64_t step = 0; step < 300; ++step) {
      const std::vector<float> logits = RandomLogits(500, step, 8.0f);
      const int32_t token = direct.Sample(logits).token;
      composed.ProcessedProbabilities(logits, &probs);
      ASSERT_EQ(composed.SampleFromProbabilities(probs), token) << step;
      direct.Accept(token);
      composed.Accept(token);
    }
    EXPECT_EQ(direct.NextUniform(), composed.NextUniform());  // Same RNG consumption.
  }
}

TEST(SamplerTest, SampleFromProbabilitiesTakesUnnormalisedWeightsAndSkipsZeros) {
  Sampler sampler(SamplingParams(), 4, 5);
  const std::vector<float> weights = {0.0f, 2.0f, 0.0f, 6.0f};
  int count_3 = 0;
  constexpr int kDraws = 40000;
  for (int i = 0; i < kDraws; ++i) {
    const int32_t token = sampler.SampleFromProbabilities(weights);
    ASSERT_TRUE(token == 1 || token == 3) << token;
    count_3 += token == 3;
  }
  EXPECT_NEAR(count_3 / static_cast<double>(kDraws), 0.75, 0.01);
}

TEST(SamplerTest, ProcessedProbabilitiesSumToOne) {
  SamplingParams params;
  params.temperature = 0.9f;
  params.top_p = 0.8f;
  params.min_p = 0.05f;
  Sampler sampler(params, 2000, 1);
  for (uint64_t seed = 0; seed < 10; ++seed) {
    const std::vector<float> probs = Processed(sampler, RandomLogits(2000, seed, 10.0f));
    EXPECT_NEAR(std::accumulate(probs.begin(), probs.end(), 0.0), 1.0, 1e-6);
  }
}

// ---------------------------------------------------------------------------------------------
// Logprobs.

TEST(SamplerTest, LogprobsAreRawLogSoftmaxSortedWithTiesByLowerId) {
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f, 3.0f, 0.0f};
  SamplingParams params = Greedy();
  params.num_logprobs = 3;
  params.logit_bias = {{4, 10.0f}};  // Forces token 4; logprobs must still be the raw ones.
  params.repetition_penalty = 1.5f;
  Sampler sampler(params, 5, 1);
  sampler.AddPromptTokens(std::vector<int32_t>{2});

  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + 2 * std::exp(3.0) + std::exp(0.0));
  const Sampler::SampleResult result = sampler.Sample(logits);
  EXPECT_EQ(result.token, 4);
  EXPECT_NEAR(result.logprob, 0.0 - lse, 1e-6);
  ASSERT_EQ(result.top_logprobs.size(), 3u);
  EXPECT_EQ(result.top_logprobs[0].first, 2);
  EXPECT_EQ(result.top_logprobs[1].first, 3);
  EXPECT_EQ(result.top_logprobs[2].first, 1);
  EXPECT_NEAR(result.top_logprobs[0].second, 3.0 - lse, 1e-6);
  EXPECT_NEAR(result.top_logprobs[1].second, 3.0 - lse, 1e-6);
  EXPECT_NEAR(result.top_logprobs[2].second, 2.0 - lse, 1e-6);
}

TEST(SamplerTest, NoTopLogprobsWhenNumLogprobsIsZero) {
  Sampler sampler(Greedy(), 3, 1);
  const Sampler::SampleResult result = sampler.Sample({{0.0f, 0.0f, std::log(2.0f)}});
  EXPECT_EQ(result.token, 2);
  EXPECT_NEAR(result.logprob, std::log(0.5), 1e-6);
  EXPECT_TRUE(result.top_logprobs.empty());
}

TEST(SamplerTest, ResultForTokenReportsLogprobsOfAnyToken) {
  SamplingParams params;
  params.num_logprobs = 1;
  Sampler sampler(params, 2, 1);
  const Sampler::SampleResult result = sampler.ResultForToken({{0.0f, std::log(3.0f)}}, 0);
  EXPECT_EQ(result.token, 0);
  EXPECT_NEAR(result.logprob, std::log(0.25), 1e-6);
  ASSERT_EQ(result.top_logprobs.size(), 1u);
  EXPECT_EQ(result.top_logprobs[0].first, 1);
  EXPECT_NEAR(result.top_logprobs[0].second, std::log(0.75), 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Validation.

// A sampler made without logprobs draws the same tokens with the same RNG draws as one with
// them, greedy or not, penalties or not; it only leaves the logprob out (NaN, no top list).
TEST(SamplerTest, WithoutLogprobsTheTokensAndDrawsAreTheSame) {
  SamplingParams greedy_penalised = Greedy();
  greedy_penalised.repetition_penalty = 1.3f;
  SamplingParams nucleus;
  nucleus.temperature = 0.8f;
  nucleus.top_p = 0.9f;
  nucleus.frequency_penalty = 0.2f;
  for (const SamplingParams& params : {Greedy(), greedy_penalised, nucleus}) {
    Sampler with(params, 5000, /*default_seed=*/11);
    Sampler without(params, 5000, /*default_seed=*/11, /*report_logprobs=*/false);
    for (int step = 0; step < 40; ++step) {
      const std::vector<float> logits = RandomLogits(5000, 100 + step, 12.0f);
      const Sampler::SampleResult a = with.Sample(logits);
      const Sampler::SampleResult b = without.Sample(logits);
      ASSERT_EQ(a.token, b.token) << "step " << step;
      EXPECT_TRUE(std::isfinite(a.logprob));
      EXPECT_TRUE(std::isnan(b.logprob));
      EXPECT_TRUE(b.top_logprobs.empty());
      with.Accept(a.token);
      without.Accept(b.token);
    }
    EXPECT_EQ(with.NextUniform(), without.NextUniform());  // as many draws taken
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling from a row's most likely tokens alone (what the device hands over).

// The row's `count` most likely tokens by the top-k order (value descending, id ascending; NaN
// and -inf never), as (ids ascending, raw logits): an independent full sort.
std::pair<std::vector<int32_t>, std::vector<float>> MostLikely(const std::vector<float>& row,
                                                               size_t count) {
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < static_cast<int32_t>(row.size()); ++i) {
    if (!std::isnan(row[i]) && row[i] != -kInf) ids.push_back(i);
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  ids.resize(std::min(ids.size(), count));
  std::sort(ids.begin(), ids.end());
  std::vector<float> values;
  for (int32_t id : ids) values.push_back(row[id]);
  return {ids, values};
}

TEST(SamplerTest, CandidatesNeededOnlyWhenTheTopTokensDecide) {
  constexpr int32_t kVocab = 1000;
  SamplingParams top_k;
  top_k.top_k = 40;
  top_k.top_p = 0.9f;
  top_k.min_p = 0.05f;
  EXPECT_EQ(Sampler::CandidatesNeeded(Greedy(), false, kVocab), 1);
  EXPECT_EQ(Sampler::CandidatesNeeded(top_k, false, kVocab), 40);
  // Logprobs: the top num_logprobs too (the rest of the row through its normalizer).
  EXPECT_EQ(Sampler::CandidatesNeeded(top_k, /*report_logprobs=*/true, kVocab), 40);
  EXPECT_EQ(Sampler::CandidatesNeeded(Greedy(), /*report_logprobs=*/true, kVocab), 1);
  SamplingParams greedy_top = Greedy();
  greedy_top.num_logprobs = 20;
  EXPECT_EQ(Sampler::CandidatesNeeded(greedy_top, /*report_logprobs=*/true, kVocab), 20);
  SamplingParams top_k_top = top_k;
  top_k_top.num_logprobs = 20;
  EXPECT_EQ(Sampler::CandidatesNeeded(top_k_top, /*report_logprobs=*/true, kVocab), 40);
  top_k_top.num_logprobs = 50;
  EXPECT_EQ(Sampler::CandidatesNeeded(top_k_top, /*report_logprobs=*/true, kVocab), 50);
  SamplingParams no_top_k = top_k;
  no_top_k.top_k = 0;
  EXPECT_EQ(Sampler::CandidatesNeeded(no_top_k, false, kVocab), 0);
  EXPECT_EQ(Sampler::CandidatesNeeded(no_top_k, /*report_logprobs=*/true, kVocab), 0);
  SamplingParams whole_vocab = top_k;
  whole_vocab.top_k = kVocab;
  EXPECT_EQ(Sampler::CandidatesNeeded(whole_vocab, false, kVocab), 0);
  SamplingParams biased = top_k;
  biased.logit_bias = {{3, 2.0f}};
  EXPECT_EQ(Sampler::CandidatesNeeded(biased, false, kVocab), 0);
  for (int which = 0; which < 3; ++which) {
    SamplingParams penalised = top_k;
    (which == 0   ? penalised.repetition_penalty
     : which == 1 ? penalised.presence_penalty
                  : penalised.frequency_penalty) = 1.5f;
    EXPECT_EQ(Sampler::CandidatesNeeded(penalised, false, kVocab), 0) << which;
  }
}

// SampleFromCandidates given the row's most likely tokens (exactly the needed count, or more)
// draws what Sample() draws from the whole row, with as many RNG draws: over temperatures,
// top-k, top-p and min-p, on rows with ties, NaN, -inf, fewer tokens above -inf than top_k
// or than the logprobs asked for, and none at all. With logprobs (and the row's normalizer)
// the result is Sample()'s whole: the token's logprob and the top logprobs, ids and values.
TEST(SamplerTest, SampleFromCandidatesEqualsSampleOnTheWholeRow) {
  constexpr int32_t kVocab = 3000;
  std::vector<SamplingParams> grid = {Greedy()};
  for (int32_t k : {1, 7, 40, 2999}) {
    for (float temperature : {0.4f, 1.0f, 1.8f}) {
      for (float top_p : {1.0f, 0.9f, 0.3f}) {
        for (float min_p : {0.0f, 0.1f}) {
          SamplingParams params;
          params.top_k = k;
          params.temperature = temperature;
          params.top_p = top_p;
          params.min_p = min_p;
          grid.push_back(params);
        }
      }
    }
  }
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  int differing_from_argmax = 0;
  int top_logprobs_checked = 0;
  for (size_t g = 0; g < grid.size(); ++g) {
    // -1: no logprobs; else the number of top logprobs (0: the token's alone).
    for (int32_t num_logprobs : {-1, 0, 5, 20}) {
      SamplingParams params = grid[g];
      const bool logprobs = num_logprobs >= 0;
      params.num_logprobs = std::max(num_logprobs, 0);
      const int32_t needed = Sampler::CandidatesNeeded(params, logprobs, kVocab);
      ASSERT_GT(needed, 0);
      for (int32_t extra : {0, 13}) {
        Sampler whole(params, kVocab, /*default_seed=*/g, logprobs);
        Sampler top(params, kVocab, /*default_seed=*/g, logprobs);
        for (int step = 0; step < 24; ++step) {
          std::vector<float> row(kVocab);
          for (float& x : row) x = normal(rng);
          if (step % 4 == 1) {
            for (float& x : row) x = std::round(x);  // ties everywhere, also at the k-th value
          } else if (step % 4 == 2) {
            for (int32_t i = 0; i < kVocab; i += 3) row[i] = -kInf;
            for (int32_t i = 1; i < kVocab; i += 5) row[i] = std::nanf("");
          } else if (step == 3) {
            for (float& x : row) x = -kInf;  // only 3 tokens above -inf
            row[17] = 1.0f;
            row[2000] = 1.0f;
            row[2500] = 0.5f;
          } else if (step == 7) {
            for (float& x : row) x = -kInf;  // nothing above -inf
          }
          const auto [ids, values] = MostLikely(row, static_cast<size_t>(needed + extra));
          const Sampler::SampleResult want_result = whole.Sample(row);
          const int32_t want = want_result.token;
          // The normalizer only when logprobs are reported (otherwise it is not needed).
          const Sampler::RowNormalizer normalizer = Sampler::NormalizerOf(row);
          const Sampler::SampleResult got =
              top.SampleFromCandidates(ids, values, logprobs ? &normalizer : nullptr);
          const std::string what = "params " + std::to_string(g) + " logprobs " +
                                   std::to_string(num_logprobs) + " extra " +
                                   std::to_string(extra) + " step " + std::to_string(step);
          ASSERT_EQ(got.token, want) << what;
          if (logprobs) {
            EXPECT_EQ(got.logprob, want_result.logprob) << what;
            ASSERT_EQ(got.top_logprobs, want_result.top_logprobs) << what;
            top_logprobs_checked += static_cast<int>(got.top_logprobs.size());
          } else {
            EXPECT_TRUE(std::isnan(got.logprob));
          }
          if (!ids.empty() &&
              want != ids[std::max_element(values.begin(), values.end()) - values.begin()]) {
            ++differing_from_argmax;
          }
        }
        EXPECT_EQ(whole.NextUniform(), top.NextUniform()) << "params " << g;  // as many draws
      }
    }
  }
  EXPECT_GT(differing_from_argmax, 100);  // the grid samples, not just takes the argmax
  EXPECT_GT(top_logprobs_checked, 10000);
}

// The id-order sum of the temperature weights over the whole row, as the sampler computes it.
double WeightSum(const std::vector<float>& row, float temperature) {
  float max = -kInf;
  for (float x : row) max = x > max ? x : max;
  double sum = 0.0;
  for (float x : row) {
    if (max == kInf) {
      sum += x == kInf ? 1.0 : 0.0;
    } else if (max != -kInf && x > -kInf) {
      sum += std::exp((x - max) / temperature);
    }
  }
  return sum;
}

TEST(SamplerTest, SamplesNucleusForSamplingWithoutTopK) {
  constexpr int32_t kVocab = 1000;
  SamplingParams top_p;
  top_p.temperature = 0.7f;
  top_p.top_p = 0.9f;
  EXPECT_TRUE(Sampler::SamplesNucleus(top_p, kVocab));
  SamplingParams min_p = top_p;
  min_p.top_p = 1.0f;
  min_p.min_p = 0.1f;
  EXPECT_TRUE(Sampler::SamplesNucleus(min_p, kVocab));
  SamplingParams plain = min_p;
  plain.min_p = 0.0f;
  EXPECT_TRUE(Sampler::SamplesNucleus(plain, kVocab));  // the nucleus is the row
  SamplingParams with_top_k = top_p;
  with_top_k.top_k = 40;
  EXPECT_FALSE(Sampler::SamplesNucleus(with_top_k, kVocab));  // CandidatesNeeded's
  with_top_k.top_k = kVocab;                                  // top-k off
  EXPECT_TRUE(Sampler::SamplesNucleus(with_top_k, kVocab));
  EXPECT_FALSE(Sampler::SamplesNucleus(Greedy(), kVocab));
  SamplingParams biased = top_p;
  biased.logit_bias = {{3, 1.0f}};
  EXPECT_FALSE(Sampler::SamplesNucleus(biased, kVocab));
  SamplingParams penalised = top_p;
  penalised.frequency_penalty = 0.5f;
  EXPECT_FALSE(Sampler::SamplesNucleus(penalised, kVocab));
}

// TrySampleNucleus, given a row's most likely tokens and its weight sum (exact, or off by up to
// 0.9 of the tolerance), either draws exactly what Sample() draws from the whole row with one
// RNG draw, or declines without drawing (and the whole row then draws the same): over
// temperatures, top-p and min-p (and neither: plain temperature), candidate counts, rows with
// ties, NaN, -inf, +inf, fewer tokens than asked for, and rows whose threshold falls exactly on
// a prefix (must decline).
TEST(SamplerTest, TrySampleNucleusDrawsAsTheWholeRowOrDeclines) {
  constexpr int32_t kVocab = 3000;
  std::vector<SamplingParams> grid;
  for (float temperature : {0.4f, 1.0f, 1.8f}) {
    for (const auto& [top_p, min_p] : {std::pair<float, float>{0.9f, 0.0f},
                                       {0.5f, 0.0f},
                                       {0.95f, 0.05f},
                                       {1.0f, 0.05f},
                                       {1.0f, 0.3f},
                                       {1.0f, 0.0f}}) {
      SamplingParams params;
      params.temperature = temperature;
      params.top_p = top_p;
      params.min_p = min_p;
      grid.push_back(params);
    }
  }
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  int decided = 0;
  int declined = 0;
  int declined_on_exact_threshold = 0;
  for (size_t g = 0; g < grid.size(); ++g) {
    const SamplingParams& params = grid[g];
    ASSERT_TRUE(Sampler::SamplesNucleus(params, kVocab));
    for (int32_t requested : {16, 256}) {
      Sampler whole(params, kVocab, /*default_seed=*/g, /*report_logprobs=*/false);
      Sampler top(params, kVocab, /*default_seed=*/g, /*report_logprobs=*/false);
      for (int step = 0; step < 40; ++step) {
        std::vector<float> row(kVocab);
        for (float& x : row) x = normal(rng);
        const int kind = step % 8;
        if (kind == 1) {
          for (float& x : row) x = std::round(x);  // ties everywhere
        } else if (kind == 2) {
          for (int32_t i = 0; i < kVocab; i += 3) row[i] = -kInf;
          for (int32_t i = 1; i < kVocab; i += 5) row[i] = std::nanf("");
        } else if (kind == 3) {
          for (float& x : row) x = -kInf;  // only 3 tokens above -inf: complete
          row[17] = 1.0f;
          row[2000] = 1.0f;
          row[2500] = 0.5f;
        } else if (kind == 4) {
          // Ten tokens of weight 1 and the rest ~0: top-p 0.5 (or 0.9) ends exactly on a prefix
          // (5 of 10), where a sum off in the last bits could end it one token later.
          for (float& x : row) x = -100.0f;
          for (int32_t i = 0; i < 10; ++i) row[100 + 37 * i] = 0.0f;
        } else if (kind == 5) {
          for (float& x : row) x *= 4.0f;  // peaked: small nuclei
        } else if (kind == 6 && step == 6) {
          row[5] = kInf;  // +inf: a one-hot
          row[9] = kInf;
        } else if (kind == 7 && step == 7) {
          for (float& x : row) x = -kInf;  // nothing above -inf
        }
        const auto [ids, values] = MostLikely(row, static_cast<size_t>(requested));
        double sum = WeightSum(row, params.temperature);
        sum *= 1.0 + 0.9 * Sampler::kNucleusSumTolerance *
                         std::uniform_real_distribution<double>(-1.0, 1.0)(rng);
        const int32_t want = whole.Sample(row).token;
        const std::optional<Sampler::SampleResult> got =
            top.TrySampleNucleus(ids, values, requested, sum, nullptr);
        const std::string what = "params " + std::to_string(g) + " requested " +
                                 std::to_string(requested) + " step " + std::to_string(step);
        // top_p 0.5 and 0.9 (0.9f * 10 is just below 9) end exactly on a prefix of the
        // threshold rows; 0.95 does not.
        const bool on_threshold = kind == 4 && (params.top_p == 0.5f || params.top_p == 0.9f);
        if (got.has_value()) {
          ++decided;
          ASSERT_EQ(got->token, want) << what;
          EXPECT_TRUE(std::isnan(got->logprob));
          EXPECT_FALSE(on_threshold) << what << ": decided on a threshold-exact row";
        } else {
          ++declined;
          declined_on_exact_threshold += on_threshold ? 1 : 0;
          ASSERT_EQ(top.Sample(row).token, want) << what << " (fallback)";
        }
      }
      EXPECT_EQ(whole.NextUniform(), top.NextUniform()) << "params " << g;  // as many draws
    }
  }
  EXPECT_GT(decided, 700);
  EXPECT_GT(declined, 50);
  EXPECT_GT(declined_on_exact_threshold, 10);
}

// A nucleus row may report logprobs: given the row's weight sum at its temperature and its
// normalizer at temperature 1 (the host rule's), TrySampleNucleus returns Sample()'s token,
// logprob and top logprobs bitwise, or declines without drawing; plain, top-p and min-p
// rows at temperatures 1 (where the two sums are one) and 0.7, 0, 5 and 20 top logprobs.
TEST(SamplerTest, TrySampleNucleusWithLogprobs) {
  constexpr int32_t kVocab = 3000;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  int decided = 0;
  for (const float temperature : {1.0f, 0.7f}) {
    for (const auto& [top_p, min_p] :
         {std::pair<float, float>{1.0f, 0.0f}, {0.9f, 0.0f}, {1.0f, 0.05f}}) {
      for (int32_t num_logprobs : {0, 5, 20}) {
        SamplingParams params;
        params.temperature = temperature;
        params.top_p = top_p;
        params.min_p = min_p;
        params.num_logprobs = num_logprobs;
        ASSERT_TRUE(Sampler::SamplesNucleus(params, kVocab));
        Sampler whole(params, kVocab, /*default_seed=*/num_logprobs, /*report_logprobs=*/true);
        Sampler top(params, kVocab, /*default_seed=*/num_logprobs, /*report_logprobs=*/true);
        for (int step = 0; step < 30; ++step) {
          std::vector<float> row(kVocab);
          for (float& x : row) x = normal(rng) * (step % 2 == 0 ? 4.0f : 1.0f);
          const auto [ids, values] = MostLikely(row, 64);
          const Sampler::RowNormalizer normalizer = Sampler::NormalizerOf(row);
          const Sampler::SampleResult want = whole.Sample(row);
          const std::optional<Sampler::SampleResult> got =
              top.TrySampleNucleus(ids, values, 64, WeightSum(row, temperature), &normalizer);
          const std::string what =
              "T " + std::to_string(temperature) + " step " + std::to_string(step);
          if (!got.has_value()) {
            ASSERT_EQ(top.Sample(row).token, want.token) << what;
            continue;
          }
          ++decided;
          ASSERT_EQ(got->token, want.token) << what;
          EXPECT_EQ(got->logprob, want.logprob) << what;
          EXPECT_EQ(got->top_logprobs, want.top_logprobs) << what;
          EXPECT_EQ(got->top_logprobs.size(), static_cast<size_t>(num_logprobs));
        }
        EXPECT_EQ(whole.NextUniform(), top.NextUniform());
      }
    }
  }
  EXPECT_GT(decided, 200);
}

// A plain-temperature draw whose target lies on the step between two candidates (within the
// weight sum's tolerance of it) is not decided by them; the whole row then decides. The
// weights are built from the seed's uniform u so that the target u * (sum of weights) ends a
// step: at a binade's end (1 and a, a = 1/u - 1 < 1 in a lighter binade: u * (1 + a) = 1) and
// inside a binade (1, then 0.75 and y both in [0.5, 1), 0.75 first by id:
// u * (1.75 + y) = 1.75). Moved off the step, the same draws are decided. (A candidate of
// weight 0 tells that every token of positive weight is a candidate.)
TEST(SamplerTest, TrySampleNucleusDeclinesAPlainDrawOnAStep) {
  constexpr int32_t kVocab = 50;
  SamplingParams params;  // temperature 1, no cut
  ASSERT_TRUE(Sampler::SamplesNucleus(params, kVocab));
  // Weights by token id for uniform u, or an empty map when u cannot put a step there.
  const std::vector<std::function<std::vector<std::pair<int32_t, double>>(double)>> cases = {
      [](double u) -> std::vector<std::pair<int32_t, double>> {
        if (u < 0.6) return {};
        return {{30, 1.0}, {7, 1.0 / u - 1.0}};
      },
      [](double u) -> std::vector<std::pair<int32_t, double>> {
        const double y = 1.75 / u - 1.75;
        if (y < 0.52 || y > 0.98) return {};
        return {{30, 1.0}, {5, 0.75}, {9, y}};
      }};
  for (size_t c = 0; c < cases.size(); ++c) {
    int on_step = 0;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      std::mt19937_64 rng(seed);
      const std::vector<std::pair<int32_t, double>> weights =
          cases[c](static_cast<double>(rng() >> 11) * 0x1.0p-53);
      if (weights.empty()) continue;
      ++on_step;
      for (const float shift : {0.0f, 0.01f}) {   // on the step, then off it
        std::vector<float> row(kVocab, -200.0f);  // weights e^-200: 0, but candidates
        for (const auto& [id, w] : weights) row[id] = static_cast<float>(std::log(w));
        row[weights.back().first] += shift;
        const int32_t requested = static_cast<int32_t>(weights.size()) + 1;
        const auto [ids, values] = MostLikely(row, static_cast<size_t>(requested));
        Sampler whole(params, kVocab, seed, /*report_logprobs=*/false);
        Sampler top(params, kVocab, seed, /*report_logprobs=*/false);
        const int32_t want = whole.Sample(row).token;
        const std::optional<Sampler::SampleResult> got =
            top.TrySampleNucleus(ids, values, requested, WeightSum(row, 1.0f), nullptr);
        const std::string what = "case " + std::to_string(c) + " seed " + std::to_string(seed);
        if (shift == 0.0f) {
          EXPECT_FALSE(got.has_value()) << what;
          EXPECT_EQ(top.Sample(row).token, want) << what;  // not drawn by the declined call
        } else {
          ASSERT_TRUE(got.has_value()) << what;
          EXPECT_EQ(got->token, want) << what;
        }
      }
    }
    EXPECT_GT(on_step, 10) << c;
  }
}

TEST(SamplerTest, SamplesAdjustedTopKForGreedyAndTopKWithBiasOrPenalties) {
  constexpr int32_t kVocab = 1000;
  SamplingParams greedy_penalised = Greedy();
  greedy_penalised.repetition_penalty = 1.2f;
  SamplingParams top_k_biased;
  top_k_biased.top_k = 40;
  top_k_biased.logit_bias = {{3, 2.0f}};
  top_k_biased.num_logprobs = 50;
  SamplingParams top_p_penalised;
  top_p_penalised.top_p = 0.9f;
  top_p_penalised.presence_penalty = 0.5f;
  EXPECT_TRUE(Sampler::SamplesAdjustedTopK(greedy_penalised, kVocab));
  EXPECT_TRUE(Sampler::SamplesAdjustedTopK(top_k_biased, kVocab));
  EXPECT_FALSE(Sampler::SamplesAdjustedTopK(top_p_penalised, kVocab));  // no top k
  EXPECT_FALSE(Sampler::SamplesAdjustedTopK(Greedy(), kVocab));         // nothing adjusted
  EXPECT_EQ(Sampler::AdjustedCandidatesNeeded(greedy_penalised, false, kVocab), 1);
  EXPECT_EQ(Sampler::AdjustedCandidatesNeeded(top_k_biased, false, kVocab), 40);
  EXPECT_EQ(Sampler::AdjustedCandidatesNeeded(top_k_biased, true, kVocab), 50);
  EXPECT_EQ(Sampler::AdjustedCandidatesNeeded(top_p_penalised, false, kVocab), 0);
  // Those rows are not CandidatesNeeded's (those decide always).
  EXPECT_EQ(Sampler::CandidatesNeeded(greedy_penalised, false, kVocab), 0);
  EXPECT_EQ(Sampler::CandidatesNeeded(top_k_biased, true, kVocab), 0);
}

// A greedy or top-k row with a logit bias or penalties, given its most likely raw entries:
// TrySampleAdjusted returns Sample()'s token and logprobs bitwise (given the row's
// normalizer by NormalizerOf), with as many RNG draws, or declines without drawing; the
// histories (prompt and generated tokens) grow as the samples are accepted. Rows are random,
// with ties, NaN and -inf, fewer tokens above -inf than asked for, and large biases on tokens
// far down the row that make them win. A declined row whose AdjustedSuspects are not empty is
// always decided with their raw logits gathered.
TEST(SamplerTest, TrySampleAdjustedSamplesAsTheWholeRowOrDeclines) {
  constexpr int32_t kVocab = 2000;
  std::vector<SamplingParams> grid;
  auto add = [&](float temperature, int32_t top_k, float repetition, float frequency,
                 float presence, std::vector<std::pair<int32_t, float>> bias) {
    SamplingParams params;
    params.temperature = temperature;
    params.top_k = top_k;
    params.repetition_penalty = repetition;
    params.frequency_penalty = frequency;
    params.presence_penalty = presence;
    params.logit_bias = std::move(bias);
    grid.push_back(params);
  };
  const float kBan = -kInf;
  // Greedy: repetition; a bias (+30 on a token far down the rows, a ban); encouraging repetition.
  add(0.0f, 0, 1.3f, 0.0f, 0.0f, {});
  add(0.0f, 0, 1.0f, 0.0f, 0.0f, {{11, 30.0f}, {1500, 4.0f}, {7, kBan}});
  add(0.0f, 0, 1.0f, -1.5f, 0.0f, {});
  // Top-k: OpenAI's penalties; repetition below 1 (boosting); everything at once.
  add(0.8f, 5, 1.0f, 0.7f, 0.5f, {});
  add(1.0f, 40, 0.8f, 0.0f, 0.0f, {});
  add(1.3f, 20, 1.2f, 0.3f, -0.4f, {{100, 3.0f}, {1999, 60.0f}, {0, -5.0f}, {42, kBan}});
  SamplingParams with_logprobs = grid[0];
  with_logprobs.num_logprobs = 5;
  grid.push_back(with_logprobs);
  with_logprobs = grid[5];
  with_logprobs.num_logprobs = 3;
  grid.push_back(with_logprobs);

  std::mt19937_64 rng(23);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> any_token(0, kVocab - 1);
  int decided = 0;
  int declined = 0;
  int gathered_decided = 0;
  for (size_t g = 0; g < grid.size(); ++g) {
    const SamplingParams& params = grid[g];
    ASSERT_TRUE(Sampler::SamplesAdjustedTopK(params, kVocab));
    const int32_t needed = Sampler::AdjustedCandidatesNeeded(params, true, kVocab);
    for (int32_t requested : {needed, needed + 8, 256}) {
      const bool logprobs = params.num_logprobs > 0;
      Sampler whole(params, kVocab, /*default_seed=*/g, logprobs);
      Sampler top(params, kVocab, /*default_seed=*/g, logprobs);
      std::vector<int32_t> prompt(300);
      for (int32_t& t : prompt) t = any_token(rng);
      whole.AddPromptTokens(prompt);
      top.AddPromptTokens(prompt);
      for (int step = 0; step < 40; ++step) {
        std::vector<float> row(kVocab);
        for (float& x : row) x = normal(rng);
        const int kind = step % 6;
        if (kind == 1) {
          for (float& x : row) x = std::round(x);  // ties everywhere
        } else if (kind == 2) {
          for (int32_t i = 0; i < kVocab; i += 3) row[i] = -kInf;
          for (int32_t i = 1; i < kVocab; i += 5) row[i] = std::nanf("");
        } else if (kind == 3) {
          for (float& x : row) x = -kInf;  // fewer tokens above -inf than asked for
          row[11] = -2.0f;
          row[prompt[0]] = 1.0f;
          row[1999] = 0.5f;
          row[1500] = 2.0f;
        } else if (kind == 4) {
          for (float& x : row) x *= 4.0f;  // peaked
          row[prompt[1]] = 40.0f;          // a repeated token on top
        } else if (kind == 5) {
          row[11] = -8.0f;  // biased tokens far down the row
          row[1999] = -9.0f;
          row[1500] = -7.0f;
        }
        const auto [ids, values] = MostLikely(row, static_cast<size_t>(requested));
        const Sampler::RowNormalizer normalizer = Sampler::NormalizerOf(row);
        const Sampler::SampleResult want = whole.Sample(row);
        std::optional<Sampler::SampleResult> got =
            top.TrySampleAdjusted(ids, values, requested, &normalizer);
        const std::string what = "params " + std::to_string(g) + " requested " +
                                 std::to_string(requested) + " step " + std::to_string(step);
        if (!got.has_value()) {
          const std::vector<int32_t> suspects = top.AdjustedSuspects(ids, values, requested);
          if (!suspects.empty()) {
            ASSERT_TRUE(std::is_sorted(suspects.begin(), suspects.end())) << what;
            std::vector<float> gathered;
            for (int32_t t : suspects) {
              ASSERT_FALSE(std::binary_search(ids.begin(), ids.end(), t)) << what;
              gathered.push_back(row[t]);
            }
            got = top.TrySampleAdjusted(ids, values, requested, &normalizer, suspects, gathered);
            ASSERT_TRUE(got.has_value()) << what << ": not decided with the suspects' logits";
            ++gathered_decided;
          }
        }
        if (got.has_value()) {
          ++decided;
          ASSERT_EQ(got->token, want.token) << what;
          if (logprobs) {
            EXPECT_EQ(got->logprob, want.logprob) << what;
            EXPECT_EQ(got->top_logprobs, want.top_logprobs) << what;
          } else {
            EXPECT_TRUE(std::isnan(got->logprob)) << what;
          }
        } else {
          ++declined;
          ASSERT_EQ(top.Sample(row).token, want.token) << what << " (fallback)";
        }
        whole.Accept(want.token);
        top.Accept(want.token);
      }
      EXPECT_EQ(whole.NextUniform(), top.NextUniform()) << "params " << g;  // as many draws
    }
  }
  // Rows whose large biases (+30, +60) make a token far down the row win are decided by that
  // token's gathered logit; the rest declined asked for only k candidates (the k-th may tie
  // an untouched token) or boost the prompt's tokens (repetition 0.8).
  EXPECT_GT(decided, 600);
  EXPECT_GT(gathered_decided, 180);
  EXPECT_GT(declined, 200);
}

// The two ways a token outside the candidates can win: a positive bias (greedy here), or a
// repetition penalty below 1 lifting a prompt token. Either makes TrySampleAdjusted decline
// (no draw); the same rows decide once that token's raw logit is among the candidates, or
// when the candidates are every token above -inf.
TEST(SamplerTest, TrySampleAdjustedDeclinesWhenATokenOutsideCouldWin) {
  constexpr int32_t kVocab = 100;
  std::vector<float> row(kVocab, -1.0f);
  row[20] = 5.0f;
  row[30] = 4.0f;
  row[40] = 3.0f;
  row[50] = 1.0f;
  row[90] = 0.0f;  // fifth by the top-k order
  SamplingParams biased = Greedy();
  biased.logit_bias = {{90, 5.5f}};  // 0 + 5.5 beats 5
  Sampler whole(biased, kVocab, 1, /*report_logprobs=*/false);
  Sampler top(biased, kVocab, 1, /*report_logprobs=*/false);
  ASSERT_EQ(whole.Sample(row).token, 90);
  auto [ids, values] = MostLikely(row, 4);  // 20, 30, 40, 50: token 90 may reach 1 + 5.5
  EXPECT_FALSE(top.TrySampleAdjusted(ids, values, 4, nullptr).has_value());
  // The suspect is token 90; with its raw logit the 4 candidates decide.
  EXPECT_EQ(top.AdjustedSuspects(ids, values, 4), std::vector<int32_t>{90});
  const std::vector<int32_t> suspects = {90};
  const std::vector<float> gathered = {0.0f};
  const std::optional<Sampler::SampleResult> got_gathered =
      top.TrySampleAdjusted(ids, values, 4, nullptr, suspects, gathered);
  ASSERT_TRUE(got_gathered.has_value());
  EXPECT_EQ(got_gathered->token, 90);
  EXPECT_EQ(whole.NextUniform(), top.NextUniform());  // one draw each
  // A NaN there is -inf: token 20 wins, as from the whole row.
  const std::vector<float> nan = {std::nanf("")};
  const std::optional<Sampler::SampleResult> got_nan =
      top.TrySampleAdjusted(ids, values, 4, nullptr, suspects, nan);
  ASSERT_TRUE(got_nan.has_value());
  std::vector<float> row_nan = row;
  row_nan[90] = std::nanf("");
  EXPECT_EQ(whole.Sample(row_nan).token, 20);
  EXPECT_EQ(got_nan->token, 20);
  std::tie(ids, values) = MostLikely(row, 5);
  const std::optional<Sampler::SampleResult> got = top.TrySampleAdjusted(ids, values, 5, nullptr);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->token, 90);
  EXPECT_TRUE(top.AdjustedSuspects(ids, values, 5).empty());  // none outside could win

  // A bias too small to win lets 4 candidates decide: 90 may reach 1 + 3.5 < 5.
  SamplingParams small_bias = Greedy();
  small_bias.logit_bias = {{90, 3.5f}};
  Sampler small(small_bias, kVocab, 1, false);
  std::tie(ids, values) = MostLikely(row, 4);
  const std::optional<Sampler::SampleResult> small_got =
      small.TrySampleAdjusted(ids, values, 4, nullptr);
  ASSERT_TRUE(small_got.has_value());
  EXPECT_EQ(small_got->token, 20);

  // Repetition 0.5 divides the prompt's positive logits by 0.5: prompt token 90 at 3, outside
  // the 3 candidates (40 is 3 too, with the lower id), may reach 6 > 5, and does.
  SamplingParams boosting = Greedy();
  boosting.repetition_penalty = 0.5f;
  row[90] = 3.0f;
  Sampler boosted(boosting, kVocab, 1, false);
  Sampler boosted_whole(boosting, kVocab, 1, false);
  const std::vector<int32_t> prompt = {90};
  boosted.AddPromptTokens(prompt);
  boosted_whole.AddPromptTokens(prompt);
  ASSERT_EQ(boosted_whole.Sample(row).token, 90);
  std::tie(ids, values) = MostLikely(row, 3);  // 20, 30, 40
  EXPECT_FALSE(boosted.TrySampleAdjusted(ids, values, 3, nullptr).has_value());
  // Every prompt token could: too many to gather.
  EXPECT_TRUE(boosted.AdjustedSuspects(ids, values, 3).empty());
  // Every token above -inf given (fewer than asked for): decided.
  std::fill(row.begin(), row.end(), -kInf);
  row[20] = 5.0f;
  row[90] = 3.0f;
  std::tie(ids, values) = MostLikely(row, 3);
  const std::optional<Sampler::SampleResult> all =
      boosted.TrySampleAdjusted(ids, values, 3, nullptr);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->token, 90);
}

// A nucleus row (top-p, min-p or plain temperature) with a logit bias or penalties, given
// its 256 most likely raw entries, its raw row maximum and weight sum (perturbed within the
// sum's tolerance) and the raw logits of AdjustedNucleusGathers: TrySampleAdjustedNucleus
// returns Sample()'s token and logprobs bitwise (given NormalizerOf's normalizer) with as many
// RNG draws, or declines without drawing. Flat and peaked rows, NaN and -inf, fewer tokens
// above -inf than asked for, a ban and a +30 bias, histories growing as samples are
// accepted.
TEST(SamplerTest, TrySampleAdjustedNucleusSamplesAsTheWholeRowOrDeclines) {
  constexpr int32_t kVocab = 3000;
  constexpr int32_t kRequested = 256;
  std::vector<SamplingParams> grid;
  for (const float temperature : {0.7f, 1.0f, 1.3f}) {
    for (const auto& [top_p, min_p] :
         {std::pair<float, float>{0.9f, 0.0f}, {1.0f, 0.05f}, {1.0f, 0.0f}}) {
      for (int adjustment = 0; adjustment < 4; ++adjustment) {
        SamplingParams params;
        params.temperature = temperature;
        params.top_p = top_p;
        params.min_p = min_p;
        switch (adjustment) {
          case 0:
            params.repetition_penalty = 1.2f;
            break;
          case 1:
            params.frequency_penalty = 0.5f;
            params.presence_penalty = 0.3f;
            break;
          case 2:
            params.logit_bias = {{11, 5.0f}, {7, -kInf}, {50, -3.0f}};
            break;
          default:
            params.logit_bias = {{2999, 30.0f}};
            params.frequency_penalty = -0.5f;
            params.num_logprobs = 3;
            break;
        }
        grid.push_back(params);
      }
    }
  }
  std::mt19937_64 rng(31);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> any_token(0, kVocab - 1);
  int decided = 0;
  int declined = 0;
  for (size_t g = 0; g < grid.size(); ++g) {
    const SamplingParams& params = grid[g];
    ASSERT_TRUE(Sampler::SamplesAdjustedNucleus(params, kVocab));
    ASSERT_FALSE(Sampler::SamplesNucleus(params, kVocab));
    const bool logprobs = params.num_logprobs > 0;
    Sampler whole(params, kVocab, /*default_seed=*/g, logprobs);
    Sampler top(params, kVocab, /*default_seed=*/g, logprobs);
    std::vector<int32_t> prompt(200);
    for (int32_t& t : prompt) t = any_token(rng);
    whole.AddPromptTokens(prompt);
    top.AddPromptTokens(prompt);
    for (int step = 0; step < 24; ++step) {
      std::vector<float> row(kVocab);
      for (float& x : row) x = normal(rng) * (step % 2 == 0 ? 4.0f : 1.0f);
      const int kind = step % 6;
      if (kind == 1) {
        for (int32_t i = 0; i < kVocab; i += 3) row[i] = -kInf;
        for (int32_t i = 1; i < kVocab; i += 5) row[i] = std::nanf("");
      } else if (kind == 3) {
        for (float& x : row) x = -kInf;  // fewer tokens above -inf than asked for
        row[11] = 2.0f;
        row[prompt[0]] = 1.0f;
        row[2999] = -1.0f;
      } else if (kind == 4) {
        row[prompt[1]] = 40.0f;  // a repeated token far on top
      }
      const auto [ids, values] = MostLikely(row, kRequested);
      const std::vector<int32_t> gathers = top.AdjustedNucleusGathers(ids, kRequested);
      std::vector<float> gathered;
      for (int32_t t : gathers) gathered.push_back(row[t]);
      float row_max = -kInf;
      for (float x : row) row_max = x > row_max ? x : row_max;
      double sum = WeightSum(row, params.temperature);
      sum *= 1.0 + 0.9 * Sampler::kNucleusSumTolerance *
                       std::uniform_real_distribution<double>(-1.0, 1.0)(rng);
      const Sampler::RowNormalizer normalizer = Sampler::NormalizerOf(row);
      const Sampler::SampleResult want = whole.Sample(row);
      const std::string what = "params " + std::to_string(g) + " step " + std::to_string(step);
      if (!gathers.empty()) {
        // Without one of the gathered logits nothing is decided (and nothing drawn).
        EXPECT_FALSE(top.TrySampleAdjustedNucleus(ids, values, kRequested, row_max, sum,
                                                  &normalizer,
                                                  std::span<const int32_t>(gathers).subspan(1),
                                                  std::span<const float>(gathered).subspan(1))
                         .has_value())
            << what;
      }
      const std::optional<Sampler::SampleResult> got = top.TrySampleAdjustedNucleus(
          ids, values, kRequested, row_max, sum, &normalizer, gathers, gathered);
      if (got.has_value()) {
        ++decided;
        ASSERT_EQ(got->token, want.token) << what;
        if (logprobs) {
          EXPECT_EQ(got->logprob, want.logprob) << what;
          EXPECT_EQ(got->top_logprobs, want.top_logprobs) << what;
        }
      } else {
        ++declined;
        ASSERT_EQ(top.Sample(row).token, want.token) << what << " (fallback)";
      }
      whole.Accept(want.token);
      top.Accept(want.token);
    }
    EXPECT_EQ(whole.NextUniform(), top.NextUniform()) << "params " << g;
  }
  EXPECT_GT(decided, 700);
  EXPECT_GT(declined, 10);
}

TEST(ValidateSamplingParamsTest, AcceptsDefaultsAndBoundaries) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams(), 10).ok());
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_k = 1000;  // Larger than the vocabulary: means off.
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.repetition_penalty = 0.5f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.logit_bias = {{0, -kInf}, {9, 100.0f}, {5, -100.0f}};
  params.num_logprobs = kMaxNumLogprobs;
  EXPECT_TRUE(ValidateSamplingParams(params, 10).ok());
  params.temperature = kMaxTemperature;
  EXPECT_TRUE(ValidateSamplingParams(params, 10).ok());
}

TEST(ValidateSamplingParamsTest, RejectsEachBadFieldNamingIt) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::string field;
    std::function<void(SamplingParams&)> mutate;
  };
  const std::vector<Case> cases = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = 101.0f; }},
      {"temperature", [nan](SamplingParams& p) { p.temperature = nan; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.5f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = kInf; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.5f; }},
      {"presence_penalty", [nan](SamplingParams& p) { p.presence_penalty = nan; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.5f; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{10, 1.0f}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{3, 100.5f}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{3, kInf}}; }},
      {"logit_bias", [nan](SamplingParams& p) { p.logit_bias = {{3, nan}}; }},
      {"logit_bias", [](SamplingParams& p) { p.logit_bias = {{3, 1.0f}, {3, 2.0f}}; }},
      {"num_logprobs", [](SamplingParams& p) { p.num_logprobs = -1; }},
      {"num_logprobs", [](SamplingParams& p) { p.num_logprobs = kMaxNumLogprobs + 1; }},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    SamplingParams params;
    cases[i].mutate(params);
    const absl::Status status = ValidateSamplingParams(params, 10);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr(cases[i].field));
  }
}

TEST(ValidateSamplingParamsTest, NonPositiveVocabSizeIsAnInternalError) {
  EXPECT_EQ(ValidateSamplingParams(SamplingParams(), 0).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace glimpse::model
