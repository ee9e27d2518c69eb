// Bookkeeping of the KV pool's blocks: reference counts and the free list. Metadata only —
// the tensors live in model::KvCacheStorage — so it is testable without a model.
//
// Allocation is all-or-nothing, and "no room" is an empty optional, not an error: the
// scheduler decides what to do about it (wait, preempt). Issue #3 adds prefix caching
// (hashes and an LRU of free cached blocks) on top.
//
// Thread-safety: owned and used by the engine thread only.
#ifndef GLIMPSE_KVCACHE_BLOCK_POOL_H_
#define GLIMPSE_KVCACHE_BLOCK_POOL_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace glimpse::kvcache {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_list_.size()); }
  int32_t num_used() const { return num_blocks() - num_free(); }

  // `n` fresh blocks with reference count 1, or nullopt (and no change) if fewer are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  // Another owner for a block in use (copy-on-write sharing).
  void AddRef(int32_t block);
  // Drops one reference; the block returns to the free list when none remain.
  void Release(int32_t block);
  void ReleaseAll(const std::vector<int32_t>& blocks);
  int32_t ref_count(int32_t block) const { return ref_counts_[block]; }

 private:
  std::vector<int32_t> ref_counts_;
  // Free block ids; the most recently freed is reused first (warm in cache).
  std::vector<int32_t> free_list_;
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_BLOCK_POOL_H_
