#include "server/router.h"

#include <limits>

namespace glimpse::server {
namespace {

// FNV-1a, 64-bit: a stable, cheap key; a collision only costs a cache miss.
uint64_t Fnv1a(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::optional<uint64_t> Router::AffinityKey(std::span<const uint32_t> token_ids) const {
  const size_t n = static_cast<size_t>(options_.affinity_prefix_tokens);
  if (n == 0 || token_ids.size() < n) return std::nullopt;
  return Fnv1a(token_ids.data(), n * sizeof(uint32_t));
}

std::optional<uint64_t> Router::AffinityKey(std::string_view text) const {
  const size_t n = static_cast<size_t>(options_.affinity_prefix_bytes);
  if (n == 0 || text.size() < n) return std::nullopt;
  // Distinct from token keys of the same bytes.
  return Fnv1a(text.data(), n) ^ 0x9e3779b97f4a7c15ull;
}

std::optional<size_t> Router::Choose(const std::vector<BackendView>& backends,
                                     std::optional<uint64_t> key, std::optional<size_t> exclude) {
  std::optional<size_t> least;
  for (size_t i = 0; i < backends.size(); ++i) {
    if (!backends[i].healthy || (exclude.has_value() && *exclude == i)) continue;
    if (!least.has_value() || backends[i].outstanding < backends[*least].outstanding) least = i;
  }
  if (!least.has_value()) return std::nullopt;
  if (!key.has_value()) return least;

  absl::MutexLock lock(&mu_);
  size_t chosen = *least;
  auto it = affinity_.find(*key);
  if (it != affinity_.end()) {
    const size_t affine = it->second.first;
    if (affine < backends.size() && backends[affine].healthy &&
        !(exclude.has_value() && *exclude == affine) &&
        backends[affine].outstanding <= backends[*least].outstanding + options_.affinity_slack) {
      chosen = affine;
    }
    lru_.erase(it->second.second);
    affinity_.erase(it);
  }
  lru_.push_front(*key);
  affinity_[*key] = {chosen, lru_.begin()};
  while (static_cast<int32_t>(lru_.size()) > options_.max_affinity_keys) {
    affinity_.erase(lru_.back());
    lru_.pop_back();
  }
  return chosen;
}

int32_t Router::num_affinity_keys() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(affinity_.size());
}

}  // namespace glimpse::server
