// The engine's time per decode step behind the real gRPC front end: engine_overhead_bench's
// engine (an InstantStepRunner, so the forward pass takes no time) served by glimpse.v1.Engine
// (server::EngineService) on a loopback port, with every request a streaming Generate call of
// an in-process callback client, as `glimpse serve` runs it. What the streams' listeners do on
// the engine thread — building the response messages, starting gRPC writes — shows here and
// not in engine_overhead_bench.
//
//   bazel run -c opt //tools/bench:grpc_overhead_bench [-- --steps=200 --batch_sizes=1,64,256]
//
// Same table as engine_overhead_bench. On a small machine the clients' and gRPC's threads
// compete with the engine for CPUs, which inflates the wall-clock intervals: the engine
// thread's CPU time per step (last column) is the figure that compares across runs.
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "scheduler/engine.h"
#include "server/grpc_service.h"
#include "server/health.h"
#include "server/loaded_model.h"
#include "tools/bench/overhead_bench_main.h"

namespace glimpse::bench {
namespace {

// The calls of a run that have ended. Thread-safety: every field under `mu`.
struct CallsEnded {
  absl::Mutex mu;
  int ended = 0;
  int failed = 0;
  int expected = 0;
  bool All() const { return ended == expected; }
};

// Reads one Generate call's responses to the end, then counts it ended.
// Thread-safety: gRPC calls its reactions one at a time; `calls` is the run's.
class GenerateReader final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateReader(v1::Engine::Stub& stub, const v1::GenerateRequest& request, CallsEnded& calls)
      : calls_(calls) {
    stub.async()->Generate(&context_, &request, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (ok) StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&calls_.mu);
    if (!status.ok()) {
      ++calls_.failed;
      std::fprintf(stderr, "grpc_overhead_bench: a Generate call failed: %s\n",
                   status.error_message().c_str());
    }
    ++calls_.ended;
  }

 private:
  grpc::ClientContext context_;
  v1::GenerateResponse response_;
  CallsEnded& calls_;
};

void Run(const OverheadRunSpec& spec, scheduler::Engine& engine) {
  const OverheadMode& mode = spec.mode;
  const int32_t batch = spec.batch;
  const int32_t steps = spec.steps;
  server::ServerLifecycle lifecycle;
  server::EngineServiceOptions options;
  options.served_model_name = "bench";
  server::EngineService service(engine, *spec.loaded->tokenizer, lifecycle, options);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "grpc_overhead_bench: cannot listen on a loopback port\n");
    std::exit(1);
  }
  lifecycle.Set(v1::HEALTH_STATE_READY);

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  std::unique_ptr<v1::Engine::Stub> stub = v1::Engine::NewStub(channel);
  CallsEnded calls;
  calls.expected = batch;
  std::vector<std::unique_ptr<GenerateReader>> readers;
  for (int32_t i = 0; i < batch; ++i) {
    v1::GenerateRequest request;
    request.set_request_id(absl::StrCat("r", i));
    for (const int32_t id : OverheadPrompt(i)) {
      request.mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
    }
    request.mutable_sampling()->set_temperature(mode.temperature);
    request.mutable_sampling()->set_top_k(mode.top_k);
    if (mode.num_logprobs >= 0) {
      request.mutable_output()->set_logprobs(static_cast<uint32_t>(mode.num_logprobs));
    }
    request.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(steps));
    request.mutable_stopping()->set_ignore_eos(true);
    readers.push_back(std::make_unique<GenerateReader>(*stub, request, calls));
  }
  {
    absl::MutexLock lock(&calls.mu);
    calls.mu.Await(absl::Condition(&calls, &CallsEnded::All));
    if (calls.failed > 0) std::exit(1);
  }
  server->Shutdown();
}

}  // namespace
}  // namespace glimpse::bench

int main(int argc, char** argv) {
  return glimpse::bench::OverheadBenchMain(
      argc, argv, "grpc_overhead_bench",
      "engine time per full-batch decode step behind the gRPC service (loopback clients)",
      glimpse::bench::Run);
}
