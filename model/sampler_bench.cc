// Microseconds per Sampler::Sample call at a Llama-3 vocabulary (128256 entries), with and
// without logprobs, for greedy and the usual stochastic settings: what the engine thread pays
// per generated token on top of the forward pass. Then a step's 64 rows sampled on one thread
// and on a pool of every CPU (as the engine's sampling_threads does); and samples from the
// row's candidates alone (SampleFromCandidates, what a device top-k step leaves: top-k
// sampling, and greedy with top logprobs given the row's normalizer; TrySampleNucleus for top-p
// and plain temperature without top-k, given the row's weight sum; TrySampleAdjusted for greedy
// and top-k with a repetition penalty over a 1100-token history; TrySampleAdjustedNucleus for
// top-p and plain temperature with one). Prints tables.
//
//   bazel run -c opt //model:sampler_bench [-- VOCAB [CALLS]]
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "model/sampler.h"
#include "model/sampling_params.h"

namespace {

using glimpse::model::Sampler;
using glimpse::model::SamplingParams;

// Median microseconds of `calls` calls of call(i).
template <typename Call>
double MedianMicros(int calls, const Call& call) {
  std::vector<double> micros;
  for (int i = 0; i < calls; ++i) {
    const auto start = std::chrono::steady_clock::now();
    call(i);
    const auto end = std::chrono::steady_clock::now();
    micros.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  std::sort(micros.begin(), micros.end());
  return micros[micros.size() / 2];
}

// Median microseconds per Sample over `calls` calls on `rows`.
double SampleMedianMicros(const SamplingParams& params, bool report_logprobs,
                          const std::vector<std::vector<float>>& rows, int calls) {
  Sampler sampler(params, static_cast<int32_t>(rows[0].size()), 1, report_logprobs);
  int32_t sink = 0;
  const double micros =
      MedianMicros(calls, [&](int i) { sink += sampler.Sample(rows[i % rows.size()]).token; });
  if (sink == -1) std::printf(" ");
  return micros;
}

// A row as a device top-k step hands it over: its `count` most likely entries, ids ascending.
struct Candidates {
  std::vector<int32_t> ids;
  std::vector<float> values;
};
Candidates MostLikely(const std::vector<float>& row, int32_t count) {
  std::vector<int32_t> order(row.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::partial_sort(order.begin(), order.begin() + count, order.end(),
                    [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  order.resize(count);
  std::sort(order.begin(), order.end());
  Candidates c;
  for (int32_t id : order) {
    c.ids.push_back(id);
    c.values.push_back(row[id]);
  }
  return c;
}

// Median microseconds per SampleFromCandidates over `calls` calls, each row known by its
// CandidatesNeeded most likely entries rounded up to a power of two, as a step brings them
// back (StepLogits), and its normalizer, with logprobs.
double CandidatesMedianMicros(const SamplingParams& params, bool report_logprobs,
                              const std::vector<std::vector<float>>& rows, int calls) {
  const int32_t vocab = static_cast<int32_t>(rows[0].size());
  const int32_t count =
      std::min(vocab, static_cast<int32_t>(std::bit_ceil(static_cast<uint32_t>(
                          Sampler::CandidatesNeeded(params, report_logprobs, vocab)))));
  std::vector<Candidates> candidates;
  std::vector<Sampler::RowNormalizer> normalizers;
  for (const auto& row : rows) {
    candidates.push_back(MostLikely(row, count));
    normalizers.push_back(Sampler::NormalizerOf(row));
  }
  Sampler sampler(params, vocab, 1, report_logprobs);
  int32_t sink = 0;
  const double micros = MedianMicros(calls, [&](int i) {
    const size_t r = i % rows.size();
    sink += sampler.SampleFromCandidates(candidates[r].ids, candidates[r].values, &normalizers[r])
                .token;
  });
  if (sink == -1) std::printf(" ");
  return micros;
}

// Median microseconds per TrySampleNucleus over `calls` calls, each row known by its
// `count` most likely entries and its weight sum; `decided` gets the fraction it decided.
double NucleusMedianMicros(const SamplingParams& params,
                           const std::vector<std::vector<float>>& rows, int32_t count, int calls,
                           double* decided) {
  std::vector<Candidates> candidates;
  std::vector<double> sums(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    candidates.push_back(MostLikely(rows[r], count));
    const float max = *std::max_element(rows[r].begin(), rows[r].end());
    for (float x : rows[r]) sums[r] += std::exp((x - max) / params.temperature);
  }
  Sampler sampler(params, static_cast<int32_t>(rows[0].size()), 1, false);
  int hits = 0;
  const double micros = MedianMicros(calls, [&](int i) {
    const size_t r = i % rows.size();
    hits +=
        sampler.TrySampleNucleus(candidates[r].ids, candidates[r].values, count, sums[r], nullptr)
                .has_value()
            ? 1
            : 0;
  });
  *decided = static_cast<double>(hits) / calls;
  return micros;
}

// A sampler with a repetition penalty's history: 1000 prompt tokens and 100 generated ones,
// drawn at random from the vocabulary.
std::unique_ptr<Sampler> WithHistory(const SamplingParams& params, int32_t vocab) {
  auto sampler = std::make_unique<Sampler>(params, vocab, 1, false);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> prompt(1000);
  for (int32_t& t : prompt) t = token(rng);
  sampler->AddPromptTokens(prompt);
  for (int i = 0; i < 100; ++i) sampler->Accept(token(rng));
  return sampler;
}

// Median microseconds per Sample (whole row) and per TrySampleAdjusted from `count`
// candidates, with WithHistory's history; `decided` gets the fraction the candidates decided.
void AdjustedMedianMicros(const SamplingParams& params, const std::vector<std::vector<float>>& rows,
                          int32_t count, int calls, double* whole, double* adjusted,
                          double* decided) {
  const int32_t vocab = static_cast<int32_t>(rows[0].size());
  std::vector<Candidates> candidates;
  for (const auto& row : rows) candidates.push_back(MostLikely(row, count));
  std::unique_ptr<Sampler> sampler = WithHistory(params, vocab);
  int32_t sink = 0;
  *whole =
      MedianMicros(calls, [&](int i) { sink += sampler->Sample(rows[i % rows.size()]).token; });
  int hits = 0;
  *adjusted = MedianMicros(calls, [&](int i) {
    const size_t r = i % rows.size();
    hits += sampler->TrySampleAdjusted(candidates[r].ids, candidates[r].values, count, nullptr)
                    .has_value()
                ? 1
                : 0;
  });
  if (sink == -1) std::printf(" ");
  *decided = static_cast<double>(hits) / calls;
}

// Median microseconds per Sample (whole row) and per TrySampleAdjustedNucleus from `count`
// candidates, the row's weight sum and its gathered logits (gathered outside the timing), with
// WithHistory's history; `decided` gets the fraction decided, `gathers` the mean gathered.
void AdjustedNucleusMedianMicros(const SamplingParams& params,
                                 const std::vector<std::vector<float>>& rows, int32_t count,
                                 int calls, double* whole, double* adjusted, double* decided,
                                 double* gathers) {
  const int32_t vocab = static_cast<int32_t>(rows[0].size());
  std::unique_ptr<Sampler> sampler = WithHistory(params, vocab);
  std::vector<Candidates> candidates;
  std::vector<std::vector<int32_t>> gather_ids;
  std::vector<std::vector<float>> gathered;
  std::vector<float> maxes;
  std::vector<double> sums;
  *gathers = 0;
  for (const auto& row : rows) {
    candidates.push_back(MostLikely(row, count));
    gather_ids.push_back(sampler->AdjustedNucleusGathers(candidates.back().ids, count));
    gathered.emplace_back();
    for (int32_t t : gather_ids.back()) gathered.back().push_back(row[t]);
    *gathers += static_cast<double>(gather_ids.back().size()) / rows.size();
    maxes.push_back(*std::max_element(row.begin(), row.end()));
    double sum = 0;
    for (float x : row) sum += std::exp((x - maxes.back()) / params.temperature);
    sums.push_back(sum);
  }
  int32_t sink = 0;
  *whole =
      MedianMicros(calls, [&](int i) { sink += sampler->Sample(rows[i % rows.size()]).token; });
  int hits = 0;
  *adjusted = MedianMicros(calls, [&](int i) {
    const size_t r = i % rows.size();
    hits +=
        sampler->TrySampleAdjustedNucleus(candidates[r].ids, candidates[r].values, count, maxes[r],
                                          sums[r], nullptr, gather_ids[r], gathered[r])
                .has_value()
            ? 1
            : 0;
  });
  if (sink == -1) std::printf(" ");
  *decided = static_cast<double>(hits) / calls;
}

}  // namespace

int main(int argc, char** argv) {
  const int32_t vocab = argc > 1 ? std::atoi(argv[1]) : 128256;
  const int calls = argc > 2 ? std::atoi(argv[2]) : 200;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(8, std::vector<float>(vocab));
  for (auto& row : rows) {
    for (float& x : row) x = normal(rng);
  }
  struct Setting {
    const char* name;
    SamplingParams params;
  };
  std::vector<Setting> settings;
  SamplingParams p;
  p.temperature = 0.0f;
  settings.push_back({"greedy", p});
  p = SamplingParams();
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  settings.push_back({"top-k 50, top-p 0.9", p});
  p = SamplingParams();
  p.temperature = 1.0f;
  settings.push_back({"temperature 1", p});
  std::printf("Sampler::Sample, vocabulary %d, median of %d calls (one thread)\n", vocab, calls);
  std::printf("%-22s %16s %16s %8s\n", "setting", "with logprob us", "without us", "ratio");
  for (const Setting& s : settings) {
    const double with = SampleMedianMicros(s.params, true, rows, calls);
    const double without = SampleMedianMicros(s.params, false, rows, calls);
    std::printf("%-22s %16.1f %16.1f %8.2f\n", s.name, with, without, with / without);
  }

  // The same samples from the rows' most likely entries alone, as the engine samples when the
  // device selected them (StepRunner::ForwardTopK): no pass over the vocabulary. With logprobs
  // the device also hands over each row's normalizer (computed here outside the timing).
  {
    SamplingParams greedy_top5;
    greedy_top5.temperature = 0.0f;
    greedy_top5.num_logprobs = 5;
    SamplingParams top_k;
    top_k.temperature = 0.8f;
    top_k.top_k = 50;
    const struct {
      const char* name;
      SamplingParams params;
      bool report_logprobs;
    } from_candidates[] = {{settings[1].name, settings[1].params, false},
                           {"top-k 50, T 0.8", top_k, false},
                           {"greedy, 5 top logprobs", greedy_top5, true}};
    std::printf("\nFrom the candidates (SampleFromCandidates) vs the whole row (Sample)\n");
    std::printf("%-22s %10s %16s %16s %8s\n", "setting", "logprobs", "whole row us",
                "candidates us", "ratio");
    for (const auto& c : from_candidates) {
      const double whole = SampleMedianMicros(c.params, c.report_logprobs, rows, calls);
      const double candidates = CandidatesMedianMicros(c.params, c.report_logprobs, rows, calls);
      std::printf("%-22s %10s %16.1f %16.2f %8.0f\n", c.name, c.report_logprobs ? "yes" : "no",
                  whole, candidates, whole / candidates);
    }
    // Without top-k (top-p 0.9, and plain temperature 1) from 256 candidates and the row's
    // weight sum (TrySampleNucleus).
    SamplingParams top_p;
    top_p.temperature = 0.8f;
    top_p.top_p = 0.9f;
    const struct {
      const char* name;
      SamplingParams params;
    } nucleus_settings[] = {{"top-p 0.9 (256 cand.)", top_p},
                            {"temp. 1 (256 cand.)", settings[2].params}};
    for (const auto& n : nucleus_settings) {
      for (const float scale : {1.0f, 4.0f}) {  // the rows as they are (flat), and peaked
        std::vector<std::vector<float>> scaled = rows;
        for (auto& row : scaled) {
          for (float& x : row) x *= scale;
        }
        double decided = 0;
        const double whole = SampleMedianMicros(n.params, false, scaled, calls);
        const double nucleus = NucleusMedianMicros(n.params, scaled, 256, calls, &decided);
        std::printf("%-22s %10s %16.1f %16.2f %8.0f   (logits x%.0f: %.0f%% decided)\n", n.name,
                    "no", whole, nucleus, whole / nucleus, scale, 100.0 * decided);
      }
    }
    // Greedy and top-k 50 with a repetition penalty of 1.2 over a 1100-token history, from
    // their k + 32 candidates rounded up to a power of two (TrySampleAdjusted), as the engine
    // asks for them.
    SamplingParams greedy_penalised;
    greedy_penalised.temperature = 0.0f;
    greedy_penalised.repetition_penalty = 1.2f;
    SamplingParams top_k_penalised = settings[1].params;
    top_k_penalised.repetition_penalty = 1.2f;
    const struct {
      const char* name;
      SamplingParams params;
      int32_t count;
    } adjusted_settings[] = {{"greedy rep 1.2 (64)", greedy_penalised, 64},
                             {"top-k rep 1.2 (128)", top_k_penalised, 128}};
    for (const auto& a : adjusted_settings) {
      double whole = 0, adjusted = 0, decided = 0;
      AdjustedMedianMicros(a.params, rows, a.count, calls, &whole, &adjusted, &decided);
      std::printf("%-22s %10s %16.1f %16.2f %8.0f   (%.0f%% decided)\n", a.name, "no", whole,
                  adjusted, whole / adjusted, 100.0 * decided);
    }
    // Top-p 0.9 and plain temperature 1 with a repetition penalty of 1.2 over that history,
    // from 256 candidates, the weight sum and the raw logits of the ~1100 prompt and output
    // tokens among the rest (TrySampleAdjustedNucleus).
    SamplingParams top_p_penalised = top_p;
    top_p_penalised.repetition_penalty = 1.2f;
    SamplingParams plain_penalised = settings[2].params;
    plain_penalised.repetition_penalty = 1.2f;
    const struct {
      const char* name;
      SamplingParams params;
    } adjusted_nucleus_settings[] = {{"top-p rep 1.2 (256)", top_p_penalised},
                                     {"temp. 1 rep 1.2 (256)", plain_penalised}};
    for (const auto& a : adjusted_nucleus_settings) {
      for (const float scale : {1.0f, 4.0f}) {
        std::vector<std::vector<float>> scaled = rows;
        for (auto& row : scaled) {
          for (float& x : row) x *= scale;
        }
        double whole = 0, adjusted = 0, decided = 0, gathers = 0;
        AdjustedNucleusMedianMicros(a.params, scaled, 256, calls, &whole, &adjusted, &decided,
                                    &gathers);
        std::printf(
            "%-22s %10s %16.1f %16.2f %8.0f   (logits x%.0f: %.0f%% decided, %.0f "
            "gathered)\n",
            a.name, "no", whole, adjusted, whole / adjusted, scale, 100.0 * decided, gathers);
      }
    }
  }

  // One step of 64 rows, each its own sampler (as the engine's sequences), without logprobs.
  constexpr int kRows = 64;
  glimpse::kernels::cpu::ThreadPool pool(glimpse::kernels::cpu::DefaultNumThreads());
  std::printf("\n%d rows per step, without logprobs, median of 9 steps: one thread vs %d\n", kRows,
              pool.num_threads());
  std::printf("%-22s %16s %16s %8s\n", "setting", "1 thread ms", "pool ms", "ratio");
  for (const Setting& s : settings) {
    double ms[2];
    for (int parallel = 0; parallel < 2; ++parallel) {
      std::vector<double> steps;
      for (int step = 0; step < 9; ++step) {
        std::vector<std::unique_ptr<Sampler>> samplers;
        for (int r = 0; r < kRows; ++r) {
          samplers.push_back(std::make_unique<Sampler>(s.params, vocab, r, false));
        }
        std::vector<int32_t> tokens(kRows);
        auto draw = [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            tokens[r] = samplers[r]->Sample(rows[r % rows.size()]).token;
          }
        };
        const auto start = std::chrono::steady_clock::now();
        if (parallel) {
          pool.ParallelFor(kRows, draw);
        } else {
          draw(0, kRows);
        }
        const auto end = std::chrono::steady_clock::now();
        steps.push_back(std::chrono::duration<double, std::milli>(end - start).count());
      }
      std::sort(steps.begin(), steps.end());
      ms[parallel] = steps[steps.size() / 2];
    }
    std::printf("%-22s %16.2f %16.2f %8.2f\n", s.name, ms[0], ms[1], ms[0] / ms[1]);
  }
  return 0;
}
