// Feeds the engine's events into the Prometheus EngineMetrics: latency histograms from the
// EngineObserver hooks (engine thread), counters for tokens, steps and preemptions, and the
// decode batch size. Gauges that describe state (running/waiting requests, KV usage, prefix
// cache counters) are refreshed from Engine::GetLoad() by RefreshFromLoad(), which the
// /metrics handler calls before rendering.
//
// Ownership: borrows the EngineMetrics (must outlive it). Thread-safety: hooks run on the
// engine thread, RefreshFromLoad on the HTTP thread; all updates are metric atomics.
#ifndef GLIMPSE_SERVER_ENGINE_METRICS_OBSERVER_H_
#define GLIMPSE_SERVER_ENGINE_METRICS_OBSERVER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#include "scheduler/engine.h"
#include "scheduler/engine_observer.h"
#include "server/metrics.h"

namespace glimpse::server {

class EngineMetricsObserver final : public scheduler::EngineObserver {
 public:
  explicit EngineMetricsObserver(const EngineMetrics& metrics) : metrics_(metrics) {}

  void OnRequestScheduled(double queue_seconds) override;
  void OnFirstToken(double ttft_seconds) override;
  void OnInterTokenLatency(double seconds) override;
  void OnRequestFinished(double e2e_seconds, int32_t prompt_tokens,
                         int32_t generated_tokens) override;
  void OnStep(int32_t num_tokens, int32_t num_decoding, int32_t num_preemptions) override;

  // Sets the state gauges and catches the running-total counters (prefix cache, nucleus rows)
  // up with `load`.
  void RefreshFromLoad(const scheduler::EngineLoad& load);

 private:
  const EngineMetrics& metrics_;
  // Totals already added to the counters (the load holds running totals).
  absl::Mutex mu_;
  int64_t reported_queries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_nucleus_decided_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_adjusted_decided_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_rows_gathered_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reported_rows_fetched_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_ENGINE_METRICS_OBSERVER_H_
