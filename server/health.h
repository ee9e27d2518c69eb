// The server's lifecycle state (STARTING → READY → DRAINING), shared by the glimpse.v1
// HealthCheck RPC and the standard grpc.health.v1 service, so the two never disagree.
//
// Thread-safety: all methods are safe from any thread (an atomic state; the grpc health service
// is itself thread-safe).
#ifndef GLIMPSE_SERVER_HEALTH_H_
#define GLIMPSE_SERVER_HEALTH_H_

#include <atomic>
#include <string>

#include "proto/glimpse/v1/engine.pb.h"

namespace grpc {
class HealthCheckServiceInterface;
}  // namespace grpc

namespace glimpse::server {

class ServerLifecycle {
 public:
  ServerLifecycle() = default;
  ServerLifecycle(const ServerLifecycle&) = delete;
  ServerLifecycle& operator=(const ServerLifecycle&) = delete;

  // The grpc.health.v1 service to keep in step (not owned; the grpc::Server's, which must
  // outlive this object's later calls). Null: none. Sets its status from the current state.
  void AttachGrpcHealth(grpc::HealthCheckServiceInterface* health);

  // Moves to `state`; grpc.health.v1 reports SERVING for READY and DEGRADED, NOT_SERVING
  // otherwise, both for "" and "glimpse.v1.Engine".
  void Set(glimpse::v1::HealthState state);
  glimpse::v1::HealthState state() const { return state_.load(); }

 private:
  std::atomic<glimpse::v1::HealthState> state_{glimpse::v1::HEALTH_STATE_STARTING};
  std::atomic<grpc::HealthCheckServiceInterface*> health_{nullptr};
};

// The name grpc.health.v1 clients ask for (besides "" for the whole server).
inline constexpr char kEngineServiceName[] = "glimpse.v1.Engine";

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_HEALTH_H_
