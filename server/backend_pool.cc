#include "server/backend_pool.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

namespace glimpse::server {
namespace {

// Every "ip:port" the DNS name resolves to, sorted; empty on failure.
std::vector<std::string> ResolveAll(const std::string& name_port) {
  const size_t colon = name_port.rfind(':');
  if (colon == std::string::npos) return {};
  const std::string host = name_port.substr(0, colon);
  const std::string port = name_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0) return {};
  std::set<std::string> out;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) == 0) {
      const std::string address = a->ai_family == AF_INET6 ? absl::StrCat("[", ip, "]") : ip;
      out.insert(absl::StrCat(address, ":", port));
    }
  }
  freeaddrinfo(result);
  return {out.begin(), out.end()};
}

}  // namespace

Backend::Backend(std::string target) : target_(std::move(target)) {
  channel_ = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
  stub_ = glimpse::v1::Engine::NewStub(channel_);
}

BackendLease::BackendLease(std::shared_ptr<Backend> backend) : backend_(std::move(backend)) {
  ++backend_->outstanding_;
  ++backend_->requests_total_;
}

BackendLease::~BackendLease() { --backend_->outstanding_; }

BackendPool::BackendPool(BackendPoolOptions options)
    : options_(std::move(options)), router_(options_.router) {}

BackendPool::~BackendPool() { Stop(); }

absl::Status BackendPool::Start() {
  if (options_.targets.empty() && options_.dns_target.empty()) {
    return absl::InvalidArgumentError("no backends: give --backends=host:port[,...] or a DNS name");
  }
  Resolve();
  CheckHealth();
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void BackendPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void BackendPool::Loop() {
  absl::Time next_dns = absl::Now() + options_.dns_interval;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.health_interval)) return;
    }
    if (!options_.dns_target.empty() && absl::Now() >= next_dns) {
      Resolve();
      next_dns = absl::Now() + options_.dns_interval;
    }
    CheckHealth();
  }
}

void BackendPool::Resolve() {
  std::vector<std::string> targets = options_.targets;
  if (!options_.dns_target.empty()) {
    for (std::string& t : ResolveAll(options_.dns_target)) targets.push_back(std::move(t));
  }
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Backend>> next;
  for (const std::string& target : targets) {
    auto it = std::find_if(backends_.begin(), backends_.end(),
                           [&](const auto& b) { return b->target() == target; });
    next.push_back(it != backends_.end() ? *it : std::make_shared<Backend>(target));
  }
  // A name that failed to resolve keeps the replicas it had (DNS hiccups are not outages).
  if (!next.empty() || backends_.empty()) backends_ = std::move(next);
}

void BackendPool::CheckHealth() {
  std::vector<std::shared_ptr<Backend>> backends;
  {
    absl::MutexLock lock(&mu_);
    backends = backends_;
  }
  for (const auto& b : backends) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.health_timeout));
    glimpse::v1::HealthCheckResponse response;
    const grpc::Status status =
        b->stub().HealthCheck(&context, glimpse::v1::HealthCheckRequest(), &response);
    b->healthy_.store(status.ok() && response.healthy());
  }
}

std::unique_ptr<BackendLease> BackendPool::Acquire(std::optional<uint64_t> affinity_key,
                                                   const Backend* exclude) {
  std::vector<std::shared_ptr<Backend>> backends;
  {
    absl::MutexLock lock(&mu_);
    backends = backends_;
  }
  std::vector<BackendView> views;
  std::optional<size_t> excluded;
  for (size_t i = 0; i < backends.size(); ++i) {
    views.push_back({backends[i]->healthy(), backends[i]->outstanding()});
    if (backends[i].get() == exclude) excluded = i;
  }
  const std::optional<size_t> chosen = router_.Choose(views, affinity_key, excluded);
  if (!chosen.has_value()) return nullptr;
  return std::make_unique<BackendLease>(backends[*chosen]);
}

bool BackendPool::AnyHealthy() const {
  absl::MutexLock lock(&mu_);
  return std::any_of(backends_.begin(), backends_.end(), [](const auto& b) { return b->healthy(); });
}

std::vector<BackendStatus> BackendPool::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<BackendStatus> out;
  for (const auto& b : backends_) {
    out.push_back({b->target(), b->healthy(), b->outstanding(), b->requests_total()});
  }
  return out;
}

void BackendPool::ReportFailure(Backend& backend) { backend.healthy_.store(false); }

}  // namespace glimpse::server
