#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::server {
namespace {

bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = IsAsciiAlpha(c) || c == '_' || c == ':' || (i > 0 && IsAsciiDigit(c));
    if (!ok) return false;
  }
  return true;
}

// [a-zA-Z_][a-zA-Z0-9_]*, and not the reserved "__" prefix.
bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = IsAsciiAlpha(c) || c == '_' || (i > 0 && IsAsciiDigit(c));
    if (!ok) return false;
  }
  return true;
}

// Drops one trailing +Inf (it is implicit) and checks the rest are finite and increasing.
absl::Status NormalizeBounds(std::vector<double>& bounds) {
  if (!bounds.empty() && bounds.back() == INFINITY) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          "histogram bucket bounds must be finite (only the last may be +Inf, which is "
          "implicit); remove NaN/Inf bounds");
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram bucket bounds must be strictly increasing, but bound ", i, " (",
                       FormatMetricValue(bounds[i]), ") <= bound ", i - 1, " (",
                       FormatMetricValue(bounds[i - 1]), "); sort and deduplicate them"));
    }
  }
  return absl::OkStatus();
}

MetricLabels SortedLabels(MetricLabels labels) {
  std::sort(labels.begin(), labels.end());
  return labels;
}

// Appends `name{k="v",...,le="..."} value\n`.
void AppendSample(std::string& out, std::string_view name, const MetricLabels& labels,
                  const std::string* le, const std::string& value) {
  out.append(name);
  if (!labels.empty() || le != nullptr) {
    out.push_back('{');
    bool first = true;
    for (const auto& [key, label_value] : labels) {
      if (!first) out.push_back(',');
      first = false;
      out.append(key);
      out.append("=\"");
      out.append(EscapeLabelValue(label_value));
      out.push_back('"');
    }
    if (le != nullptr) {
      if (!first) out.push_back(',');
      out.append("le=\"");
      out.append(*le);
      out.push_back('"');
    }
    out.push_back('}');
  }
  out.push_back(' ');
  out.append(value);
  out.push_back('\n');
}

}  // namespace

// ---- Values --------------------------------------------------------------------------------

void Counter::Add(double v) {
  CHECK(v >= 0);  // Also rejects NaN.
  fraction_.fetch_add(v, std::memory_order_relaxed);
}

double Counter::Value() const {
  return static_cast<double>(integer_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

void Gauge::SetMax(double v) {
  double current = value_.load(std::memory_order_relaxed);
  while (v > current && !value_.compare_exchange_weak(current, v, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1)) {
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    CHECK(std::isfinite(upper_bounds_[i]));
    CHECK(i == 0 || upper_bounds_[i - 1] < upper_bounds_[i]);
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  // First bound >= v, i.e. the bucket with v <= le; past the end is +Inf. NaN compares false
  // with everything, so it is sent to +Inf explicitly.
  const size_t bucket =
      std::isnan(v)
          ? upper_bounds_.size()
          : static_cast<size_t>(std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) -
                                upper_bounds_.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> counts(upper_bounds_.size() + 1);
  for (size_t i = 0; i < counts.size(); ++i) {
    counts[i] = buckets_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
  }
  return total;
}

// ---- Formatting ----------------------------------------------------------------------------

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";  // Also -0.
  // Fixed notation of a finite double needs at most ~330 characters.
  char buf[400];
  std::to_chars_result result;
  if (v == std::trunc(v)) {
    result = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  } else {
    result = std::to_chars(buf, buf + sizeof(buf), v);  // Shortest round-trip form.
  }
  CHECK(result.ec == std::errc());
  return std::string(buf, result.ptr);
}

namespace {

// Prometheus text-format escaping: backslash and newline always, '"' in label values only.
std::string Escape(std::string_view text, bool escape_quote) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '"' && escape_quote) {
      out.append("\\\"");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string EscapeHelpText(std::string_view help) { return Escape(help, /*escape_quote=*/false); }

std::string EscapeLabelValue(std::string_view value) {
  return Escape(value, /*escape_quote=*/true);
}

// ---- Registry ------------------------------------------------------------------------------

// One time series: a label set and exactly one of the value holders, matching the family type.
struct MetricsRegistry::Series {
  MetricLabels labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::function<double()> callback;  // A gauge computed at render time (instead of `gauge`).
  std::unique_ptr<Histogram> histogram;
};

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  Type type;
  std::vector<std::unique_ptr<Series>> series;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

absl::StatusOr<MetricsRegistry::Series*> MetricsRegistry::AddSeries(std::string_view name,
                                                                    std::string_view help,
                                                                    Type type,
                                                                    MetricLabels labels) {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("metric name \"", std::string(name),
                                                   "\" is invalid; use [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    if (!IsValidLabelName(label) || (type == Type::kHistogram && label == "le")) {
      return absl::InvalidArgumentError(
          absl::StrCat("label name \"", label, "\" of metric ", std::string(name),
                       " is invalid; use [a-zA-Z_][a-zA-Z0-9_]*, not starting with \"__\" "
                       "(and not \"le\" on a histogram)"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (labels[j].first == label) {
        return absl::InvalidArgumentError(absl::StrCat("label \"", label, "\" appears twice on ",
                                                       std::string(name), "; give it once"));
      }
    }
  }

  Family* family = nullptr;
  for (const auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (family == nullptr) {
    families_.push_back(std::make_unique<Family>());
    family = families_.back().get();
    family->name = std::string(name);
    family->help = std::string(help);
    family->type = type;
  } else {
    if (family->type != type) {
      return absl::InvalidArgumentError(
          absl::StrCat("metric ", family->name,
                       " is already registered with another type; use a different name"));
    }
    if (family->help != help) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metric ", family->name, " is already registered with other help text; use the same"));
    }
    const MetricLabels sorted = SortedLabels(labels);
    for (const auto& s : family->series) {
      if (SortedLabels(s->labels) == sorted) {
        return absl::AlreadyExistsError(
            absl::StrCat("metric ", family->name,
                         " already has a series with these labels; reuse the pointer returned "
                         "the first time"));
      }
    }
  }
  family->series.push_back(std::make_unique<Series>());
  Series* series = family->series.back().get();
  series->labels = std::move(labels);
  return series;
}

absl::StatusOr<Counter*> MetricsRegistry::AddCounter(std::string_view name, std::string_view help,
                                                     MetricLabels labels) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Series * series, AddSeries(name, help, Type::kCounter, std::move(labels)));
  series->counter = std::make_unique<Counter>();
  return series->counter.get();
}

absl::StatusOr<Gauge*> MetricsRegistry::AddGauge(std::string_view name, std::string_view help,
                                                 MetricLabels labels) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Series * series, AddSeries(name, help, Type::kGauge, std::move(labels)));
  series->gauge = std::make_unique<Gauge>();
  return series->gauge.get();
}

absl::StatusOr<Histogram*> MetricsRegistry::AddHistogram(std::string_view name,
                                                         std::string_view help,
                                                         std::vector<double> upper_bounds,
                                                         MetricLabels labels) {
  if (absl::Status status = NormalizeBounds(upper_bounds); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram ", std::string(name), ": ", status.message()));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Series * series, AddSeries(name, help, Type::kHistogram, std::move(labels)));
  series->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return series->histogram.get();
}

absl::Status MetricsRegistry::AddCallbackGauge(std::string_view name, std::string_view help,
                                               std::function<double()> callback,
                                               MetricLabels labels) {
  if (!callback) {
    return absl::InvalidArgumentError(
        absl::StrCat("callback gauge ", std::string(name), " needs a non-empty callback"));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Series * series, AddSeries(name, help, Type::kGauge, std::move(labels)));
  series->callback = std::move(callback);
  return absl::OkStatus();
}

absl::Status MetricsRegistry::AddCallbackCounter(std::string_view name, std::string_view help,
                                                 std::function<double()> callback,
                                                 MetricLabels labels) {
  if (!callback) {
    return absl::InvalidArgumentError(
        absl::StrCat("callback counter ", std::string(name), " needs a non-empty callback"));
  }
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Series * series, AddSeries(name, help, Type::kCounter, std::move(labels)));
  series->callback = std::move(callback);
  return absl::OkStatus();
}

std::string MetricsRegistry::RenderText() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& family : families_) {
    const char* type_name = "";
    switch (family->type) {
      case Type::kCounter:
        type_name = "counter";
        break;
      case Type::kGauge:
        type_name = "gauge";
        break;
      case Type::kHistogram:
        type_name = "histogram";
        break;
    }
    out.append("# HELP ").append(family->name).append(" ");
    out.append(EscapeHelpText(family->help)).append("\n");
    out.append("# TYPE ").append(family->name).append(" ").append(type_name).append("\n");
    for (const auto& series : family->series) {
      switch (family->type) {
        case Type::kCounter: {
          if (series->callback) {  // A cumulative value kept elsewhere (AddCallbackCounter).
            AppendSample(out, family->name, series->labels, nullptr,
                         FormatMetricValue(series->callback()));
            break;
          }
          const Counter& c = *series->counter;
          const double fraction = c.fraction_.load(std::memory_order_relaxed);
          const uint64_t integer = c.integer_.load(std::memory_order_relaxed);
          // Exact integers stay exact beyond 2^53.
          AppendSample(out, family->name, series->labels, nullptr,
                       fraction == 0 ? std::to_string(integer)
                                     : FormatMetricValue(static_cast<double>(integer) + fraction));
          break;
        }
        case Type::kGauge: {
          const double value = series->callback ? series->callback() : series->gauge->Value();
          AppendSample(out, family->name, series->labels, nullptr, FormatMetricValue(value));
          break;
        }
        case Type::kHistogram: {
          const Histogram& h = *series->histogram;
          const std::vector<uint64_t> counts = h.BucketCounts();
          const double sum = h.Sum();
          const std::string bucket_name = family->name + "_bucket";
          uint64_t cumulative = 0;
          for (size_t i = 0; i < counts.size(); ++i) {
            cumulative += counts[i];
            const std::string le =
                i < h.upper_bounds().size() ? FormatMetricValue(h.upper_bounds()[i]) : "+Inf";
            AppendSample(out, bucket_name, series->labels, &le, std::to_string(cumulative));
          }
          AppendSample(out, family->name + "_sum", series->labels, nullptr, FormatMetricValue(sum));
          AppendSample(out, family->name + "_count", series->labels, nullptr,
                       std::to_string(cumulative));
          break;
        }
      }
    }
  }
  return out;
}

// ---- Engine metric set ---------------------------------------------------------------------

namespace {

// Bucket bounds, seconds; vLLM's, with finer low ends for fast local models.
const std::vector<double>& TtftBuckets() {
  static const auto* const kBuckets = new std::vector<double>{
      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
      1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
  return *kBuckets;
}

const std::vector<double>& InterTokenBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3, 0.4,
                              0.5,   0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
  return *kBuckets;
}

const std::vector<double>& RequestLatencyBuckets() {
  static const auto* const kBuckets = new std::vector<double>{
      0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
      30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return *kBuckets;
}

const std::vector<double>& QueueTimeBuckets() {
  static const auto* const kBuckets = new std::vector<double>{
      0.001, 0.005, 0.01, 0.025, 0.05,  0.1,   0.25,  0.5,   1.0,    2.5,   5.0,
      10.0,  20.0,  30.0, 60.0,  120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return *kBuckets;
}

const std::vector<double>& BatchSizeBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  return *kBuckets;
}

}  // namespace

void EngineMetrics::ObserveDecodeBatch(int64_t num_seqs) const {
  const double n = static_cast<double>(num_seqs);
  decode_batch_size->Observe(n);
  decode_batch_size_max->SetMax(n);
  const uint64_t count = decode_batch_size->Count();
  if (count > 0) {
    decode_batch_size_mean->Set(decode_batch_size->Sum() / static_cast<double>(count));
  }
}

absl::StatusOr<EngineMetrics> CreateEngineMetrics(MetricsRegistry& registry,
                                                  const MetricLabels& labels) {
  EngineMetrics m;
  ASSIGN_OR_RETURN(m.time_to_first_token_seconds,
                   registry.AddHistogram("glimpse_time_to_first_token_seconds",
                                         "Time from request arrival to its first output token, "
                                         "in seconds.",
                                         TtftBuckets(), labels));
  ASSIGN_OR_RETURN(m.inter_token_latency_seconds,
                   registry.AddHistogram("glimpse_inter_token_latency_seconds",
                                         "Time between consecutive output tokens of a request, "
                                         "in seconds.",
                                         InterTokenBuckets(), labels));
  ASSIGN_OR_RETURN(m.e2e_request_latency_seconds,
                   registry.AddHistogram("glimpse_e2e_request_latency_seconds",
                                         "Time from request arrival to its last output token, "
                                         "in seconds.",
                                         RequestLatencyBuckets(), labels));
  ASSIGN_OR_RETURN(m.request_queue_time_seconds,
                   registry.AddHistogram("glimpse_request_queue_time_seconds",
                                         "Time a request waited before it was first scheduled, "
                                         "in seconds.",
                                         QueueTimeBuckets(), labels));
  ASSIGN_OR_RETURN(m.num_requests_running,
                   registry.AddGauge("glimpse_num_requests_running",
                                     "Requests currently scheduled on the engine.", labels));
  ASSIGN_OR_RETURN(m.num_requests_waiting,
                   registry.AddGauge("glimpse_num_requests_waiting",
                                     "Requests waiting to be scheduled.", labels));
  ASSIGN_OR_RETURN(m.kv_cache_usage_ratio,
                   registry.AddGauge("glimpse_kv_cache_usage_ratio",
                                     "Fraction of KV cache blocks in use, from 0 to 1.", labels));
  ASSIGN_OR_RETURN(m.prompt_tokens,
                   registry.AddCounter("glimpse_prompt_tokens_total",
                                       "Prompt tokens of admitted requests.", labels));
  ASSIGN_OR_RETURN(m.generation_tokens, registry.AddCounter("glimpse_generation_tokens_total",
                                                            "Output tokens generated.", labels));
  ASSIGN_OR_RETURN(m.prefix_cache_queries,
                   registry.AddCounter("glimpse_prefix_cache_queries_total",
                                       "Prompt tokens looked up in the prefix cache.", labels));
  ASSIGN_OR_RETURN(m.prefix_cache_hits,
                   registry.AddCounter("glimpse_prefix_cache_hits_total",
                                       "Prompt tokens found in the prefix cache.", labels));
  ASSIGN_OR_RETURN(m.nucleus_rows_decided,
                   registry.AddCounter("glimpse_nucleus_rows_decided_total",
                                       "Rows sampled without top-k (top-p, min-p or plain "
                                       "temperature) from the device's candidates and weight "
                                       "sum alone.",
                                       labels));
  ASSIGN_OR_RETURN(m.adjusted_rows_decided,
                   registry.AddCounter("glimpse_adjusted_rows_decided_total",
                                       "Rows with a logit bias or penalties (greedy, top-k or "
                                       "nucleus) sampled from the device's candidates, with a "
                                       "few gathered logits where needed.",
                                       labels));
  ASSIGN_OR_RETURN(m.sampled_rows_gathered,
                   registry.AddCounter("glimpse_sampled_rows_gathered_total",
                                       "Biased or penalised rows that fetched a few tokens' "
                                       "logits besides their candidates instead of the row.",
                                       labels));
  ASSIGN_OR_RETURN(m.sampled_rows_fetched,
                   registry.AddCounter("glimpse_sampled_rows_fetched_total",
                                       "Logits rows fetched whole after their step because the "
                                       "device's candidates did not decide the sample (raise "
                                       "--nucleus_candidates if this is a large share).",
                                       labels));
  ASSIGN_OR_RETURN(m.num_preemptions,
                   registry.AddCounter("glimpse_num_preemptions_total",
                                       "Requests preempted to free KV cache blocks.", labels));
  ASSIGN_OR_RETURN(m.forward_tokens,
                   registry.AddCounter("glimpse_forward_tokens_total",
                                       "Tokens run through the model forward pass (prefill and "
                                       "decode, all requests).",
                                       labels));
  ASSIGN_OR_RETURN(m.engine_steps, registry.AddCounter("glimpse_engine_steps_total",
                                                       "Engine steps executed.", labels));
  ASSIGN_OR_RETURN(m.decode_batch_size, registry.AddHistogram("glimpse_decode_batch_size",
                                                              "Sequences decoded per engine step.",
                                                              BatchSizeBuckets(), labels));
  ASSIGN_OR_RETURN(m.decode_batch_size_mean,
                   registry.AddGauge("glimpse_decode_batch_size_mean",
                                     "Mean sequences per decode step since start.", labels));
  ASSIGN_OR_RETURN(m.decode_batch_size_max,
                   registry.AddGauge("glimpse_decode_batch_size_max",
                                     "Largest sequences per decode step since start.", labels));
  ASSIGN_OR_RETURN(m.spec_draft_tokens,
                   registry.AddCounter("glimpse_spec_draft_tokens_total",
                                       "Draft tokens proposed by speculative decoding.", labels));
  ASSIGN_OR_RETURN(m.spec_accepted_tokens,
                   registry.AddCounter("glimpse_spec_accepted_tokens_total",
                                       "Draft tokens accepted by the target model.", labels));
  ASSIGN_OR_RETURN(m.stream_chunks_merged,
                   registry.AddCounter("glimpse_stream_chunks_merged_total",
                                       "Streamed chunks sent inside an earlier message of their "
                                       "completion because that message's write was still in "
                                       "flight (a slow client or a busy server).",
                                       labels));
  return m;
}

}  // namespace glimpse::server
