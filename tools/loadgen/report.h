// What `glimpse loadgen` writes once its levels have run: the human table (stdout), the JSON
// file (every level's summary, server-side counters and every request's timings), the plots
// (SVG: latency CDFs per level; throughput and latency against concurrency or rate) and a
// markdown report that embeds them.
//
// Thread-safety: pure functions over finished results.
#ifndef GLIMPSE_TOOLS_LOADGEN_REPORT_H_
#define GLIMPSE_TOOLS_LOADGEN_REPORT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/loadgen/stats.h"

namespace glimpse::tools::loadgen {

// One load level: a closed-loop concurrency, or an open-loop arrival rate (capped in flight).
struct LevelResult {
  bool open_loop = false;
  int32_t concurrency = 0;  // Closed loop: clients; open loop: the in-flight cap.
  double rate = 0;          // Open loop: requests/s.
  int64_t requests_planned = 0;
  int64_t requests_not_sent = 0;  // Left when --max_duration_s ran out.
  std::vector<RequestRecord> records;  // In completion order.
  double level_start_s = 0;            // Same clock as the records.
  Summary summary;
  // Server-side counter increases over the level (server_counters.h keys); empty when the
  // server's metrics could not be read.
  std::map<std::string, double> server_counters;
  nlohmann::json kv_usage;  // KvUsageSampler::Summary(); empty when not sampled.

  // "c=16" or "rate=2/s".
  std::string Label() const;
};

// Describes the run for the report header and JSON (free-form key -> value).
using RunDescription = std::vector<std::pair<std::string, std::string>>;

// The markdown table of all levels (also printed to stdout): one row per level.
std::string ResultsTable(const std::vector<LevelResult>& levels);
// One row of that table, for printing as each level finishes, and its header lines.
std::string ResultsTableHeader(bool open_loop);
std::string ResultsTableRow(const LevelResult& level);

// The server-side counters table (rows: counters, columns: levels); "" when no level has any.
std::string ServerCountersTable(const std::vector<LevelResult>& levels);

// The whole run as JSON: the description, "levels" (each level's summary with concurrency/rate,
// "server" counters, "kv_usage", and "requests": one object per request with ok, error,
// start_ms (from the level's start), ttft_ms, tpot_ms, e2e_ms, input_tokens, output_tokens and
// itl_ms), and the last level's summary copied to the top level.
nlohmann::json RunJson(const RunDescription& description, const std::vector<LevelResult>& levels);

// Writes ttft_cdf.svg, tpot_cdf.svg, itl_cdf.svg, e2e_cdf.svg and, with two or more levels,
// throughput.svg and latency.svg into `dir` (created if missing). Returns the file names written.
absl::StatusOr<std::vector<std::string>> WritePlots(const std::string& dir,
                                                    const std::vector<LevelResult>& levels);

// A markdown report: description, results table, server counters, and the plots (paths relative
// to the report, `plots_relative_dir/<name>`; none when `plots` is empty).
std::string MarkdownReport(const std::string& title, const RunDescription& description,
                           const std::vector<LevelResult>& levels,
                           const std::string& plots_relative_dir,
                           const std::vector<std::string>& plots);

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_REPORT_H_
