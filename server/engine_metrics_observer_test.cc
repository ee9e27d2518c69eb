#include "server/engine_metrics_observer.h"

#include <string>

#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

TEST(EngineMetricsObserverTest, EventsLandInTheNamedMetrics) {
  MetricsRegistry registry;
  auto metrics = CreateEngineMetrics(registry);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EngineMetricsObserver observer(*metrics);
  observer.OnRequestScheduled(0.01);
  observer.OnFirstToken(0.2);
  observer.OnInterTokenLatency(0.03);
  observer.OnInterTokenLatency(0.05);
  observer.OnRequestFinished(1.5, 100, 64);
  observer.OnStep(120, 16, 0);
  observer.OnStep(20, 20, 2);
  scheduler::EngineLoad load;
  load.num_running = 3;
  load.num_waiting = 4;
  load.kv_blocks_used = 25;
  load.kv_blocks_total = 100;
  load.prefix_cache_queried_tokens = 500;
  load.prefix_cache_hit_tokens = 320;
  load.num_nucleus_rows_decided = 90;
  load.num_adjusted_rows_decided = 40;
  load.num_sampled_rows_gathered = 5;
  load.num_sampled_rows_fetched = 7;
  observer.RefreshFromLoad(load);
  observer.RefreshFromLoad(load);  // Same totals: nothing more.
  EXPECT_EQ(metrics->time_to_first_token_seconds->Count(), 1u);
  EXPECT_EQ(metrics->inter_token_latency_seconds->Count(), 2u);
  EXPECT_DOUBLE_EQ(metrics->inter_token_latency_seconds->Sum(), 0.08);
  EXPECT_EQ(metrics->request_queue_time_seconds->Count(), 1u);
  EXPECT_EQ(metrics->e2e_request_latency_seconds->Count(), 1u);
  EXPECT_EQ(metrics->prompt_tokens->Value(), 100);
  EXPECT_EQ(metrics->generation_tokens->Value(), 64);
  EXPECT_EQ(metrics->engine_steps->Value(), 2);
  EXPECT_EQ(metrics->forward_tokens->Value(), 140);
  EXPECT_EQ(metrics->num_preemptions->Value(), 2);
  EXPECT_EQ(metrics->decode_batch_size_max->Value(), 20);
  EXPECT_DOUBLE_EQ(metrics->decode_batch_size_mean->Value(), 18);
  EXPECT_EQ(metrics->num_requests_running->Value(), 3);
  EXPECT_EQ(metrics->num_requests_waiting->Value(), 4);
  EXPECT_DOUBLE_EQ(metrics->kv_cache_usage_ratio->Value(), 0.25);
  EXPECT_EQ(metrics->prefix_cache_queries->Value(), 500);
  EXPECT_EQ(metrics->prefix_cache_hits->Value(), 320);
  EXPECT_EQ(metrics->nucleus_rows_decided->Value(), 90);
  EXPECT_EQ(metrics->adjusted_rows_decided->Value(), 40);
  EXPECT_EQ(metrics->sampled_rows_gathered->Value(), 5);
  EXPECT_EQ(metrics->sampled_rows_fetched->Value(), 7);
  const std::string text = registry.RenderText();
  EXPECT_NE(text.find("glimpse_prefix_cache_hits_total 320"), std::string::npos) << text;
  EXPECT_NE(text.find("glimpse_time_to_first_token_seconds_count 1"), std::string::npos);
}

}  // namespace
}  // namespace glimpse::server
