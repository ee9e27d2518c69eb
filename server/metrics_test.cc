#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One sample line of the text format, parsed strictly enough to catch format mistakes.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // Unescaped values.
  std::string value;
};

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    EXPECT_NE(end, std::string::npos) << "output must end with a newline";
    if (end == std::string::npos) break;
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::optional<Sample> ParseSample(const std::string& line) {
  Sample s;
  size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') s.name.push_back(line[i++]);
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      std::string key;
      while (i < line.size() && line[i] != '=') key.push_back(line[i++]);
      if (line.compare(i, 2, "=\"") != 0) return std::nullopt;
      i += 2;
      std::string value;
      while (i < line.size() && line[i] != '"') {
        if (line[i] == '\\') {
          if (++i >= line.size()) return std::nullopt;
          switch (line[i]) {
            case 'n':
              value.push_back('\n');
              break;
            case '\\':
            case '"':
              value.push_back(line[i]);
              break;
            default:
              return std::nullopt;
          }
        } else {
          value.push_back(line[i]);
        }
        ++i;
      }
      if (i >= line.size()) return std::nullopt;
      ++i;  // Closing quote.
      s.labels[key] = value;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return std::nullopt;
    ++i;  // '}'
  }
  if (i >= line.size() || line[i] != ' ') return std::nullopt;
  s.value = line.substr(i + 1);
  if (s.value.empty() || s.value.find(' ') != std::string::npos) return std::nullopt;
  return s;
}

std::vector<Sample> ParseSamples(const std::string& text) {
  std::vector<Sample> samples;
  for (const std::string& line : SplitLines(text)) {
    if (line.starts_with("#")) continue;
    std::optional<Sample> s = ParseSample(line);
    EXPECT_TRUE(s.has_value()) << "unparsable line: " << line;
    if (s) samples.push_back(*s);
  }
  return samples;
}

std::vector<Sample> SamplesNamed(const std::string& text, const std::string& name) {
  std::vector<Sample> out;
  for (Sample& s : ParseSamples(text)) {
    if (s.name == name) out.push_back(std::move(s));
  }
  return out;
}

TEST(FormatMetricValueTest, IntegersPrintWithoutExponentOrFraction) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(-42), "-42");
  EXPECT_EQ(FormatMetricValue(1e21), "1000000000000000000000");
  EXPECT_EQ(FormatMetricValue(123456789), "123456789");
}

TEST(FormatMetricValueTest, FractionsUseShortestRoundTripForm) {
  EXPECT_EQ(FormatMetricValue(0.25), "0.25");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(2.5), "2.5");
  EXPECT_EQ(std::stod(FormatMetricValue(1e-7)), 1e-7);
}

TEST(FormatMetricValueTest, SpecialValuesAreSpelledAsPrometheusExpects) {
  EXPECT_EQ(FormatMetricValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatMetricValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatMetricValue(NAN), "NaN");
}

TEST(MetricsRegistryTest, RendersHelpAndTypeBeforeSamples) {
  MetricsRegistry registry;
  Counter* counter = *registry.AddCounter("test_requests_total", "Requests served.");
  Gauge* gauge = *registry.AddGauge("test_temperature", "Current temperature.");
  counter->Add(3);
  gauge->Set(-1.5);

  EXPECT_THAT(SplitLines(registry.RenderText()),
              ElementsAre("# HELP test_requests_total Requests served.",
                          "# TYPE test_requests_total counter", "test_requests_total 3",
                          "# HELP test_temperature Current temperature.",
                          "# TYPE test_temperature gauge", "test_temperature -1.5"));
}

TEST(MetricsRegistryTest, EscapesHelpTextAndLabelValues) {
  MetricsRegistry registry;
  Gauge* gauge = *registry.AddGauge("test_escape", "Back\\slash and\nnewline \"quotes\".",
                                    {{"path", "C:\\dir\n\"x\""}});
  gauge->Set(1);
  const std::string text = registry.RenderText();
  // Help escapes only backslash and newline; label values also escape double quotes.
  EXPECT_THAT(text, HasSubstr("# HELP test_escape Back\\\\slash and\\nnewline \"quotes\".\n"));
  EXPECT_THAT(text, HasSubstr("test_escape{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n"));
  std::vector<Sample> samples = SamplesNamed(text, "test_escape");
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].labels["path"], "C:\\dir\n\"x\"");
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram* h = *registry.AddHistogram("test_latency_seconds", "Latency.", {0.1, 0.5, 1},
                                        {{"model_name", "tiny"}});
  for (double v : {0.05, 0.1, 0.2, 0.7, 3.0, 3.0}) h->Observe(v);

  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("# TYPE test_latency_seconds histogram\n"));
  std::vector<Sample> buckets = SamplesNamed(text, "test_latency_seconds_bucket");
  ASSERT_EQ(buckets.size(), 4u);
  std::vector<std::string> les;
  std::vector<std::string> values;
  for (Sample& b : buckets) {
    EXPECT_EQ(b.labels["model_name"], "tiny");
    les.push_back(b.labels["le"]);
    values.push_back(b.value);
  }
  EXPECT_THAT(les, ElementsAre("0.1", "0.5", "1", "+Inf"));
  // 0.1 is in the le="0.1" bucket (upper bounds are inclusive).
  EXPECT_THAT(values, ElementsAre("2", "3", "4", "6"));
  std::vector<Sample> sum = SamplesNamed(text, "test_latency_seconds_sum");
  std::vector<Sample> count = SamplesNamed(text, "test_latency_seconds_count");
  ASSERT_EQ(sum.size(), 1u);
  ASSERT_EQ(count.size(), 1u);
  EXPECT_DOUBLE_EQ(std::stod(sum[0].value), 7.05);
  EXPECT_EQ(count[0].value, "6");
  EXPECT_EQ(count[0].labels["model_name"], "tiny");
}

TEST(MetricsRegistryTest, HistogramSendsNanToInfBucket) {
  MetricsRegistry registry;
  Histogram* h = *registry.AddHistogram("test_nan", "NaN handling.", {1});
  h->Observe(NAN);
  EXPECT_THAT(h->BucketCounts(), ElementsAre(0u, 1u));
  EXPECT_THAT(registry.RenderText(), HasSubstr("test_nan_sum NaN\n"));
}

TEST(MetricsRegistryTest, CounterCountsConcurrentIncrementsFromFourThreads) {
  MetricsRegistry registry;
  Counter* counter = *registry.AddCounter("test_events_total", "Events.");
  Counter* seconds = *registry.AddCounter("test_busy_seconds_total", "Busy time.");
  Histogram* h = *registry.AddHistogram("test_sizes", "Sizes.", {10, 100});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        counter->Increment();
        counter->Add(2);
        seconds->Add(0.5);
        h->Observe(i % 200);
      }
    });
  }
  // Render concurrently with the updates: it must neither block them nor crash.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(registry.RenderText().empty());
  for (std::thread& t : threads) t.join();

  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("\ntest_events_total 1200000\n"));
  EXPECT_THAT(text, HasSubstr("\ntest_busy_seconds_total 200000\n"));
  EXPECT_THAT(text, HasSubstr("\ntest_sizes_count 400000\n"));
  EXPECT_THAT(text, HasSubstr("test_sizes_bucket{le=\"+Inf\"} 400000\n"));
}

TEST(MetricsRegistryTest, LargeIntegerCounterStaysExact) {
  MetricsRegistry registry;
  Counter* counter = *registry.AddCounter("test_big_total", "Big.");
  counter->Add(uint64_t{1} << 60);
  counter->Increment();
  EXPECT_THAT(registry.RenderText(), HasSubstr("\ntest_big_total 1152921504606846977\n"));
}

TEST(MetricsRegistryTest, FamilyHoldsSeveralLabelSetsUnderOneHeader) {
  MetricsRegistry registry;
  Counter* a = *registry.AddCounter("test_tokens_total", "Tokens.", {{"model_name", "a"}});
  Counter* b = *registry.AddCounter("test_tokens_total", "Tokens.", {{"model_name", "b"}});
  a->Add(1);
  b->Add(2);
  EXPECT_THAT(SplitLines(registry.RenderText()),
              ElementsAre("# HELP test_tokens_total Tokens.", "# TYPE test_tokens_total counter",
                          "test_tokens_total{model_name=\"a\"} 1",
                          "test_tokens_total{model_name=\"b\"} 2"));
}

TEST(MetricsRegistryTest, RejectsBadRegistrations) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.AddCounter("9bad", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("bad-name", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("ok", "x", {{"__reserved", "v"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("ok", "x", {{"a", "1"}, {"a", "2"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {1}, {{"le", "1"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {2, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {1, NAN}).status().code(),
            absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(registry.AddCounter("dup_total", "Dup.", {{"a", "1"}, {"b", "2"}}).ok());
  // The same label set in another order is the same series.
  EXPECT_EQ(registry.AddCounter("dup_total", "Dup.", {{"b", "2"}, {"a", "1"}}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGauge("dup_total", "Dup.").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("dup_total", "Other help.").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Failed registrations leave nothing behind.
  EXPECT_EQ(SplitLines(registry.RenderText()).size(), 3u);
}

TEST(MetricsRegistryTest, TrailingInfBoundIsImplicit) {
  MetricsRegistry registry;
  Histogram* h = *registry.AddHistogram("test_inf", "Inf.", {1, INFINITY});
  EXPECT_THAT(h->upper_bounds(), ElementsAre(1.0));
  EXPECT_EQ(SamplesNamed(registry.RenderText(), "test_inf_bucket").size(), 2u);
}

TEST(MetricsRegistryTest, CallbackGaugeIsEvaluatedAtRenderTime) {
  MetricsRegistry registry;
  double usage = 0.25;
  ASSERT_TRUE(registry.AddCallbackGauge("test_usage_ratio", "Usage.", [&] { return usage; }).ok());
  EXPECT_THAT(registry.RenderText(), HasSubstr("\ntest_usage_ratio 0.25\n"));
  usage = 0.5;
  EXPECT_THAT(registry.RenderText(), HasSubstr("\ntest_usage_ratio 0.5\n"));
  EXPECT_FALSE(registry.AddCallbackGauge("test_empty", "Empty.", nullptr).ok());
}

TEST(MetricsRegistryTest, CallbackCounterIsACounterReadAtRenderTime) {
  MetricsRegistry registry;
  int64_t replays = 7;
  ASSERT_TRUE(registry
                  .AddCallbackCounter("test_replays_total", "Replays.",
                                      [&] { return static_cast<double>(replays); },
                                      {{"model_name", "m"}})
                  .ok());
  EXPECT_THAT(registry.RenderText(), HasSubstr("# TYPE test_replays_total counter\n"));
  EXPECT_THAT(registry.RenderText(), HasSubstr("\ntest_replays_total{model_name=\"m\"} 7\n"));
  replays = 12;
  EXPECT_THAT(registry.RenderText(), HasSubstr("\ntest_replays_total{model_name=\"m\"} 12\n"));
  EXPECT_FALSE(registry.AddCallbackCounter("test_none_total", "None.", nullptr).ok());
}

TEST(MetricsRegistryTest, GaugeSetMaxKeepsTheLargest) {
  Gauge gauge;
  gauge.SetMax(3);
  gauge.SetMax(1);
  EXPECT_EQ(gauge.Value(), 3);
  gauge.Add(2);
  gauge.Sub(0.5);
  EXPECT_EQ(gauge.Value(), 4.5);
}

TEST(CounterDeathTest, NegativeAddIsABug) {
  Counter counter;
  EXPECT_DEATH(counter.Add(-1), "CHECK failed");
  EXPECT_DEATH(counter.Add(-0.5), "CHECK failed");
}

TEST(EngineMetricsTest, RegistersDesignNamesWithTypesAndLabels) {
  MetricsRegistry registry;
  absl::StatusOr<EngineMetrics> metrics = CreateEngineMetrics(registry, {{"model_name", "m"}});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  metrics->prompt_tokens->Add(7);
  metrics->kv_cache_usage_ratio->Set(0.5);
  metrics->time_to_first_token_seconds->Observe(0.03);

  const std::string text = registry.RenderText();
  const std::vector<std::string> lines = SplitLines(text);
  auto has_type = [&](const std::string& name, const std::string& type) {
    return std::find(lines.begin(), lines.end(), "# TYPE " + name + " " + type) != lines.end();
  };
  for (const char* name :
       {"glimpse_time_to_first_token_seconds", "glimpse_inter_token_latency_seconds",
        "glimpse_e2e_request_latency_seconds", "glimpse_request_queue_time_seconds",
        "glimpse_decode_batch_size"}) {
    EXPECT_TRUE(has_type(name, "histogram")) << name;
  }
  for (const char* name : {"glimpse_num_requests_running", "glimpse_num_requests_waiting",
                           "glimpse_kv_cache_usage_ratio", "glimpse_decode_batch_size_mean",
                           "glimpse_decode_batch_size_max"}) {
    EXPECT_TRUE(has_type(name, "gauge")) << name;
  }
  for (const char* name :
       {"glimpse_prompt_tokens_total", "glimpse_generation_tokens_total",
        "glimpse_prefix_cache_queries_total", "glimpse_prefix_cache_hits_total",
        "glimpse_num_preemptions_total", "glimpse_forward_tokens_total",
        "glimpse_engine_steps_total", "glimpse_spec_draft_tokens_total",
        "glimpse_spec_accepted_tokens_total", "glimpse_nucleus_rows_decided_total",
        "glimpse_adjusted_rows_decided_total", "glimpse_sampled_rows_gathered_total",
        "glimpse_sampled_rows_fetched_total", "glimpse_stream_chunks_merged_total"}) {
    EXPECT_TRUE(has_type(name, "counter")) << name;
  }
  EXPECT_THAT(text, HasSubstr("\nglimpse_prompt_tokens_total{model_name=\"m\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("\nglimpse_kv_cache_usage_ratio{model_name=\"m\"} 0.5\n"));
  EXPECT_THAT(
      text, HasSubstr("\nglimpse_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.04\"} "
                      "1\n"));
  for (const Sample& s : ParseSamples(text)) {
    EXPECT_EQ(s.labels.at("model_name"), "m") << s.name;
  }
  // A second engine set with the same labels would double-register.
  EXPECT_EQ(CreateEngineMetrics(registry, {{"model_name", "m"}}).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(EngineMetricsTest, ObserveDecodeBatchUpdatesHistogramMeanAndMax) {
  MetricsRegistry registry;
  EngineMetrics metrics = *CreateEngineMetrics(registry);
  metrics.ObserveDecodeBatch(4);
  metrics.ObserveDecodeBatch(8);
  metrics.ObserveDecodeBatch(3);
  EXPECT_EQ(metrics.decode_batch_size->Count(), 3u);
  EXPECT_DOUBLE_EQ(metrics.decode_batch_size_mean->Value(), 5.0);
  EXPECT_EQ(metrics.decode_batch_size_max->Value(), 8.0);
}

}  // namespace
}  // namespace glimpse::server
