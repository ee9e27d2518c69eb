// The glimpse.v1.Engine gRPC service (proto/glimpse/v1/engine.proto) over a scheduler::Engine,
// on gRPC's callback API.
//
// Generate is a ServerWriteReactor fed by the request's RequestStream: the stream's listener
// runs on the engine thread and only posts the call's write scheduling to the service's
// WriteDispatcher, whose threads build the responses and start the writes (the engine thread
// never does that work, nor blocks on the network); one write is in flight at a time and
// outputs that pile up meanwhile are sent as consecutive writes. A cancelled call (client gone,
// deadline passed) cancels the request, and the engine frees its KV blocks within one step. The
// other RPCs are unary and answer at once.
//
// Ownership: borrows the engine, the tokenizer and the lifecycle (not owned; all must outlive
// the grpc::Server that serves this service). Owns the set of in-flight request ids and the
// write dispatcher (its threads stop with the service; a listener that runs later, as
// Engine::Stop's final outputs may, does its work inline).
// Thread-safety: every RPC method may run on any gRPC thread at once; shared state is the
// mutex-guarded id set and the engine's own thread-safe API.
#ifndef GLIMPSE_SERVER_GRPC_SERVICE_H_
#define GLIMPSE_SERVER_GRPC_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "model/tokenizer.h"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "proto/glimpse/v1/engine.pb.h"
#include "scheduler/engine.h"
#include "server/health.h"
#include "server/metrics.h"
#include "server/request_conversion.h"
#include "server/write_dispatcher.h"

namespace glimpse::server {

// Static facts the service reports (GetModelInfo, GetServerInfo) that the engine does not know.
struct EngineServiceOptions {
  std::string served_model_name;
  std::string model_path;
  std::string model_type = "llama";  // GGUF general.architecture.
  std::string weights_dtype;         // "f16", "f32", ...
  std::string chat_template;         // GGUF tokenizer.chat_template; empty if none.
  std::string backend = "cpu";
  std::string device;                // e.g. the CPU model name.
  std::string preemption_mode = "recompute";
  uint64_t kv_cache_bytes = 0;  // Over all tensor-parallel ranks' devices.
  std::string kv_cache_dtype = "fp32";  // "fp32", "f16" or "bf16"
  int32_t tensor_parallel_size = 1;
  // Threads that build and send the Generate responses (WriteDispatcher); 0: the default,
  // DefaultWriteThreads().
  int32_t write_threads = 0;
  // Counts Chunk messages merged into an earlier one of their completion because its write
  // was still in flight (chunk_merge.h); may be null. Must outlive the service.
  Counter* stream_chunks_merged = nullptr;
};

// Reported as GetServerInfoResponse.version and GetLoadsResponse.version.
inline constexpr char kGlimpseVersion[] = "0.1.0";

// absl::Status → grpc::Status (the codes have the same numbers).
grpc::Status ToGrpcStatus(const absl::Status& status);

class EngineService final : public glimpse::v1::Engine::CallbackService {
 public:
  EngineService(scheduler::Engine& engine, const model::Tokenizer& tokenizer,
                ServerLifecycle& lifecycle, EngineServiceOptions options);
  ~EngineService() override;

  grpc::ServerWriteReactor<glimpse::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const glimpse::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const glimpse::v1::TokenizeRequest* request,
                                     glimpse::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const glimpse::v1::DetokenizeRequest* request,
                                       glimpse::v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const glimpse::v1::AbortRequest* request,
                                  glimpse::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* HealthCheck(grpc::CallbackServerContext* context,
                                        const glimpse::v1::HealthCheckRequest* request,
                                        glimpse::v1::HealthCheckResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const glimpse::v1::GetModelInfoRequest* request,
                                         glimpse::v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const glimpse::v1::GetServerInfoRequest* request,
                                          glimpse::v1::GetServerInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetLoads(grpc::CallbackServerContext* context,
                                     const glimpse::v1::GetLoadsRequest* request,
                                     glimpse::v1::GetLoadsResponse* response) override;

  // Aborts every in-flight Generate (drain timeout at shutdown). Returns how many.
  int AbortAll();
  // Generate calls not yet finished (their reactors are still alive).
  int num_active_calls() const;

  const ServedModelInfo& served_model() const { return served_; }

 private:
  friend class GenerateReactor;
  grpc::ServerUnaryReactor* TokenizeChat(grpc::CallbackServerContext* context,
                                         const v1::TokenizeRequest* request,
                                         v1::TokenizeResponse* response);
  void FillTokenizeResponse(const v1::TokenizeRequest& request, const std::vector<int32_t>& ids,
                            v1::TokenizeResponse* response) const;

  // The reactor of a finished call forgets its request id.
  void Forget(const std::string& request_id);
  // Recent output tokens per second, from the engine's cumulative counter.
  double GenThroughput(int64_t generation_tokens);

  scheduler::Engine& engine_;
  const model::Tokenizer& tokenizer_;
  ServerLifecycle& lifecycle_;
  const EngineServiceOptions options_;
  // Runs the Generate reactors' Pump for their listeners; shared with the listeners.
  const std::shared_ptr<WriteDispatcher> write_dispatcher_;
  ServedModelInfo served_;
  const std::chrono::system_clock::time_point start_time_;

  mutable absl::Mutex mu_;
  // Ids of this service's requests whose call has not ended.
  absl::flat_hash_set<std::string> active_ ABSL_GUARDED_BY(mu_);
  // Throughput window: the previous (time, generated tokens) sample.
  std::chrono::steady_clock::time_point throughput_time_ ABSL_GUARDED_BY(mu_);
  int64_t throughput_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  double throughput_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_GRPC_SERVICE_H_
