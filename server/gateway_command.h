// `glimpse gateway`: the OpenAI-compatible HTTP gateway as its own process, in front of one
// or more `glimpse serve` replicas. Also builds the gateway options that `glimpse serve
// --http_port` uses in-process.
#ifndef GLIMPSE_SERVER_GATEWAY_COMMAND_H_
#define GLIMPSE_SERVER_GATEWAY_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/gateway.h"

namespace glimpse::server {

// The gateway's options from its flags, for the given replicas and HTTP listen address.
absl::StatusOr<GatewayOptions> GatewayOptionsFromFlags(std::vector<std::string> backends,
                                                       const std::string& host, int port);

// Raises this process's open-file limit to its hard limit (many concurrent connections).
void RaiseFileLimit();

// Blocks SIGTERM and SIGINT in the calling thread. Call before any thread exists, so that
// every thread inherits the mask and only WaitForShutdownSignal() sees them.
void BlockShutdownSignals();
// Waits for SIGTERM or SIGINT (blocked by BlockShutdownSignals) and returns which.
int WaitForShutdownSignal();

// Reads its flags (see --help); returns the process exit code.
int RunGatewayCommand();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_GATEWAY_COMMAND_H_
