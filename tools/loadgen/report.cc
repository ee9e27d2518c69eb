#include "tools/loadgen/report.h"

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/loadgen/server_counters.h"
#include "tools/loadgen/svg_plot.h"

namespace glimpse::tools::loadgen {
namespace {

constexpr double kMs = 1000.0;

// Level values as the x axis of the "against concurrency/rate" plots.
double LevelX(const LevelResult& level) {
  return level.open_loop ? level.rate : static_cast<double>(level.concurrency);
}

std::string FormatRate(double rate) { return absl::StrFormat("%g", rate); }

// Per-level series of one per-request metric, in milliseconds.
struct LevelSamples {
  std::vector<double> ttft_ms, tpot_ms, itl_ms, e2e_ms;
};

LevelSamples SamplesOf(const LevelResult& level) {
  LevelSamples s;
  for (const RequestRecord& r : level.records) {
    if (!r.ok) continue;
    const RequestMetrics m = MetricsOf(r);
    s.e2e_ms.push_back(m.e2e_s * kMs);
    if (m.ttft_s) s.ttft_ms.push_back(*m.ttft_s * kMs);
    if (m.tpot_s) s.tpot_ms.push_back(*m.tpot_s * kMs);
    for (double gap : m.itl_s) s.itl_ms.push_back(gap * kMs);
  }
  return s;
}

}  // namespace

std::string LevelResult::Label() const {
  return open_loop ? absl::StrCat("rate=", FormatRate(rate), "/s") : absl::StrCat("c=", concurrency);
}

std::string ResultsTableHeader(bool open_loop) {
  return absl::StrCat(
      "| ", open_loop ? "rate req/s" : "concurrency",
      " | ok | failed | req/s | output tok/s | total tok/s | TTFT p50 / p90 / p99 ms "
      "| TPOT p50 / p90 / p99 ms | ITL p50 / p99 ms | E2E p50 / p99 ms |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
}

std::string ResultsTableRow(const LevelResult& level) {
  const Summary& s = level.summary;
  return absl::StrFormat(
      "| %s | %d | %d | %.2f | %.1f | %.1f | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f "
      "| %.1f / %.1f | %.0f / %.0f |\n",
      level.open_loop ? FormatRate(level.rate) : absl::StrCat(level.concurrency), s.requests_ok,
      s.requests_failed, s.req_s, s.output_tok_s, s.total_tok_s, s.ttft.p50_ms, s.ttft.p90_ms,
      s.ttft.p99_ms, s.tpot.p50_ms, s.tpot.p90_ms, s.tpot.p99_ms, s.itl.p50_ms, s.itl.p99_ms,
      s.e2e.p50_ms, s.e2e.p99_ms);
}

std::string ResultsTable(const std::vector<LevelResult>& levels) {
  if (levels.empty()) return "";
  std::string out = ResultsTableHeader(levels.front().open_loop);
  for (const LevelResult& level : levels) out += ResultsTableRow(level);
  return out;
}

std::string ServerCountersTable(const std::vector<LevelResult>& levels) {
  std::vector<std::string> keys;
  for (const CounterSpec& spec : ReportedCounters()) keys.push_back(spec.key);
  keys.push_back("prefix_cache_hit_rate");
  keys.push_back("spec_acceptance_rate");
  std::vector<std::string> rows;
  for (const std::string& key : keys) {
    bool any = false;
    std::string row = absl::StrCat("| ", key, " |");
    for (const LevelResult& level : levels) {
      auto it = level.server_counters.find(key);
      if (it == level.server_counters.end()) {
        absl::StrAppend(&row, " n/a |");
        continue;
      }
      any = true;
      const bool is_rate = key.find("rate") != std::string::npos;
      absl::StrAppend(&row, " ", is_rate ? absl::StrFormat("%.3f", it->second)
                                         : absl::StrFormat("%.0f", it->second), " |");
    }
    if (any) rows.push_back(row + "\n");
  }
  // KV usage sampled while the level ran.
  bool any_kv = false;
  std::string kv_row = "| kv_usage peak / mean |";
  for (const LevelResult& level : levels) {
    if (level.kv_usage.contains("peak")) {
      any_kv = true;
      absl::StrAppend(&kv_row, absl::StrFormat(" %.3g / %.3g |", level.kv_usage["peak"].get<double>(),
                                               level.kv_usage["mean"].get<double>()));
    } else {
      absl::StrAppend(&kv_row, " n/a |");
    }
  }
  if (any_kv) rows.push_back(kv_row + "\n");
  if (rows.empty()) return "";
  std::string out = "| server counter (increase over the level) |";
  std::string rule = "|---|";
  for (const LevelResult& level : levels) {
    absl::StrAppend(&out, " ", level.Label(), " |");
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (const std::string& row : rows) out += row;
  return out;
}

nlohmann::json RunJson(const RunDescription& description, const std::vector<LevelResult>& levels) {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& [key, value] : description) json[key] = value;
  json["levels"] = nlohmann::json::array();
  for (const LevelResult& level : levels) {
    nlohmann::json l = ToJson(level.summary);
    l["concurrency"] = level.concurrency;
    if (level.open_loop) l["rate"] = level.rate;
    l["requests_planned"] = level.requests_planned;
    l["requests_not_sent"] = level.requests_not_sent;
    l["server"] = nlohmann::json::object();
    for (const auto& [key, value] : level.server_counters) l["server"][key] = value;
    l["kv_usage"] = level.kv_usage.is_null() ? nlohmann::json::object() : level.kv_usage;
    nlohmann::json requests = nlohmann::json::array();
    for (const RequestRecord& r : level.records) {
      nlohmann::json q = {{"ok", r.ok},
                          {"start_ms", (r.start_s - level.level_start_s) * kMs},
                          {"input_tokens", r.input_tokens},
                          {"output_tokens", r.output_tokens},
                          {"e2e_ms", (r.end_s - r.start_s) * kMs}};
      if (!r.ok) q["error"] = r.error_kind;
      if (!r.error_detail.empty()) q["error_detail"] = r.error_detail;
      const RequestMetrics m = MetricsOf(r);
      if (m.ttft_s) q["ttft_ms"] = *m.ttft_s * kMs;
      if (m.tpot_s) q["tpot_ms"] = *m.tpot_s * kMs;
      nlohmann::json itl = nlohmann::json::array();
      for (double gap : m.itl_s) itl.push_back(gap * kMs);
      q["itl_ms"] = std::move(itl);
      requests.push_back(std::move(q));
    }
    l["requests"] = std::move(requests);
    json["levels"].push_back(std::move(l));
  }
  // The last level's figures also sit at the top level (a single-level run reads naturally).
  if (!levels.empty()) {
    for (auto& [key, value] : json["levels"].back().items()) {
      if (key != "requests") json[key] = value;
    }
  }
  return json;
}

absl::StatusOr<std::vector<std::string>> WritePlots(const std::string& dir,
                                                    const std::vector<LevelResult>& levels) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create the plot directory ", dir, ": ", error.message()));
  }
  std::vector<std::string> written;
  auto write = [&](const std::string& name, const std::string& svg) -> absl::Status {
    const std::string path = (std::filesystem::path(dir) / name).string();
    if (!WriteTextFile(path, svg)) {
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
    written.push_back(name);
    return absl::OkStatus();
  };
  std::vector<LevelSamples> samples;
  for (const LevelResult& level : levels) samples.push_back(SamplesOf(level));
  struct CdfPlot {
    const char* file;
    const char* title;
    std::vector<double> LevelSamples::*values;
  };
  const CdfPlot cdfs[] = {
      {"ttft_cdf.svg", "Time to first token", &LevelSamples::ttft_ms},
      {"tpot_cdf.svg", "Time per output token", &LevelSamples::tpot_ms},
      {"itl_cdf.svg", "Inter-token latency", &LevelSamples::itl_ms},
      {"e2e_cdf.svg", "End-to-end latency", &LevelSamples::e2e_ms},
  };
  for (const CdfPlot& plot : cdfs) {
    std::vector<PlotSeries> series;
    for (size_t i = 0; i < levels.size(); ++i) {
      series.push_back(CdfSeries(levels[i].Label(), samples[i].*plot.values));
    }
    ChartOptions options;
    options.title = absl::StrCat(plot.title, " (CDF per level)");
    options.x_label = "milliseconds";
    options.y_label = "fraction of requests";
    if (plot.values == &LevelSamples::itl_ms) options.y_label = "fraction of gaps";
    options.markers = false;
    options.step = true;
    if (absl::Status s = write(plot.file, RenderLineChartSvg(options, series)); !s.ok()) return s;
  }
  if (levels.size() >= 2) {
    const bool open_loop = levels.front().open_loop;
    const std::string x_label = open_loop ? "request rate (req/s)" : "concurrency";
    PlotSeries throughput{"output tok/s", {}, {}};
    PlotSeries total{"total tok/s", {}, {}};
    PlotSeries ttft50{"TTFT p50", {}, {}}, ttft99{"TTFT p99", {}, {}};
    PlotSeries tpot50{"TPOT p50", {}, {}}, tpot99{"TPOT p99", {}, {}};
    for (const LevelResult& level : levels) {
      const double x = LevelX(level);
      const Summary& s = level.summary;
      throughput.x.push_back(x), throughput.y.push_back(s.output_tok_s);
      total.x.push_back(x), total.y.push_back(s.total_tok_s);
      ttft50.x.push_back(x), ttft50.y.push_back(s.ttft.p50_ms);
      ttft99.x.push_back(x), ttft99.y.push_back(s.ttft.p99_ms);
      tpot50.x.push_back(x), tpot50.y.push_back(s.tpot.p50_ms);
      tpot99.x.push_back(x), tpot99.y.push_back(s.tpot.p99_ms);
    }
    ChartOptions options;
    options.x_label = x_label;
    options.log_x = !open_loop;  // Concurrency levels are usually geometric (1, 4, 16, 64).
    options.title = absl::StrCat("Throughput against ", x_label);
    options.y_label = "tokens per second";
    if (absl::Status s = write("throughput.svg", RenderLineChartSvg(options, {throughput, total}));
        !s.ok()) {
      return s;
    }
    options.title = absl::StrCat("Latency against ", x_label);
    options.y_label = "milliseconds";
    options.log_y = true;  // TTFT and TPOT differ by orders of magnitude.
    if (absl::Status s = write("latency.svg",
                               RenderLineChartSvg(options, {ttft50, ttft99, tpot50, tpot99}));
        !s.ok()) {
      return s;
    }
  }
  return written;
}

std::string MarkdownReport(const std::string& title, const RunDescription& description,
                           const std::vector<LevelResult>& levels,
                           const std::string& plots_relative_dir,
                           const std::vector<std::string>& plots) {
  std::string md = absl::StrCat("## ", title, "\n\n");
  for (const auto& [key, value] : description) absl::StrAppend(&md, "- ", key, ": `", value, "`\n");
  absl::StrAppend(&md, "\n", ResultsTable(levels), "\n");
  int64_t not_sent = 0;
  std::map<std::string, int64_t> errors;
  for (const LevelResult& level : levels) {
    not_sent += level.requests_not_sent;
    for (const auto& [kind, count] : level.summary.errors_by_kind) errors[kind] += count;
  }
  if (!errors.empty()) {
    md += "Errors by kind:";
    for (const auto& [kind, count] : errors) absl::StrAppend(&md, " `", kind, "` ", count, ";");
    md += "\n\n";
  }
  if (not_sent > 0) {
    absl::StrAppend(&md, not_sent, " planned requests were not sent: the time limit ran out.\n\n");
  }
  const std::string counters = ServerCountersTable(levels);
  if (!counters.empty()) absl::StrAppend(&md, counters, "\n");
  for (const std::string& plot : plots) {
    const std::string path =
        plots_relative_dir.empty() ? plot : absl::StrCat(plots_relative_dir, "/", plot);
    absl::StrAppend(&md, "![", plot, "](", path, ")\n");
  }
  if (!plots.empty()) md += "\n";
  return md;
}

}  // namespace glimpse::tools::loadgen
