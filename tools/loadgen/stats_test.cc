#include "tools/loadgen/stats.h"

#include <cmath>
#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::tools::loadgen {
namespace {

constexpr double kTol = 1e-9;

SloOptions Slo(std::optional<double> ttft_ms, std::optional<double> tpot_ms,
               std::optional<double> e2e_ms) {
  SloOptions slo;
  slo.ttft_ms = ttft_ms;
  slo.tpot_ms = tpot_ms;
  slo.e2e_ms = e2e_ms;
  return slo;
}

// Expected values below are computed by hand (numpy's linear percentile: rank = p/100*(n-1)).
TEST(PercentileTest, MatchesNumpyLinearOnFourValues) {
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_NEAR(Percentile(v, 90), 3.7, kTol);   // rank 2.7
  EXPECT_NEAR(Percentile(v, 50), 2.5, kTol);   // rank 1.5
  EXPECT_NEAR(Percentile(v, 99), 3.97, kTol);  // rank 2.97
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile(v, 100), 4);
}

TEST(PercentileTest, SortsUnsortedInput) {
  EXPECT_NEAR(Percentile({4, 1, 3, 2}, 90), 3.7, kTol);
}

TEST(PercentileTest, MatchesNumpyLinearOnFiveValues) {
  const std::vector<double> v = {50, 10, 40, 20, 30};
  EXPECT_EQ(Percentile(v, 50), 30);              // rank 2
  EXPECT_NEAR(Percentile(v, 90), 46.0, kTol);    // rank 3.6
  EXPECT_NEAR(Percentile(v, 99), 49.6, kTol);    // rank 3.96
  EXPECT_NEAR(Percentile(v, 25), 20.0, kTol);    // rank 1
}

TEST(PercentileTest, SingleValueAndEmpty) {
  EXPECT_EQ(Percentile({5}, 0), 5);
  EXPECT_EQ(Percentile({5}, 99), 5);
  EXPECT_EQ(Percentile({}, 50), 0);
}

TEST(DescribeTest, MeanPopulationStdAndPercentilesInMilliseconds) {
  const LatencyStats s = Describe({1, 2, 3, 4});
  EXPECT_EQ(s.count, 4);
  EXPECT_NEAR(s.mean_ms, 2500, kTol);
  EXPECT_NEAR(s.std_ms, std::sqrt(1.25) * 1000, 1e-6);  // ddof = 0: sum of squares 5 / 4.
  EXPECT_NEAR(s.p50_ms, 2500, kTol);
  EXPECT_NEAR(s.p90_ms, 3700, 1e-6);
  EXPECT_NEAR(s.p99_ms, 3970, 1e-6);
}

TEST(DescribeTest, EmptyIsAllZeros) {
  const LatencyStats s = Describe({});
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.mean_ms, 0);
  EXPECT_EQ(s.std_ms, 0);
  EXPECT_EQ(s.p50_ms, 0);
  EXPECT_EQ(s.p90_ms, 0);
  EXPECT_EQ(s.p99_ms, 0);
}

RequestRecord Ok(double start, double first, double end, std::vector<double> chunks,
                 int32_t input_tokens, int32_t output_tokens) {
  RequestRecord r;
  r.ok = true;
  r.start_s = start;
  r.first_token_s = first;
  r.end_s = end;
  r.token_times_s = std::move(chunks);
  r.input_tokens = input_tokens;
  r.output_tokens = output_tokens;
  return r;
}

RequestRecord Failed(std::string kind) {
  RequestRecord r;
  r.ok = false;
  r.error_kind = std::move(kind);
  r.start_s = 0;
  r.end_s = 9;
  r.input_tokens = 100;  // Must not be counted.
  r.output_tokens = 7;
  return r;
}

// Three successful requests and three failures over 4 s of wall time:
//   R1: TTFT 0.1, E2E 1.1, 5 tokens in 4 chunks -> TPOT 1.0/4 = 0.25, ITL 0.2 0.3 0.5
//   R2: TTFT 0.3, E2E 0.5, 3 tokens in 3 chunks -> TPOT 0.2/2 = 0.1,  ITL 0.1 0.1
//   R3: TTFT 0.05, E2E 0.06, 1 token            -> no TPOT, no ITL
std::vector<RequestRecord> Workload() {
  return {
      Ok(0.0, 0.1, 1.1, {0.1, 0.3, 0.6, 1.1}, 10, 5),
      Ok(1.0, 1.3, 1.5, {1.3, 1.4, 1.5}, 20, 3),
      Ok(2.0, 2.05, 2.06, {2.05}, 5, 1),
      Failed("http_503"),
      Failed(""),
      Failed("http_503"),
  };
}

TEST(SummarizeTest, CountsAndThroughputUseSuccessfulRequestsOnly) {
  const std::vector<RequestRecord> records = Workload();
  const Summary s = Summarize(records, 4.0, SloOptions{});
  EXPECT_EQ(s.requests_ok, 3);
  EXPECT_EQ(s.requests_failed, 3);
  EXPECT_EQ(s.input_tokens, 35);
  EXPECT_EQ(s.output_tokens, 9);
  EXPECT_NEAR(s.req_s, 0.75, kTol);
  EXPECT_NEAR(s.output_tok_s, 2.25, kTol);
  EXPECT_NEAR(s.total_tok_s, 11.0, kTol);  // (35 + 9) / 4
  EXPECT_FALSE(s.goodput_req_s.has_value());
  EXPECT_FALSE(s.requests_good.has_value());
  ASSERT_EQ(s.errors_by_kind.size(), 2u);
  EXPECT_EQ(s.errors_by_kind.at("http_503"), 2);
  EXPECT_EQ(s.errors_by_kind.at("unknown"), 1);
}

TEST(SummarizeTest, LatenciesFollowVllmDefinitions) {
  const std::vector<RequestRecord> records = Workload();
  const Summary s = Summarize(records, 4.0, SloOptions{});
  // TTFT {100, 300, 50} ms -> sorted {50, 100, 300}.
  EXPECT_EQ(s.ttft.count, 3);
  EXPECT_NEAR(s.ttft.mean_ms, 150, 1e-6);
  EXPECT_NEAR(s.ttft.p50_ms, 100, 1e-6);
  EXPECT_NEAR(s.ttft.p90_ms, 260, 1e-6);  // rank 1.8: 100 + 0.8 * 200
  EXPECT_NEAR(s.ttft.p99_ms, 296, 1e-6);  // rank 1.98
  // TPOT {250, 100} ms; the single-token request has none.
  EXPECT_EQ(s.tpot.count, 2);
  EXPECT_NEAR(s.tpot.mean_ms, 175, 1e-6);
  EXPECT_NEAR(s.tpot.p50_ms, 175, 1e-6);
  EXPECT_NEAR(s.tpot.p90_ms, 235, 1e-6);    // rank 0.9: 100 + 0.9 * 150
  EXPECT_NEAR(s.tpot.p99_ms, 248.5, 1e-6);  // rank 0.99
  EXPECT_NEAR(s.tpot.std_ms, 75, 1e-6);
  // ITL: one gap per chunk, pooled: {200, 300, 500, 100, 100} -> sorted {100,100,200,300,500}.
  EXPECT_EQ(s.itl.count, 5);
  EXPECT_NEAR(s.itl.mean_ms, 240, 1e-6);
  EXPECT_NEAR(s.itl.p50_ms, 200, 1e-6);
  EXPECT_NEAR(s.itl.p90_ms, 420, 1e-6);  // rank 3.6: 300 + 0.6 * 200
  EXPECT_NEAR(s.itl.p99_ms, 492, 1e-6);  // rank 3.96
  // E2E {1100, 500, 60} ms -> sorted {60, 500, 1100}.
  EXPECT_EQ(s.e2e.count, 3);
  EXPECT_NEAR(s.e2e.mean_ms, 1660.0 / 3, 1e-6);
  EXPECT_NEAR(s.e2e.p50_ms, 500, 1e-6);
  EXPECT_NEAR(s.e2e.p90_ms, 980, 1e-6);   // rank 1.8: 500 + 0.8 * 600
  EXPECT_NEAR(s.e2e.p99_ms, 1088, 1e-6);  // rank 1.98
}

TEST(SummarizeTest, SingleTokenOutputHasTtftButNoTpotOrItl) {
  const std::vector<RequestRecord> records = {Ok(0, 0.25, 0.5, {0.25}, 4, 1)};
  const Summary s = Summarize(records, 1.0, SloOptions{});
  EXPECT_EQ(s.ttft.count, 1);
  EXPECT_NEAR(s.ttft.mean_ms, 250, kTol);
  EXPECT_EQ(s.tpot.count, 0);
  EXPECT_EQ(s.tpot.mean_ms, 0);
  EXPECT_EQ(s.itl.count, 0);
  EXPECT_EQ(s.e2e.count, 1);
  EXPECT_NEAR(s.e2e.p99_ms, 500, kTol);
}

TEST(SummarizeTest, RepeatedChunkTimestampAddsNoGap) {
  // A recorder that pushed one entry per token of a 2-token chunk: still one gap per chunk.
  const std::vector<RequestRecord> records = {Ok(0, 0.5, 1.0, {0.5, 0.5, 1.0}, 1, 3)};
  const Summary s = Summarize(records, 1.0, SloOptions{});
  EXPECT_EQ(s.itl.count, 1);
  EXPECT_NEAR(s.itl.mean_ms, 500, kTol);
}

TEST(SummarizeTest, EmptyInputIsAllZeros) {
  for (double wall : {0.0, 10.0}) {
    const Summary s = Summarize({}, wall, Slo(100, {}, {}));
    EXPECT_EQ(s.requests_ok, 0);
    EXPECT_EQ(s.requests_failed, 0);
    EXPECT_EQ(s.req_s, 0);
    EXPECT_EQ(s.output_tok_s, 0);
    EXPECT_EQ(s.total_tok_s, 0);
    EXPECT_EQ(s.goodput_req_s, 0.0);
    EXPECT_EQ(s.ttft.count, 0);
    EXPECT_EQ(s.e2e.mean_ms, 0);
    EXPECT_TRUE(s.errors_by_kind.empty());
  }
}

TEST(SummarizeTest, ZeroWallTimeGivesZeroRatesNotInfinity) {
  const std::vector<RequestRecord> records = Workload();
  const Summary s = Summarize(records, 0.0, Slo({}, {}, 1e9));
  EXPECT_EQ(s.req_s, 0);
  EXPECT_EQ(s.output_tok_s, 0);
  EXPECT_EQ(s.goodput_req_s, 0.0);
  EXPECT_EQ(s.requests_good, 3);
}

TEST(SummarizeTest, AllFailedHasNoLatencies) {
  const std::vector<RequestRecord> records = {Failed("timeout"), Failed("timeout")};
  const Summary s = Summarize(records, 2.0, SloOptions{});
  EXPECT_EQ(s.requests_ok, 0);
  EXPECT_EQ(s.requests_failed, 2);
  EXPECT_EQ(s.input_tokens, 0);
  EXPECT_EQ(s.output_tokens, 0);
  EXPECT_EQ(s.e2e.count, 0);
  EXPECT_EQ(s.errors_by_kind.at("timeout"), 2);
}

// Goodput on Workload(): TTFT {100, 300, 50}, TPOT {250, 100, 0 (single token)},
// E2E {1100, 500, 60} ms; 4 s of wall time.
double Goodput(const SloOptions& slo) {
  const std::vector<RequestRecord> records = Workload();
  const Summary s = Summarize(records, 4.0, slo);
  EXPECT_TRUE(s.goodput_req_s.has_value());
  return s.goodput_req_s.value_or(-1);
}

TEST(GoodputTest, TtftSlo) {
  EXPECT_NEAR(Goodput(Slo(200, {}, {})), 0.5, kTol);   // R1, R3
  EXPECT_NEAR(Goodput(Slo(10, {}, {})), 0.0, kTol);
  EXPECT_NEAR(Goodput(Slo(1000, {}, {})), 0.75, kTol);  // Failures never count.
}

TEST(GoodputTest, TpotSloCountsSingleTokenRequestsAsZeroTpot) {
  EXPECT_NEAR(Goodput(Slo({}, 150, {})), 0.5, kTol);  // R2, R3
  EXPECT_NEAR(Goodput(Slo({}, 1, {})), 0.25, kTol);   // R3 only
}

TEST(GoodputTest, E2eSlo) {
  EXPECT_NEAR(Goodput(Slo({}, {}, 100)), 0.25, kTol);   // R3
  EXPECT_NEAR(Goodput(Slo({}, {}, 1000)), 0.5, kTol);   // R2, R3
}

TEST(GoodputTest, AllSlosMustHold) {
  EXPECT_NEAR(Goodput(Slo(200, 150, {})), 0.25, kTol);  // R3
  EXPECT_NEAR(Goodput(Slo(400, 300, 1000)), 0.5, kTol);
}

TEST(GoodputTest, ValueEqualToLimitMeetsIt) {
  const std::vector<RequestRecord> records = {Ok(0, 0.25, 0.5, {0.25}, 1, 1)};
  const Summary s = Summarize(records, 1.0, Slo(250, {}, 500));
  EXPECT_EQ(s.requests_good, 1);
  EXPECT_NEAR(s.goodput_req_s.value_or(-1), 1.0, kTol);
}

TEST(ToJsonTest, HasTheIssueTopLevelKeys) {
  const std::vector<RequestRecord> records = Workload();
  const nlohmann::json j = ToJson(Summarize(records, 4.0, SloOptions{}));
  for (const char* key : {"requests_ok", "requests_failed", "output_tokens", "input_tokens",
                          "output_tok_s", "req_s", "total_tok_s", "errors"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  for (const char* metric : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    ASSERT_TRUE(j.contains(metric)) << metric;
    for (const char* field : {"mean", "p50", "p90", "p99"}) {
      EXPECT_TRUE(j[metric].contains(field) && j[metric][field].is_number()) << metric << field;
    }
  }
  EXPECT_EQ(j["requests_ok"], 3);
  EXPECT_EQ(j["requests_failed"], 3);
  EXPECT_EQ(j["output_tokens"], 9);
  EXPECT_EQ(j["input_tokens"], 35);
  EXPECT_NEAR(j["itl_ms"]["p90"].get<double>(), 420, 1e-6);
  EXPECT_EQ(j["errors"]["http_503"], 2);
  EXPECT_FALSE(j.contains("goodput_req_s"));
  EXPECT_FALSE(j.contains("slo_ms"));
}

TEST(ToJsonTest, GoodputAndSloAppearWhenAnSloIsSet) {
  const std::vector<RequestRecord> records = Workload();
  const nlohmann::json j = ToJson(Summarize(records, 4.0, Slo(200, {}, {})));
  EXPECT_NEAR(j["goodput_req_s"].get<double>(), 0.5, kTol);
  EXPECT_EQ(j["requests_good"], 2);
  EXPECT_EQ(j["slo_ms"]["ttft"], 200.0);
  EXPECT_FALSE(j["slo_ms"].contains("tpot"));
}

}  // namespace
}  // namespace glimpse::tools::loadgen
