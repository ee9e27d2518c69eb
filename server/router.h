// The gateway's routing policy across glimpse replicas, as a pure decision (no I/O): least
// outstanding requests among healthy backends, with prefix affinity.
//
// Prefix affinity: requests whose prompts share the same first `affinity_prefix` units (token
// ids, or bytes of text — see AffinityKey) go to the replica that served that prefix last, so
// its prefix cache hits. The affinity yields when that replica has more than
// `affinity_slack` requests in flight beyond the least-loaded healthy one (then the prefix
// moves to the replica chosen instead). Prompts shorter than the prefix have no affinity.
//
// Thread-safety: Router is internally locked; Choose may run on any thread.
#ifndef GLIMPSE_SERVER_ROUTER_H_
#define GLIMPSE_SERVER_ROUTER_H_

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace glimpse::server {

struct RouterOptions {
  int32_t affinity_prefix_tokens = 256;
  // Text prompts are keyed on bytes: about 4 bytes per token for code and English.
  int32_t affinity_prefix_bytes = 1024;
  int32_t affinity_slack = 4;       // Extra in-flight requests an affine replica may carry.
  int32_t max_affinity_keys = 100000;  // LRU bound on remembered prefixes.
};

// What the router knows of one backend at decision time.
struct BackendView {
  bool healthy = false;
  int32_t outstanding = 0;  // Requests the gateway has in flight there.
};

class Router {
 public:
  explicit Router(RouterOptions options = {}) : options_(options) {}

  // Affinity key of a prompt, or nullopt when it is shorter than the affinity prefix.
  std::optional<uint64_t> AffinityKey(std::span<const uint32_t> token_ids) const;
  std::optional<uint64_t> AffinityKey(std::string_view text) const;

  // The backend index to use, or nullopt when none is healthy. `exclude` (for retries) is
  // never chosen. Records the affinity of `key` to the chosen backend.
  std::optional<size_t> Choose(const std::vector<BackendView>& backends,
                               std::optional<uint64_t> key,
                               std::optional<size_t> exclude = std::nullopt);

  int32_t num_affinity_keys() const;

 private:
  const RouterOptions options_;
  mutable absl::Mutex mu_;
  // key -> (backend index, position in lru_).
  absl::flat_hash_map<uint64_t, std::pair<size_t, std::list<uint64_t>::iterator>> affinity_
      ABSL_GUARDED_BY(mu_);
  std::list<uint64_t> lru_ ABSL_GUARDED_BY(mu_);  // Most recent first.
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_ROUTER_H_
