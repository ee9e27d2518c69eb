// The bounded host-memory pool that preemption by swapping copies a request's KV blocks into.
// Metadata only: host block ids [0, num_blocks) name slots of a pinned host buffer that the
// engine's backend owns; the copies themselves are the engine's job.
//
// No reference counts or caching: a host block belongs to exactly one swapped-out request.
// Allocation is all-or-nothing; "no room" is an empty optional.
// Thread-safety: owned and used by the engine thread only.
#ifndef GLIMPSE_KVCACHE_HOST_SWAP_SPACE_H_
#define GLIMPSE_KVCACHE_HOST_SWAP_SPACE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace glimpse::kvcache {

class HostSwapSpace {
 public:
  explicit HostSwapSpace(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(in_use_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }
  bool in_use(int32_t block) const;

  // `n` host blocks, or nullopt and no change if fewer are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  // Returns blocks that are in use (CHECK).
  void Release(std::span<const int32_t> blocks);

  // Internal error if the free stack and the in-use flags disagree.
  absl::Status CheckInvariants() const;

 private:
  std::vector<int32_t> free_;  // free host block ids; the back is reused first
  std::vector<bool> in_use_;   // [num_blocks]
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_HOST_SWAP_SPACE_H_
