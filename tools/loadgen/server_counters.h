// Server-side figures for a load-generator run: Prometheus counters read from the server before
// and after a run (their difference is what the run caused), and the KV-cache usage gauge sampled
// while it ran. Reported next to the client-side statistics so a reader can check them against
// each other (output tokens counted by the client == generation tokens counted by the server) and
// see what the client cannot (prefix-cache hits, preemptions, speculation acceptance).
//
// Understands glimpse's metric names (DESIGN.md) and, for peers, vLLM's (`vllm:` prefix) and
// llama.cpp's llama-server (`llamacpp:` prefix, with --metrics); a figure the server does not
// export is simply absent.
//
// Thread-safety: pure functions; KvUsageSampler is internally synchronised.
#ifndef GLIMPSE_TOOLS_LOADGEN_SERVER_COUNTERS_H_
#define GLIMPSE_TOOLS_LOADGEN_SERVER_COUNTERS_H_

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace glimpse::tools::loadgen {

// Sample values of a Prometheus text exposition (format 0.0.4), summed over label sets per
// metric name (histogram series keep their _bucket/_sum/_count names). Comment and malformed
// lines are skipped; NaN values are skipped.
using MetricValues = std::map<std::string, double>;
MetricValues ParsePrometheusText(std::string_view text);

// The figures loadgen reports, each a counter known under several servers' names.
struct CounterSpec {
  std::string key;                 // Our name in reports, e.g. "generation_tokens".
  std::vector<std::string> names;  // Metric names to try, first found wins.
};
const std::vector<CounterSpec>& ReportedCounters();

// Counter increases between two scrapes, by ReportedCounters() key; only counters present in
// both. Adds derived ratios when their parts are present: "prefix_cache_hit_rate" (hits /
// queries) and "spec_acceptance_rate" (accepted / draft tokens).
std::map<std::string, double> CounterDeltas(const MetricValues& before, const MetricValues& after);

// The KV-cache usage gauge (fraction in [0, 1]) from a scrape, if the server exports one.
std::optional<double> KvUsage(const MetricValues& values);

// Polls a scrape function every `period_s` on its own thread between Start and Stop and keeps
// the KV usage seen: peak and mean.
class KvUsageSampler {
 public:
  // `scrape` returns the metric text, or nullopt when the server could not be read.
  KvUsageSampler(std::function<std::optional<std::string>()> scrape, double period_s);
  ~KvUsageSampler();  // Stops.
  void Start();
  void Stop();
  // {"samples", "peak", "mean"}; an empty object when nothing was sampled.
  nlohmann::json Summary() const;

 private:
  void Loop();

  const std::function<std::optional<std::string>()> scrape_;
  const double period_s_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<double> samples_;  // Guarded by mu_.
};

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_SERVER_COUNTERS_H_
