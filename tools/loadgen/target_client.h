// The server `glimpse loadgen` measures, and how one request is sent to it and timed.
//
// Two kinds of target, chosen by URL:
//   grpc://HOST:PORT        glimpse's own gRPC API (glimpse.v1 Engine.Generate, streamed);
//   http://HOST:PORT[/v1]   any OpenAI-compatible server: POST {prefix}/completions or
//                           {prefix}/chat/completions with "stream": true, read as SSE.
// Every request is greedy (temperature 0) so runs are repeatable; its timings are what the
// client saw (see stats.h for the definitions built on them).
//
// Thread-safety: a TargetClient is immutable after Connect; Send, CountTokens and VocabSize
// may be called from any number of threads at once (gRPC stubs are thread-safe; every HTTP
// request opens its own connection).
#ifndef GLIMPSE_TOOLS_LOADGEN_TARGET_CLIENT_H_
#define GLIMPSE_TOOLS_LOADGEN_TARGET_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tools/loadgen/stats.h"
#include "tools/loadgen/workload.h"

namespace glimpse::tools::loadgen {

struct Target {
  bool grpc = true;
  std::string host;
  int port = 0;
  std::string path_prefix;  // HTTP only: the API base path, e.g. "/v1".

  std::string ToString() const;
};

// Parses grpc://HOST:PORT or http://HOST:PORT[/PREFIX] (PREFIX defaults to /v1).
absl::StatusOr<Target> ParseTargetUrl(const std::string& url);

// True for localhost, 127.0.0.0/8 and ::1.
bool IsLoopbackHost(const std::string& host);

// Which OpenAI endpoint an HTTP target is sent to.
enum class Endpoint { kCompletions, kChat };

struct SendOptions {
  Endpoint endpoint = Endpoint::kCompletions;
  bool ignore_eos = false;
  // The "model" field of HTTP requests; empty leaves it out (servers then use their only model).
  std::string model;
  // A request taking longer fails with error kind "timeout" (it is cancelled / disconnected).
  double request_timeout_s = 600;
};

class TargetClient {
 public:
  // For gRPC, waits up to 10 s for the channel; fails with Unavailable and a hint otherwise.
  static absl::StatusOr<std::unique_ptr<TargetClient>> Connect(const Target& target,
                                                               const SendOptions& options);
  ~TargetClient();

  // Sends one streaming request and records its timings. Never throws; failures come back as a
  // record with ok = false and an error kind ("grpc_14", "http_429", "connect", "timeout", ...).
  // Prompt form: gRPC and /completions send item.prompt_ids when present, else prompt_text;
  // /chat/completions sends item.messages, else prompt_text as one user message.
  RequestRecord Send(const WorkItem& item) const;

  // Number of tokens the target's tokenizer makes of `text` (gRPC Tokenize, without special
  // tokens); nullopt for HTTP targets or on error.
  std::optional<int32_t> CountTokens(std::string_view text) const;

  // The model's vocabulary size (gRPC GetModelInfo); nullopt for HTTP targets or on error.
  std::optional<int32_t> VocabSize() const;

  const Target& target() const { return target_; }

 private:
  struct GrpcState;
  TargetClient(Target target, SendOptions options);
  RequestRecord SendGrpc(const WorkItem& item) const;
  RequestRecord SendHttp(const WorkItem& item) const;

  const Target target_;
  const SendOptions options_;
  std::unique_ptr<GrpcState> grpc_;
};

// A plain HTTP/1.1 GET to a loopback-or-allowed server (for Prometheus /metrics); the body of a
// 200 response, else an error saying what happened. timeout_s bounds connect + read.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    double timeout_s);

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_TARGET_CLIENT_H_
