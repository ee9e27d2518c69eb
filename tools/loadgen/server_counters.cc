#include "tools/loadgen/server_counters.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <numeric>

namespace glimpse::tools::loadgen {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<double> FirstFound(const MetricValues& values, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    auto it = values.find(name);
    if (it != values.end()) return it->second;
  }
  return std::nullopt;
}

}  // namespace

MetricValues ParsePrometheusText(std::string_view text) {
  MetricValues values;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = Trim(text.substr(pos, end - pos));
    pos = end + 1;
    if (line.empty() || line.front() == '#') continue;
    // name[{labels}] value [timestamp]. Label values may hold spaces and '}' inside quotes.
    size_t name_end = line.find_first_of("{ \t");
    if (name_end == std::string_view::npos || name_end == 0) continue;
    const std::string name(line.substr(0, name_end));
    std::string_view rest = line.substr(name_end);
    if (rest.front() == '{') {
      bool in_quotes = false;
      size_t i = 1;
      for (; i < rest.size(); ++i) {
        if (in_quotes && rest[i] == '\\') {
          ++i;
        } else if (rest[i] == '"') {
          in_quotes = !in_quotes;
        } else if (!in_quotes && rest[i] == '}') {
          break;
        }
      }
      if (i >= rest.size()) continue;  // Unterminated labels.
      rest = rest.substr(i + 1);
    }
    rest = Trim(rest);
    const std::string number(rest.substr(0, rest.find_first_of(" \t")));
    if (number.empty()) continue;
    char* parse_end = nullptr;
    const double value = std::strtod(number.c_str(), &parse_end);
    if (parse_end != number.c_str() + number.size() || std::isnan(value)) continue;
    values[name] += value;
  }
  return values;
}

const std::vector<CounterSpec>& ReportedCounters() {
  static const std::vector<CounterSpec> kCounters = {
      {"generation_tokens",
       {"glimpse_generation_tokens_total", "vllm:generation_tokens_total",
        "llamacpp:tokens_predicted_total"}},
      {"prompt_tokens",
       {"glimpse_prompt_tokens_total", "vllm:prompt_tokens_total",
        "llamacpp:prompt_tokens_total"}},
      {"forward_tokens", {"glimpse_forward_tokens_total"}},
      {"engine_steps", {"glimpse_engine_steps_total"}},
      {"prefix_cache_queries",
       {"glimpse_prefix_cache_queries_total", "vllm:prefix_cache_queries_total"}},
      {"prefix_cache_hits", {"glimpse_prefix_cache_hits_total", "vllm:prefix_cache_hits_total"}},
      {"preemptions", {"glimpse_num_preemptions_total", "vllm:num_preemptions_total"}},
      {"spec_draft_tokens",
       {"glimpse_spec_draft_tokens_total", "vllm:spec_decode_num_draft_tokens_total"}},
      {"spec_accepted_tokens",
       {"glimpse_spec_accepted_tokens_total", "vllm:spec_decode_num_accepted_tokens_total"}},
      {"requests_finished", {"glimpse_e2e_request_latency_seconds_count",
                             "vllm:e2e_request_latency_seconds_count"}},
  };
  return kCounters;
}

std::map<std::string, double> CounterDeltas(const MetricValues& before,
                                            const MetricValues& after) {
  std::map<std::string, double> deltas;
  for (const CounterSpec& spec : ReportedCounters()) {
    std::optional<double> a = FirstFound(before, spec.names);
    std::optional<double> b = FirstFound(after, spec.names);
    if (a && b) deltas[spec.key] = *b - *a;
  }
  auto ratio = [&](const char* key, const char* numerator, const char* denominator) {
    auto n = deltas.find(numerator);
    auto d = deltas.find(denominator);
    if (n != deltas.end() && d != deltas.end() && d->second > 0) {
      deltas[key] = n->second / d->second;
    }
  };
  ratio("prefix_cache_hit_rate", "prefix_cache_hits", "prefix_cache_queries");
  ratio("spec_acceptance_rate", "spec_accepted_tokens", "spec_draft_tokens");
  return deltas;
}

std::optional<double> KvUsage(const MetricValues& values) {
  if (auto v = FirstFound(values, {"glimpse_kv_cache_usage_ratio", "llamacpp:kv_cache_usage_ratio"})) {
    return v;
  }
  // vLLM: v1 names it kv_cache_usage_perc, v0 gpu_cache_usage_perc; both are fractions in [0, 1]
  // despite the name.
  return FirstFound(values, {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"});
}

KvUsageSampler::KvUsageSampler(std::function<std::optional<std::string>()> scrape,
                               double period_s)
    : scrape_(std::move(scrape)), period_s_(period_s) {}

KvUsageSampler::~KvUsageSampler() { Stop(); }

void KvUsageSampler::Start() {
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void KvUsageSampler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void KvUsageSampler::Loop() {
  using Clock = std::chrono::steady_clock;
  while (!stop_) {
    const Clock::time_point next =
        Clock::now() + std::chrono::microseconds(static_cast<int64_t>(period_s_ * 1e6));
    if (std::optional<std::string> text = scrape_()) {
      if (std::optional<double> usage = KvUsage(ParsePrometheusText(*text))) {
        std::lock_guard<std::mutex> lock(mu_);
        samples_.push_back(*usage);
      }
    }
    while (!stop_ && Clock::now() < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

nlohmann::json KvUsageSampler::Summary() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (samples_.empty()) return nlohmann::json::object();
  const double sum = std::accumulate(samples_.begin(), samples_.end(), 0.0);
  return {{"samples", samples_.size()},
          {"peak", *std::max_element(samples_.begin(), samples_.end())},
          {"mean", sum / static_cast<double>(samples_.size())}};
}

}  // namespace glimpse::tools::loadgen
