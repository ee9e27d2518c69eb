// The gateway's set of glimpse replicas: one gRPC channel each, health from periodic
// glimpse.v1 HealthCheck calls, membership from the command line and/or a DNS name that is
// re-resolved (a Kubernetes headless Service), and leases that count each backend's
// outstanding requests for the Router.
//
// Ownership: owns the backends (shared with the leases that use them, so a replica removed
// by DNS stays alive until its last request ends) and the health/DNS thread.
// Thread-safety: all public methods are safe from any thread.
#ifndef GLIMPSE_SERVER_BACKEND_POOL_H_
#define GLIMPSE_SERVER_BACKEND_POOL_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "server/router.h"

namespace glimpse::server {

struct BackendPoolOptions {
  std::vector<std::string> targets;  // "host:port" replicas.
  std::string dns_target;            // "name:port", resolved to every address; optional.
  absl::Duration health_interval = absl::Seconds(1);
  absl::Duration health_timeout = absl::Milliseconds(800);
  absl::Duration dns_interval = absl::Seconds(10);
  RouterOptions router;
};

class Backend {
 public:
  explicit Backend(std::string target);
  const std::string& target() const { return target_; }
  glimpse::v1::Engine::Stub& stub() { return *stub_; }
  bool healthy() const { return healthy_.load(); }
  int32_t outstanding() const { return outstanding_.load(); }
  int64_t requests_total() const { return requests_total_.load(); }

 private:
  friend class BackendPool;
  friend class BackendLease;
  const std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<glimpse::v1::Engine::Stub> stub_;
  std::atomic<bool> healthy_{false};
  std::atomic<int32_t> outstanding_{0};
  std::atomic<int64_t> requests_total_{0};
};

// One request's hold on a backend; counts as outstanding there until destroyed.
class BackendLease {
 public:
  explicit BackendLease(std::shared_ptr<Backend> backend);
  ~BackendLease();
  BackendLease(const BackendLease&) = delete;
  BackendLease& operator=(const BackendLease&) = delete;
  Backend& backend() const { return *backend_; }
  const std::shared_ptr<Backend>& shared() const { return backend_; }

 private:
  std::shared_ptr<Backend> backend_;
};

struct BackendStatus {
  std::string target;
  bool healthy = false;
  int32_t outstanding = 0;
  int64_t requests_total = 0;
};

class BackendPool {
 public:
  explicit BackendPool(BackendPoolOptions options);
  ~BackendPool();  // Stop()s.

  // Resolves the members, checks their health once, and starts the background thread.
  // InvalidArgument when no backend is configured.
  absl::Status Start();
  void Stop();

  // A healthy backend for a prompt with this affinity key (see Router), never `exclude`;
  // nullptr when none is healthy.
  std::unique_ptr<BackendLease> Acquire(std::optional<uint64_t> affinity_key,
                                        const Backend* exclude = nullptr);
  const Router& router() const { return router_; }
  bool AnyHealthy() const;
  std::vector<BackendStatus> Snapshot() const;
  // Marks a backend unhealthy at once (a call to it failed at the transport level); the next
  // health check may restore it.
  void ReportFailure(Backend& backend);

 private:
  void Loop();
  void CheckHealth();
  void Resolve();

  const BackendPoolOptions options_;
  Router router_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Backend>> backends_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_BACKEND_POOL_H_
