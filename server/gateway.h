// The OpenAI-compatible HTTP gateway: POST /v1/completions and /v1/chat/completions
// (streaming SSE or not), GET /v1/models, /health and /metrics, served by the asynchronous
// HTTP server and forwarded over glimpse.v1 gRPC to one or more `glimpse serve` replicas
// chosen by the BackendPool's router (least outstanding requests with prefix affinity).
//
// Per request: the body is parsed and validated (openai_request.h); chat messages are
// rendered and tokenized by a replica (Tokenize with chat input, so the chat template lives
// with the model); each prompt becomes one streaming Generate call whose messages are turned
// into OpenAI's SSE events or one JSON body (openai_response.h). A replica that fails before
// its first token is retried once on another. A client that disconnects cancels its calls,
// and the replica frees the request's KV within a step. Errors use OpenAI's JSON shape and
// DESIGN.md's status mapping; nothing a client sends can crash the gateway.
//
// Ownership: owns the HTTP server, the backend pool and the gateway's metrics.
// Thread-safety: Start/Shutdown from one thread; requests are served on the HTTP I/O
// threads and gRPC's callback threads.
#ifndef GLIMPSE_SERVER_GATEWAY_H_
#define GLIMPSE_SERVER_GATEWAY_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/async_http_server.h"
#include "server/backend_pool.h"
#include "server/metrics.h"

namespace glimpse::server {

struct GatewayOptions {
  AsyncHttpServerOptions http;
  BackendPoolOptions backends;
  std::string api_keys_file;  // One key per line; empty: no authentication.
  // More Prometheus text appended to /metrics: `glimpse serve --http_port` passes its engine's
  // metrics here, so one scrape of the in-process gateway sees both (DESIGN.md). Called on the
  // HTTP server's threads; must be thread-safe. Unset for a standalone gateway.
  std::function<std::string()> extra_metrics;
};

// What the gateway knows of the served model (from a replica's GetModelInfo).
struct ServedModel {
  std::string name;
  uint32_t max_context_length = 0;
  std::string chat_template_name;  // The family in use, e.g. "chatml", "llama3", "default".
};

class Gateway {
 public:
  explicit Gateway(GatewayOptions options);
  ~Gateway();  // Shutdown()s.

  // Starts the backend pool, learns the served model from a healthy replica (waiting up to
  // `model_info_timeout` for one), then listens. Errors: bad options, no port.
  absl::Status Start(absl::Duration model_info_timeout = absl::Seconds(30));
  void Shutdown();
  int port() const { return http_ != nullptr ? http_->port() : 0; }
  int32_t open_streams() const { return open_streams_.load(); }

  // Internal: the per-request machinery reports here (any thread).
  class RequestCall;
  void CountResponse(int http_status, double seconds);
  void StreamOpened();
  void StreamClosed();
  ServedModel served_model() const;
  BackendPool& pool() { return *pool_; }

 private:
  void HandleCompletion(bool chat, HttpRequest request, std::shared_ptr<Responder> responder);
  void HandleModels(std::shared_ptr<Responder> responder);
  void HandleHealth(std::shared_ptr<Responder> responder);
  void HandleMetrics(std::shared_ptr<Responder> responder);
  bool Authorized(const HttpRequest& request) const;
  absl::Status LearnServedModel(absl::Duration timeout);

  const GatewayOptions options_;
  std::unique_ptr<BackendPool> pool_;
  std::unique_ptr<AsyncHttpServer> http_;
  absl::flat_hash_set<std::string> api_keys_;  // Immutable after Start.

  mutable absl::Mutex mu_;
  ServedModel served_ ABSL_GUARDED_BY(mu_);

  MetricsRegistry registry_;
  Histogram* latency_seconds_ = nullptr;
  Gauge* open_streams_gauge_ = nullptr;
  absl::Mutex counters_mu_;
  std::vector<std::pair<int, Counter*>> responses_by_status_ ABSL_GUARDED_BY(counters_mu_);
  std::atomic<int32_t> open_streams_{0};
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_GATEWAY_H_
