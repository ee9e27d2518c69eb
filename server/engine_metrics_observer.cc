#include "server/engine_metrics_observer.h"

namespace glimpse::server {

void EngineMetricsObserver::OnRequestScheduled(double queue_seconds) {
  metrics_.request_queue_time_seconds->Observe(queue_seconds);
}

void EngineMetricsObserver::OnFirstToken(double ttft_seconds) {
  metrics_.time_to_first_token_seconds->Observe(ttft_seconds);
}

void EngineMetricsObserver::OnInterTokenLatency(double seconds) {
  metrics_.inter_token_latency_seconds->Observe(seconds);
}

void EngineMetricsObserver::OnRequestFinished(double e2e_seconds, int32_t prompt_tokens,
                                              int32_t generated_tokens) {
  metrics_.e2e_request_latency_seconds->Observe(e2e_seconds);
  metrics_.prompt_tokens->Add(static_cast<int64_t>(prompt_tokens));
  metrics_.generation_tokens->Add(static_cast<int64_t>(generated_tokens));
}

void EngineMetricsObserver::OnStep(int32_t num_tokens, int32_t num_decoding,
                                   int32_t num_preemptions) {
  metrics_.engine_steps->Increment();
  metrics_.forward_tokens->Add(static_cast<int64_t>(num_tokens));
  if (num_preemptions > 0) metrics_.num_preemptions->Add(static_cast<int64_t>(num_preemptions));
  if (num_decoding > 0) metrics_.ObserveDecodeBatch(num_decoding);
}

void EngineMetricsObserver::RefreshFromLoad(const scheduler::EngineLoad& load) {
  metrics_.num_requests_running->Set(load.num_running);
  metrics_.num_requests_waiting->Set(load.num_waiting);
  metrics_.kv_cache_usage_ratio->Set(
      load.kv_blocks_total > 0 ? static_cast<double>(load.kv_blocks_used) / load.kv_blocks_total
                               : 0.0);
  // Counters only move forward: add what the load gained since the last refresh (an older
  // snapshot arriving late adds nothing).
  auto catch_up = [](Counter* counter, int64_t total, int64_t& reported) {
    if (total > reported) {
      counter->Add(total - reported);
      reported = total;
    }
  };
  absl::MutexLock lock(&mu_);
  catch_up(metrics_.prefix_cache_queries, load.prefix_cache_queried_tokens, reported_queries_);
  catch_up(metrics_.prefix_cache_hits, load.prefix_cache_hit_tokens, reported_hits_);
  catch_up(metrics_.nucleus_rows_decided, load.num_nucleus_rows_decided, reported_nucleus_decided_);
  catch_up(metrics_.adjusted_rows_decided, load.num_adjusted_rows_decided,
           reported_adjusted_decided_);
  catch_up(metrics_.sampled_rows_gathered, load.num_sampled_rows_gathered, reported_rows_gathered_);
  catch_up(metrics_.sampled_rows_fetched, load.num_sampled_rows_fetched, reported_rows_fetched_);
}

}  // namespace glimpse::server
