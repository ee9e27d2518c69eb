#include "server/gateway_command.h"

#include <signal.h>
#include <sys/resource.h>

#include <cstdio>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

ABSL_DECLARE_FLAG(int32_t, port);
ABSL_DECLARE_FLAG(std::string, host);
ABSL_FLAG(std::string, backends, "",
          "gateway: comma-separated host:port list of `glimpse serve` replicas (gRPC).");
ABSL_FLAG(std::string, backends_dns, "",
          "gateway: a DNS name:port resolved to every replica address and re-resolved every "
          "10 s (e.g. a Kubernetes headless Service); combines with --backends.");
ABSL_FLAG(std::string, api_keys_file, "",
          "gateway (and serve --http_port): file of accepted API keys, one per line; clients send "
          "'Authorization: Bearer <key>'. Empty: no authentication.");
ABSL_FLAG(int32_t, http_threads, 2, "gateway: I/O threads of the HTTP server.");
ABSL_FLAG(int64_t, max_request_bytes, 16 << 20,
          "gateway: largest accepted request body; larger ones get 413.");
ABSL_FLAG(int32_t, affinity_prefix_tokens, 256,
          "gateway: prompts sharing this many leading tokens (4x as many bytes for text) go to "
          "the same replica, for its prefix cache.");
ABSL_FLAG(int32_t, affinity_slack, 4,
          "gateway: a prefix stays on its replica until that replica has this many more requests "
          "in flight than the least loaded one.");

namespace glimpse::server {

absl::StatusOr<GatewayOptions> GatewayOptionsFromFlags(std::vector<std::string> backends,
                                                       const std::string& host, int port) {
  GatewayOptions o;
  o.http.host = host;
  o.http.port = port;
  o.http.num_threads = std::max(1, absl::GetFlag(FLAGS_http_threads));
  if (absl::GetFlag(FLAGS_max_request_bytes) < 1024) {
    return absl::InvalidArgumentError("--max_request_bytes must be at least 1024");
  }
  o.http.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_request_bytes));
  o.backends.targets = std::move(backends);
  o.backends.dns_target = absl::GetFlag(FLAGS_backends_dns);
  o.backends.router.affinity_prefix_tokens = absl::GetFlag(FLAGS_affinity_prefix_tokens);
  o.backends.router.affinity_prefix_bytes = 4 * absl::GetFlag(FLAGS_affinity_prefix_tokens);
  o.backends.router.affinity_slack = absl::GetFlag(FLAGS_affinity_slack);
  if (o.backends.targets.empty() && o.backends.dns_target.empty()) {
    return absl::InvalidArgumentError(
        "no replicas: give --backends=host:port[,host:port...] or --backends_dns=name:port");
  }
  o.api_keys_file = absl::GetFlag(FLAGS_api_keys_file);
  return o;
}

// Thousands of client connections, each with its file descriptor: lift the soft limit to
// the hard one.
void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal;
}

int RunGatewayCommand() {
  RaiseFileLimit();
  BlockShutdownSignals();
  spdlog::set_default_logger(spdlog::stderr_color_mt("gateway"));
  std::vector<std::string> backends;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_backends), ',', absl::SkipEmpty())) {
    backends.emplace_back(b);
  }
  // --port is shared with serve, whose default (50051) is a gRPC port: left at that default,
  // the gateway listens on 8080, the usual HTTP port of OpenAI-compatible servers.
  const int port = absl::GetFlag(FLAGS_port) == 50051 ? 8080 : absl::GetFlag(FLAGS_port);
  absl::StatusOr<GatewayOptions> options =
      GatewayOptionsFromFlags(std::move(backends), absl::GetFlag(FLAGS_host), port);
  if (!options.ok()) {
    std::fprintf(stderr, "glimpse gateway: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  Gateway gateway(*std::move(options));
  if (absl::Status s = gateway.Start(); !s.ok()) {
    std::fprintf(stderr, "glimpse gateway: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("glimpse gateway: listening on %s:%d\n", absl::GetFlag(FLAGS_host).c_str(),
              gateway.port());
  std::fflush(stdout);
  spdlog::info("OpenAI-compatible API on http://{}:{}/v1 for model '{}'",
               absl::GetFlag(FLAGS_host), gateway.port(), gateway.served_model().name);
  const int signal = WaitForShutdownSignal();
  spdlog::info("received {}; shutting down", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  gateway.Shutdown();
  return 0;
}

}  // namespace glimpse::server
