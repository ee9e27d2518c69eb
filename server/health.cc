#include "server/health.h"

#include <grpcpp/health_check_service_interface.h>

namespace glimpse::server {
namespace {

bool IsServing(glimpse::v1::HealthState state) {
  return state == glimpse::v1::HEALTH_STATE_READY || state == glimpse::v1::HEALTH_STATE_DEGRADED;
}

void Publish(grpc::HealthCheckServiceInterface* health, glimpse::v1::HealthState state) {
  if (health == nullptr) return;
  const bool serving = IsServing(state);
  health->SetServingStatus(serving);  // "" and every service name.
  health->SetServingStatus(kEngineServiceName, serving);
}

}  // namespace

void ServerLifecycle::AttachGrpcHealth(grpc::HealthCheckServiceInterface* health) {
  health_.store(health);
  Publish(health, state_.load());
}

void ServerLifecycle::Set(glimpse::v1::HealthState state) {
  state_.store(state);
  Publish(health_.load(), state);
}

}  // namespace glimpse::server
