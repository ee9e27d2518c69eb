// Bookkeeping of the KV pool's device blocks: reference counts, content hashes and the free
// list. Metadata only — the tensors live in model::KvCacheStorage — so it is testable without
// a model.
//
// A block is in one of three states:
//   in use        ref_count > 0; in some request's block table(s).
//   cached free   ref_count == 0 with a published hash: its KV is still valid and a prefix
//                 hit can revive it (AddRef) until allocation evicts it.
//   free          ref_count == 0, no hash: holds nothing anyone can name.
//
// The free list (FreeBlockQueue) holds every block with ref_count 0, in eviction order:
//   front: free blocks (released to the front: reused first, they hold nothing useful),
//          then cached free blocks, least recently released first
//   back:  the most recently released cached block (evicted last).
// Allocate() pops from the front; popping a cached block evicts it (its hash leaves the map).
// Callers release a request's blocks tail first (ReleaseAll does), so the tail of a cached
// chain is evicted before its head, which more prompts share.
//
// Hashes are write-once: set by Publish() on a full, computed, in-use block and cleared only
// by eviction. The map hash → block holds exactly the blocks that have a hash (one block per
// hash; a second block with the same content stays unpublished).
//
// Allocation is all-or-nothing and "no room" is an empty optional, never an error: the
// scheduler decides what to do about it (wait, preempt).
// Thread-safety: owned and used by the engine thread only.
#ifndef GLIMPSE_KVCACHE_BLOCK_POOL_H_
#define GLIMPSE_KVCACHE_BLOCK_POOL_H_

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "kvcache/block_hash.h"
#include "kvcache/free_block_queue.h"

namespace glimpse::kvcache {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  // Blocks with ref count 0, cached ones included (they are reclaimable).
  int32_t num_free() const { return free_queue_.size(); }
  int32_t num_used() const { return num_blocks() - num_free(); }
  // Free blocks that still hold a published prefix.
  int32_t num_cached_free() const { return num_cached_free_; }
  // Blocks with a published hash, in use or free.
  int32_t num_cached() const { return static_cast<int32_t>(cached_.size()); }
  // Cached free blocks reclaimed by Allocate() since construction.
  int64_t evictions() const { return evictions_; }

  // `n` blocks with ref count 1 and no hash, taken from the front of the free list (evicting
  // cached ones as needed), or nullopt and no change if fewer than `n` are free.
  std::optional<std::vector<int32_t>> Allocate(int32_t n);
  // Another owner for a block: one in use, or a cached free block (a prefix hit), which
  // leaves the free list. A plain free block cannot be revived (CHECK).
  void AddRef(int32_t block);
  // Drops one reference; at zero the block joins the free list (see the order above).
  void Release(int32_t block);
  // Releases each block once, last to first.
  void ReleaseAll(std::span<const int32_t> blocks);

  // The block holding `hash`, in use or cached free.
  std::optional<int32_t> FindCached(const BlockHash& hash) const;
  // Publishes `hash` for an in-use block whose KV is full and computed. Returns false (and
  // changes nothing) if another block already holds that hash; re-publishing a block's own
  // hash is a no-op returning true; a block never changes its hash (CHECK).
  bool Publish(int32_t block, const BlockHash& hash);
  // The block's hash, or nullptr if it has none. Valid until the next mutating call.
  const BlockHash* hash(int32_t block) const;
  int32_t ref_count(int32_t block) const;

  // Front to back order of the free list; for tests.
  std::vector<int32_t> FreeListForTesting() const { return free_queue_.ToVector(); }
  // Internal error naming the first broken invariant of this file's header comment.
  absl::Status CheckInvariants() const;

 private:
  struct BlockMeta {
    int32_t ref_count = 0;
    bool has_hash = false;
    BlockHash hash;  // meaningful iff has_hash
  };

  void CheckId(int32_t block) const;
  void Evict(int32_t block);

  std::vector<BlockMeta> blocks_;                   // [num_blocks]
  FreeBlockQueue free_queue_;                       // every block with ref_count 0
  absl::flat_hash_map<BlockHash, int32_t> cached_;  // hash -> the block holding it
  int32_t num_cached_free_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_BLOCK_POOL_H_
