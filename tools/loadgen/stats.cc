#include "tools/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace glimpse::tools::loadgen {
namespace {

constexpr double kMsPerSecond = 1000.0;

nlohmann::json LatencyJson(const LatencyStats& s) {
  return nlohmann::json{{"mean", s.mean_ms}, {"p50", s.p50_ms}, {"p90", s.p90_ms},
                        {"p99", s.p99_ms},   {"std", s.std_ms}, {"count", s.count}};
}

// A request meets an SLO when its value is at most the limit (vLLM: `slo >= value`).
bool Meets(const std::optional<double>& limit_ms, double value_s) {
  return !limit_ms || value_s * kMsPerSecond <= *limit_ms;
}

}  // namespace

double Percentile(std::vector<double> values, double percent) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double p = std::clamp(percent, 0.0, 100.0);
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  // numpy's `_lerp`, bit for bit: from the nearer end, so that it is exact at both.
  const double diff = values[hi] - values[lo];
  return frac >= 0.5 ? values[hi] - diff * (1 - frac) : values[lo] + diff * frac;
}

LatencyStats Describe(std::vector<double> values_s) {
  LatencyStats s;
  s.count = static_cast<int64_t>(values_s.size());
  if (values_s.empty()) return s;
  double sum = 0;
  for (double v : values_s) sum += v;
  const double mean = sum / static_cast<double>(values_s.size());
  double sq = 0;
  for (double v : values_s) sq += (v - mean) * (v - mean);
  s.mean_ms = mean * kMsPerSecond;
  s.std_ms = std::sqrt(sq / static_cast<double>(values_s.size())) * kMsPerSecond;
  s.p50_ms = Percentile(values_s, 50) * kMsPerSecond;
  s.p90_ms = Percentile(values_s, 90) * kMsPerSecond;
  s.p99_ms = Percentile(std::move(values_s), 99) * kMsPerSecond;
  return s;
}

RequestMetrics MetricsOf(const RequestRecord& r) {
  RequestMetrics m;
  m.e2e_s = r.end_s - r.start_s;
  if (r.output_tokens >= 1) m.ttft_s = r.first_token_s - r.start_s;
  if (r.output_tokens > 1) {
    m.tpot_s = (m.e2e_s - *m.ttft_s) / static_cast<double>(r.output_tokens - 1);
  }
  for (size_t i = 1; i < r.token_times_s.size(); ++i) {
    if (r.token_times_s[i] == r.token_times_s[i - 1]) continue;  // Same chunk.
    m.itl_s.push_back(r.token_times_s[i] - r.token_times_s[i - 1]);
  }
  return m;
}

Summary Summarize(std::span<const RequestRecord> records, double wall_seconds,
                  const SloOptions& slo) {
  Summary out;
  out.wall_s = wall_seconds;
  out.slo = slo;
  std::vector<double> ttfts, tpots, itls, e2es;
  int64_t good = 0;
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++out.requests_failed;
      ++out.errors_by_kind[r.error_kind.empty() ? std::string("unknown") : r.error_kind];
      continue;
    }
    ++out.requests_ok;
    out.input_tokens += r.input_tokens;
    out.output_tokens += r.output_tokens;
    RequestMetrics m = MetricsOf(r);
    const double e2e = m.e2e_s;
    e2es.push_back(e2e);
    const double ttft = m.ttft_s.value_or(0);  // vLLM's value for goodput when no token arrived.
    if (m.ttft_s) ttfts.push_back(*m.ttft_s);
    // vLLM: "if output_len <= 1, we regard tpot as 0 for goodput".
    const double tpot = m.tpot_s.value_or(0);
    if (m.tpot_s) tpots.push_back(*m.tpot_s);
    itls.insert(itls.end(), m.itl_s.begin(), m.itl_s.end());
    if (Meets(slo.ttft_ms, ttft) && Meets(slo.tpot_ms, tpot) && Meets(slo.e2e_ms, e2e)) ++good;
  }
  if (wall_seconds > 0) {
    out.req_s = static_cast<double>(out.requests_ok) / wall_seconds;
    out.output_tok_s = static_cast<double>(out.output_tokens) / wall_seconds;
    out.total_tok_s = static_cast<double>(out.input_tokens + out.output_tokens) / wall_seconds;
  }
  if (slo.any()) {
    out.requests_good = good;
    out.goodput_req_s = wall_seconds > 0 ? static_cast<double>(good) / wall_seconds : 0.0;
  }
  out.ttft = Describe(std::move(ttfts));
  out.tpot = Describe(std::move(tpots));
  out.itl = Describe(std::move(itls));
  out.e2e = Describe(std::move(e2es));
  return out;
}

nlohmann::json ToJson(const Summary& s) {
  nlohmann::json j;
  j["requests_ok"] = s.requests_ok;
  j["requests_failed"] = s.requests_failed;
  j["input_tokens"] = s.input_tokens;
  j["output_tokens"] = s.output_tokens;
  j["wall_s"] = s.wall_s;
  j["req_s"] = s.req_s;
  j["output_tok_s"] = s.output_tok_s;
  j["total_tok_s"] = s.total_tok_s;
  j["ttft_ms"] = LatencyJson(s.ttft);
  j["tpot_ms"] = LatencyJson(s.tpot);
  j["itl_ms"] = LatencyJson(s.itl);
  j["e2e_ms"] = LatencyJson(s.e2e);
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [kind, count] : s.errors_by_kind) errors[kind] = count;
  j["errors"] = std::move(errors);
  if (s.slo.any()) {
    nlohmann::json slo = nlohmann::json::object();
    if (s.slo.ttft_ms) slo["ttft"] = *s.slo.ttft_ms;
    if (s.slo.tpot_ms) slo["tpot"] = *s.slo.tpot_ms;
    if (s.slo.e2e_ms) slo["e2e"] = *s.slo.e2e_ms;
    j["slo_ms"] = std::move(slo);
  }
  if (s.requests_good) j["requests_good"] = *s.requests_good;
  if (s.goodput_req_s) j["goodput_req_s"] = *s.goodput_req_s;
  return j;
}

}  // namespace glimpse::tools::loadgen
