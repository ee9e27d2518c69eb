// Benchmark statistics for `glimpse loadgen`: per-request timing records and their summary
// (TTFT, TPOT, ITL, E2E latency, throughput, goodput, errors by kind), computed with the
// definitions of vLLM's benchmarks/benchmark_serving.py (`calculate_metrics`) so that numbers
// from glimpse, llama-server and vLLM runs mean the same thing.
//
// Definitions (every duration is measured by the client; records hold seconds, the summary
// reports milliseconds):
//   TTFT  = first_token_s - start_s                   (successful requests with >= 1 token)
//   E2E   = end_s - start_s                           (successful requests)
//   TPOT  = (E2E - TTFT) / (output_tokens - 1)        (successful requests with > 1 token)
//   ITL   = every gap between consecutive entries of token_times_s, pooled over all
//           successful requests. token_times_s holds one entry per streamed *chunk* that
//           carried at least one token, not one per token: when a server bundles several tokens
//           into one chunk, vLLM's request functions append one ITL value for that chunk (the
//           time since the previous chunk) and never split it per token, and so do we. Entries
//           equal to their predecessor are taken to be the same chunk (a recorder that pushed one
//           entry per token of a chunk) and add no gap.
//   Each latency is summarised by mean, population std (numpy's default ddof=0), and the 50th
//   (median), 90th and 99th percentiles with numpy's default `percentile` method ("linear"):
//   rank = p/100 * (n - 1), interpolated linearly between the two order statistics around it.
//   An empty set summarises to all zeros (vLLM's `np.mean(x or 0)`).
//   req/s = successful requests / wall; output tok/s = their output tokens / wall; total tok/s =
//   (their input + output tokens) / wall. Failed requests only count in requests_failed and
//   errors_by_kind.
//   Goodput = successful requests meeting every SLO that is set (value <= limit), per second of
//   wall time. As in vLLM, a request with <= 1 output token has TPOT 0 for goodput (it always
//   meets a TPOT SLO), and one with no output token has TTFT 0 for goodput.
//   Deliberate difference: vLLM would also put such a request's TTFT of 0 into the TTFT
//   statistics; we leave requests without a first token out of them.
#ifndef GLIMPSE_TOOLS_LOADGEN_STATS_H_
#define GLIMPSE_TOOLS_LOADGEN_STATS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace glimpse::tools::loadgen {

// What the client saw of one request. Times are seconds on one monotonic clock (any epoch; only
// differences are used).
struct RequestRecord {
  bool ok = false;
  std::string error_kind;  // When !ok: a short class ("http_503", "timeout", ...); "" = unknown.
  std::string error_detail;  // When !ok: the server's message, if it sent one.
  double start_s = 0;        // Request sent.
  double first_token_s = 0;  // First chunk carrying a token arrived (if output_tokens >= 1).
  double end_s = 0;          // Response complete.
  // Arrival time of each streamed chunk that carried >= 1 token, in order (see ITL above).
  std::vector<double> token_times_s;
  int32_t input_tokens = 0;
  int32_t output_tokens = 0;
};

// Service-level objectives for goodput; an unset one is not checked.
struct SloOptions {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2e_ms;

  bool any() const { return ttft_ms || tpot_ms || e2e_ms; }
};

// Summary of one latency metric, in milliseconds.
struct LatencyStats {
  int64_t count = 0;  // Number of values summarised.
  double mean_ms = 0;
  double std_ms = 0;  // Population standard deviation (ddof = 0).
  double p50_ms = 0;  // Median.
  double p90_ms = 0;
  double p99_ms = 0;
};

struct Summary {
  int64_t requests_ok = 0;
  int64_t requests_failed = 0;
  int64_t input_tokens = 0;   // Of successful requests.
  int64_t output_tokens = 0;  // Of successful requests.
  double wall_s = 0;
  double req_s = 0;
  double output_tok_s = 0;
  double total_tok_s = 0;
  SloOptions slo;
  // Set only when some SLO is: the successful requests that met all of them, and their rate.
  std::optional<int64_t> requests_good;
  std::optional<double> goodput_req_s;
  LatencyStats ttft;
  LatencyStats tpot;
  LatencyStats itl;
  LatencyStats e2e;
  std::map<std::string, int64_t> errors_by_kind;  // Failed requests by error_kind.
};

// One successful request's metrics by the definitions above, in seconds. ttft_s is set when it
// produced >= 1 token, tpot_s when > 1; itl_s holds its gaps between chunks.
struct RequestMetrics {
  std::optional<double> ttft_s;
  std::optional<double> tpot_s;
  double e2e_s = 0;
  std::vector<double> itl_s;
};
RequestMetrics MetricsOf(const RequestRecord& record);

// numpy.percentile(values, percent) with the default linear method; 0 for no values.
// `percent` is in [0, 100] (clamped).
double Percentile(std::vector<double> values, double percent);

// Mean, std and percentiles of `values_s` (seconds), reported in milliseconds.
LatencyStats Describe(std::vector<double> values_s);

// Summarises `records` over `wall_seconds` of benchmark time (rates are 0 if it is <= 0).
Summary Summarize(std::span<const RequestRecord> records, double wall_seconds,
                  const SloOptions& slo);

// The summary as loadgen's JSON: top-level requests_ok, requests_failed, input_tokens,
// output_tokens, wall_s, req_s, output_tok_s, total_tok_s, errors {kind: count}, and ttft_ms,
// tpot_ms, itl_ms, e2e_ms each {mean, p50, p90, p99, std, count}; plus slo_ms and
// requests_good, goodput_req_s when an SLO is set.
nlohmann::json ToJson(const Summary& summary);

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_STATS_H_
