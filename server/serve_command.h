// `glimpse serve`: loads a model, starts the serving engine and the glimpse.v1 gRPC server
// (plus grpc.health.v1 and reflection), and drains gracefully on SIGTERM/SIGINT.
#ifndef GLIMPSE_SERVER_SERVE_COMMAND_H_
#define GLIMPSE_SERVER_SERVE_COMMAND_H_

namespace glimpse::server {

// Runs until SIGTERM or SIGINT; returns the process exit code (0 after a clean drain, 1 when
// the model or the port cannot be opened, 2 for bad flags).
int RunServeCommand();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_SERVE_COMMAND_H_
