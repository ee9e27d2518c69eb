// A small Prometheus metrics registry and the engine's metric set.
//
// MetricsRegistry owns metric families (a name, help text, a type) and, per family, one
// series per distinct label set. It hands out raw pointers to the series (Counter, Gauge,
// Histogram); they stay valid for the registry's lifetime. RenderText() writes the
// Prometheus text exposition format 0.0.4 (what `/metrics` serves, content type
// MetricsRegistry::kContentType).
//
// Thread-safety:
//   - Updates (Counter::Add, Gauge::Set, Histogram::Observe, ...) are lock-free relaxed
//     atomics: the engine thread updates while an HTTP thread renders, and neither waits for
//     the other. A render may see a histogram observation counted in its bucket but not yet in
//     _sum (never the reverse for _count: _count is derived from the buckets, so it always
//     equals the +Inf bucket).
//   - Registration (Add*) and RenderText() take the registry's mutex, so they may run from any
//     thread. Callback gauges run on the rendering thread, under that mutex: the callback must
//     be thread-safe against whoever owns the data it reads, and must not call the registry.
#ifndef GLIMPSE_SERVER_METRICS_H_
#define GLIMPSE_SERVER_METRICS_H_

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/check.h"

namespace glimpse::server {

// Constant labels of one series, in the order they are rendered, e.g.
// {{"model_name", "llama-3-8b"}}. Names match [a-zA-Z_][a-zA-Z0-9_]* and must not start with
// "__"; values are any UTF-8 (escaped on output).
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonic counter. Integer adds are exact up to 2^64 (a single atomic fetch_add);
// fractional adds (e.g. seconds) accumulate in a separate double. Lock-free.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Increment() { integer_.fetch_add(1, std::memory_order_relaxed); }
  // `n` must be >= 0 (a counter never goes down; a negative add is a bug and CHECK-fails).
  template <std::integral T>
  void Add(T n) {
    if constexpr (std::is_signed_v<T>) CHECK(n >= 0);
    integer_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  // `v` must be >= 0 and not NaN (CHECK).
  void Add(double v);

  double Value() const;

 private:
  friend class MetricsRegistry;
  std::atomic<uint64_t> integer_{0};
  std::atomic<double> fraction_{0.0};
};

// A value that goes up and down. Lock-free.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Sub(double v) { value_.fetch_add(-v, std::memory_order_relaxed); }
  // Raises the value to `v` if `v` is larger (a running maximum).
  void SetMax(double v);

  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into fixed buckets given at creation. Bucket i counts values
// v <= upper_bounds[i] (and > upper_bounds[i-1]); one more bucket catches the rest (+Inf).
// Rendered cumulatively as Prometheus expects. Lock-free.
class Histogram {
 public:
  // `upper_bounds` must be finite and strictly increasing (MetricsRegistry::AddHistogram
  // validates and reports an error; this constructor CHECKs).
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // NaN lands in the +Inf bucket (and makes _sum NaN), as in the Go client.
  void Observe(double v);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // Per-bucket (not cumulative) counts; size upper_bounds().size() + 1, last is +Inf.
  std::vector<uint64_t> BucketCounts() const;
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> upper_bounds_;
  // upper_bounds_.size() + 1 counters.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
};

// Owns metric families and renders them. See the file comment for thread-safety.
class MetricsRegistry {
 public:
  // The Content-Type of RenderText()'s output.
  static constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Each Add* creates one series. Adding a second series to an existing family needs the same
  // type and help text and a different label set. Errors: InvalidArgument for a bad name, label
  // or bucket list; AlreadyExists for a repeated (name, labels). Returned pointers are owned by
  // the registry and valid for its lifetime.
  absl::StatusOr<Counter*> AddCounter(std::string_view name, std::string_view help,
                                      MetricLabels labels = {});
  absl::StatusOr<Gauge*> AddGauge(std::string_view name, std::string_view help,
                                  MetricLabels labels = {});
  absl::StatusOr<Histogram*> AddHistogram(std::string_view name, std::string_view help,
                                          std::vector<double> upper_bounds,
                                          MetricLabels labels = {});
  // A gauge whose value `callback` computes at render time (e.g. KV usage read from the
  // engine's published snapshot). See the file comment for what the callback may do.
  absl::Status AddCallbackGauge(std::string_view name, std::string_view help,
                                std::function<double()> callback, MetricLabels labels = {});
  // A counter whose cumulative value `callback` reads at render time from a monotonic count
  // kept elsewhere (e.g. a backend's CUDA graph replays). Same rules as callback gauges.
  absl::Status AddCallbackCounter(std::string_view name, std::string_view help,
                                  std::function<double()> callback, MetricLabels labels = {});

  // The Prometheus text exposition format 0.0.4, families in registration order.
  std::string RenderText() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family;
  struct Series;

  // Finds or creates the family and appends an empty series after validating everything.
  absl::StatusOr<Series*> AddSeries(std::string_view name, std::string_view help, Type type,
                                    MetricLabels labels) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Family>> families_ ABSL_GUARDED_BY(mu_);
};

// Formats a sample value as Prometheus expects: integers without exponent or fraction
// ("3", "1000000000000000000000"), others in the shortest form that round-trips ("0.25",
// "1e-07"), and "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double v);

// Escapes `\`, newline (and, for label values, `"`) as the text format requires.
std::string EscapeHelpText(std::string_view help);
std::string EscapeLabelValue(std::string_view value);

// The engine's metrics (DESIGN.md, "Interfaces users see"), as pointers into a registry that
// owns them and must outlive this struct. The engine thread updates them
// (`metrics.prompt_tokens->Add(n)`); any thread renders the registry.
struct EngineMetrics {
  // Histograms, seconds.
  Histogram* time_to_first_token_seconds = nullptr;
  Histogram* inter_token_latency_seconds = nullptr;
  Histogram* e2e_request_latency_seconds = nullptr;
  Histogram* request_queue_time_seconds = nullptr;
  // Gauges.
  Gauge* num_requests_running = nullptr;
  Gauge* num_requests_waiting = nullptr;
  Gauge* kv_cache_usage_ratio = nullptr;  // used KV blocks / all blocks, in [0, 1]
  // Counters (`glimpse_<name>_total`).
  Counter* prompt_tokens = nullptr;
  Counter* generation_tokens = nullptr;
  Counter* prefix_cache_queries = nullptr;  // prompt tokens looked up in the prefix cache
  Counter* prefix_cache_hits = nullptr;     // of those, tokens found
  Counter* nucleus_rows_decided = nullptr;  // rows without top-k sampled from candidates
  Counter* adjusted_rows_decided = nullptr;  // biased or penalised rows, from candidates
  Counter* sampled_rows_fetched = nullptr;  // rows fetched whole after a reduced step
  Counter* sampled_rows_gathered = nullptr;  // a few of a row's logits fetched instead
  Counter* num_preemptions = nullptr;
  Counter* forward_tokens = nullptr;  // tokens through the model forward, all requests
  Counter* engine_steps = nullptr;
  Counter* spec_draft_tokens = nullptr;
  Counter* spec_accepted_tokens = nullptr;
  // Generate stream messages merged into an earlier one while its write was in flight
  // (EngineServiceOptions::stream_chunks_merged).
  Counter* stream_chunks_merged = nullptr;
  // Sequences per decode step: a histogram, and since-start mean and maximum gauges.
  Histogram* decode_batch_size = nullptr;
  Gauge* decode_batch_size_mean = nullptr;
  Gauge* decode_batch_size_max = nullptr;

  // Records one decode step of `num_seqs` sequences into the three decode_batch_size
  // metrics. Call from one thread (the engine's): the mean is recomputed from the histogram.
  void ObserveDecodeBatch(int64_t num_seqs) const;
};

// Registers the engine metric set in `registry` with `labels` (e.g. {{"model_name", ...}}) on
// every series. Fails (AlreadyExists) if called twice with the same labels.
absl::StatusOr<EngineMetrics> CreateEngineMetrics(MetricsRegistry& registry,
                                                  const MetricLabels& labels = {});

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_METRICS_H_
