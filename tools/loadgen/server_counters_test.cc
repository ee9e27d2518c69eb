#include "tools/loadgen/server_counters.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

TEST(ParsePrometheusTextTest, SumsLabelSetsAndSkipsCommentsAndMalformedLines) {
  const std::string text =
      "# HELP glimpse_generation_tokens_total Generated tokens.\n"
      "# TYPE glimpse_generation_tokens_total counter\n"
      "glimpse_generation_tokens_total{model_name=\"a\"} 10\n"
      "glimpse_generation_tokens_total{model_name=\"b } \\\" x\"} 5 1700000000000\r\n"
      "glimpse_num_requests_running 3\n"
      "glimpse_ttft_seconds_bucket{le=\"0.1\"} 4\n"
      "glimpse_ttft_seconds_bucket{le=\"+Inf\"} 6\n"
      "broken_line_without_value\n"
      "bad_value{a=\"1\"} twelve\n"
      "nan_value NaN\n"
      "unterminated{a=\"1\" 7\n"
      "vllm:num_preemptions_total{engine=\"0\"} 2.5e1";
  const MetricValues v = ParsePrometheusText(text);
  EXPECT_DOUBLE_EQ(v.at("glimpse_generation_tokens_total"), 15);
  EXPECT_DOUBLE_EQ(v.at("glimpse_num_requests_running"), 3);
  EXPECT_DOUBLE_EQ(v.at("glimpse_ttft_seconds_bucket"), 10);
  EXPECT_DOUBLE_EQ(v.at("vllm:num_preemptions_total"), 25);
  EXPECT_EQ(v.count("broken_line_without_value"), 0u);
  EXPECT_EQ(v.count("bad_value"), 0u);
  EXPECT_EQ(v.count("nan_value"), 0u);
  EXPECT_EQ(v.count("unterminated"), 0u);
}

TEST(CounterDeltasTest, ReportsIncreasesAndDerivedRatesForCountersPresentInBothScrapes) {
  const MetricValues before = {{"glimpse_generation_tokens_total", 100},
                               {"glimpse_prefix_cache_queries_total", 1000},
                               {"glimpse_prefix_cache_hits_total", 200},
                               {"glimpse_num_preemptions_total", 1},
                               {"glimpse_spec_draft_tokens_total", 0}};
  const MetricValues after = {{"glimpse_generation_tokens_total", 420},
                              {"glimpse_prefix_cache_queries_total", 1400},
                              {"glimpse_prefix_cache_hits_total", 500},
                              {"glimpse_num_preemptions_total", 4},
                              {"glimpse_spec_draft_tokens_total", 0},
                              {"glimpse_prompt_tokens_total", 77}};  // Not in `before`.
  const auto d = CounterDeltas(before, after);
  EXPECT_DOUBLE_EQ(d.at("generation_tokens"), 320);
  EXPECT_DOUBLE_EQ(d.at("prefix_cache_queries"), 400);
  EXPECT_DOUBLE_EQ(d.at("prefix_cache_hits"), 300);
  EXPECT_DOUBLE_EQ(d.at("prefix_cache_hit_rate"), 0.75);
  EXPECT_DOUBLE_EQ(d.at("preemptions"), 3);
  EXPECT_EQ(d.count("prompt_tokens"), 0u);
  // No draft tokens in the run: no acceptance rate rather than a division by zero.
  EXPECT_EQ(d.count("spec_acceptance_rate"), 0u);
}

TEST(CounterDeltasTest, UnderstandsVllmNames) {
  const MetricValues before = {{"vllm:generation_tokens_total", 5},
                               {"vllm:spec_decode_num_draft_tokens_total", 10},
                               {"vllm:spec_decode_num_accepted_tokens_total", 4}};
  const MetricValues after = {{"vllm:generation_tokens_total", 45},
                              {"vllm:spec_decode_num_draft_tokens_total", 50},
                              {"vllm:spec_decode_num_accepted_tokens_total", 34}};
  const auto d = CounterDeltas(before, after);
  EXPECT_DOUBLE_EQ(d.at("generation_tokens"), 40);
  EXPECT_DOUBLE_EQ(d.at("spec_acceptance_rate"), 30.0 / 40.0);
}

TEST(KvUsageTest, ReadsGlimpseThenPeerGauges) {
  EXPECT_DOUBLE_EQ(*KvUsage({{"glimpse_kv_cache_usage_ratio", 0.25}}), 0.25);
  EXPECT_DOUBLE_EQ(*KvUsage({{"vllm:kv_cache_usage_perc", 0.5}}), 0.5);
  EXPECT_DOUBLE_EQ(*KvUsage({{"llamacpp:kv_cache_usage_ratio", 0.125}}), 0.125);
  EXPECT_FALSE(KvUsage({{"something_else", 1}}).has_value());
}

TEST(KvUsageSamplerTest, KeepsPeakAndMeanOfWhatItScraped) {
  std::atomic<int> calls{0};
  KvUsageSampler sampler(
      [&]() -> std::optional<std::string> {
        const int i = calls++;
        if (i % 3 == 2) return std::nullopt;  // An unreadable scrape is skipped.
        return "glimpse_kv_cache_usage_ratio " + std::to_string(i % 3 == 0 ? 0.2 : 0.6) + "\n";
      },
      0.001);
  sampler.Start();
  while (calls < 9) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  sampler.Stop();
  const nlohmann::json s = sampler.Summary();
  ASSERT_FALSE(s.empty());
  EXPECT_GE(s["samples"].get<int>(), 6);
  EXPECT_DOUBLE_EQ(s["peak"].get<double>(), 0.6);
  EXPECT_GT(s["mean"].get<double>(), 0.2);
  EXPECT_LT(s["mean"].get<double>(), 0.6);
}

TEST(KvUsageSamplerTest, SummaryIsEmptyWhenTheServerHasNoGauge) {
  KvUsageSampler sampler([]() -> std::optional<std::string> { return "other 1\n"; }, 0.001);
  sampler.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  sampler.Stop();
  EXPECT_TRUE(sampler.Summary().empty());
}

}  // namespace
}  // namespace glimpse::tools::loadgen
