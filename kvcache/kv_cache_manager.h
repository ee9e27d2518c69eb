// Per-request KV block tables over one device BlockPool: what the scheduler asks when it
// admits, grows, forks, preempts and finishes requests. Metadata only (block ids, counts,
// hashes); the engine performs the KV copies it reports through the backend.
//
// One request's table, in tokens (block_size tokens per block):
//
//   | committed full blocks | computed tokens   | slots for this step's writes | lookahead |
//   0              committed_tokens      num_computed_tokens                      num_total_tokens
//   └ hashed: published in the prefix cache, never written again
//
// * Prefix cache: a full, computed block is published under its chain hash (block_hash.h);
//   FindCachedPrefix() returns the longest run of cached blocks a new prompt can start from,
//   always leaving at least the last prompt token to compute (its logits are needed).
// * Copy-on-write: a write never goes into a block shared by another table (ref count > 1).
//   Fork() shares every block lazily; the first Allocate() that would write into a shared
//   block swaps a fresh block into its table and reports the copy (src → dst) — for `n` > 1
//   that is the prompt's last partial block. Shared full blocks are never copied.
// * Preemption: recompute = Free() now, Allocate() again later (the prefix cache may turn the
//   recompute into a hit); swap = SwapOut() to the host swap space, SwapIn() later.
//
// Copies and ordering: every BlockCopy list (Allocate's copy-on-write, SwapOut's
// device→host, SwapIn's host→device) must be executed in the order the calls returned them,
// all before the step's forward pass. Blocks a call frees may be handed out by the very next
// call, and this order is what makes that safe.
//
// Requests are keyed by a RequestKey (int64): the scheduler's own integer id, cheaper to hash
// than the API's string request id and never reused while the request holds blocks.
//
// Invariants (CheckInvariants): every block's ref count equals the number of tables holding
// it; no table holds a block twice; a committed block carries its chain hash or none (another
// block published that content first); the pool's free list and hash map agree.
// Thread-safety: engine thread only; no internal locking.
#ifndef GLIMPSE_KVCACHE_KV_CACHE_MANAGER_H_
#define GLIMPSE_KVCACHE_KV_CACHE_MANAGER_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "kvcache/block_hash.h"
#include "kvcache/block_pool.h"
#include "kvcache/host_swap_space.h"

namespace glimpse::kvcache {

using RequestKey = int64_t;

// Copy block `src`'s KV (all layers, all slots) into block `dst`. The id spaces depend on
// the call: device→device (copy-on-write), device→host (SwapOut), host→device (SwapIn).
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
  friend bool operator==(const BlockCopy&, const BlockCopy&) = default;
};

// The cached start of a prompt. Valid until the next mutating call on the manager (an
// allocation may evict its blocks); pass it straight to Allocate(), which re-checks it.
struct PrefixHit {
  std::vector<int32_t> blocks;    // [num_hit_blocks] device blocks for the prompt's start
  std::vector<BlockHash> hashes;  // [num_hit_blocks] their chain hashes
  int32_t num_tokens = 0;         // num_hit_blocks * block_size; < num_prompt_tokens
  int32_t num_prompt_tokens = 0;  // length of the prompt looked up (for the counters)
};

// What one successful Allocate() asks of the engine.
struct Allocation {
  std::vector<BlockCopy> copies;  // device → device copy-on-write, before the forward pass
};

struct KvCacheManagerOptions {
  int32_t num_blocks = 0;       // device KV blocks
  int32_t block_size = 16;      // tokens per block
  int32_t num_host_blocks = 0;  // host swap space in blocks; 0: swapping always fails
  SipHashKey hash_key = kDefaultBlockHashKey;  // see block_hash.h
};

// Prefix-cache counters, in the units of vLLM's and our Prometheus counters:
// glimpse_prefix_cache_queries_total = queried_tokens, glimpse_prefix_cache_hits_total =
// hit_tokens. Counted once per admission (an Allocate() that consumes a PrefixHit), so a
// request retried while waiting is not counted twice; a recomputed request counts again.
struct PrefixCacheStats {
  int64_t queries = 0;         // admissions that consulted the cache
  int64_t queried_tokens = 0;  // their prompt tokens
  int64_t hit_tokens = 0;      // of which served from cache
};

class KvCacheManager {
 public:
  explicit KvCacheManager(const KvCacheManagerOptions& options);

  int32_t block_size() const { return block_size_; }
  // Blocks needed to hold `num_tokens` tokens (ceil).
  int32_t NumBlocksFor(int32_t num_tokens) const;

  // The longest run of cached full blocks `prompt` starts with under namespace `salt`,
  // covering at most prompt.size() - 1 tokens. No side effects.
  PrefixHit FindCachedPrefix(std::span<const int32_t> prompt, std::string_view salt) const;
  // The same, with `chain` as a memo of prompt's block hashes: the lookup extends it as far as
  // it hashes and reuses what it holds. A waiting request the pool cannot take yet is looked up
  // again every step; keeping its chain hashes each block once, not once per step. Valid while
  // the prompt only grows (tokens appended, as after a recompute preemption) under one salt.
  PrefixHit FindCachedPrefix(std::span<const int32_t> prompt, std::string_view salt,
                             std::vector<BlockHash>* chain) const;

  // Free blocks (cached free ones included) that Allocate() with the same arguments would
  // consume; it succeeds iff this is <= num_free_blocks(). Changes nothing.
  int32_t NumBlocksToAllocate(RequestKey key, int32_t num_computed_tokens, int32_t num_total_tokens,
                              const PrefixHit* hit = nullptr) const;
  bool CanAllocate(int32_t num_blocks) const { return num_blocks <= num_free_blocks(); }

  // Makes `key`'s table cover positions [0, num_total_tokens), creating the request if new,
  // so that positions [num_computed_tokens, num_total_tokens) can be written (a step's new
  // tokens plus any lookahead slots). A shared block in that range is replaced copy-on-write.
  // `hit` (from FindCachedPrefix, for a request with no blocks yet) supplies the first blocks;
  // then num_computed_tokens >= hit->num_tokens. Never shrinks a table.
  // Returns nullopt, changing nothing, if the pool cannot supply the blocks.
  // Requires: not swapped out; committed tokens <= num_computed_tokens <= num_total_tokens;
  // num_computed_tokens within the existing table.
  [[nodiscard]] std::optional<Allocation> Allocate(RequestKey key, int32_t num_computed_tokens,
                                                   int32_t num_total_tokens,
                                                   const PrefixHit* hit = nullptr);

  // Publishes the request's blocks that are now full and computed: those within
  // min(num_computed_tokens, token_ids.size()). `token_ids` are the request's verified tokens
  // (prompt + accepted output; never unverified drafts). `salt` must be the one given to
  // FindCachedPrefix; it is only read while nothing is committed yet. A block whose content
  // another block already published stays unpublished (the first keeps serving hits; this one
  // returns to the plain free list when released). Unknown or swapped-out key: CHECK.
  void CommitFullBlocks(RequestKey key, std::span<const int32_t> token_ids,
                        int32_t num_computed_tokens, std::string_view salt);

  // Gives `child` (new) a table sharing `parent`'s blocks for its first num_computed_tokens
  // tokens (ref counts + 1, no copies now: see copy-on-write above). For `n` > 1.
  void Fork(RequestKey parent, RequestKey child, int32_t num_computed_tokens);

  // Drops all of the request's blocks, tail first: published ones stay cached (LRU), the rest
  // are reused first. Host blocks of a swapped-out request are released too. Unknown key: no-op.
  void Free(RequestKey key);

  // Moves the request's first NumBlocksFor(num_computed_tokens) blocks to host swap space and
  // frees its device blocks: returns the device→host copies, or nullopt (nothing changed) if
  // the host space is short. The request keeps its key and committed hashes.
  [[nodiscard]] std::optional<std::vector<BlockCopy>> SwapOut(RequestKey key,
                                                              int32_t num_computed_tokens);
  // Device blocks SwapIn() would consume now (blocks still cached on the device are reused).
  int32_t NumBlocksToSwapIn(RequestKey key) const;
  // Brings a swapped-out request back: returns the host→device copies (none for committed
  // blocks still cached on the device), or nullopt (nothing changed) if the pool is short.
  [[nodiscard]] std::optional<std::vector<BlockCopy>> SwapIn(RequestKey key);

  bool Contains(RequestKey key) const { return requests_.contains(key); }
  bool IsSwappedOut(RequestKey key) const;
  // The request's device blocks in position order (empty while swapped out). The reference
  // is valid until the next mutating call for this request. Unknown key: CHECK.
  const std::vector<int32_t>& BlockTable(RequestKey key) const;
  // Committed (published or deduplicated) full blocks of the request.
  int32_t NumCommittedBlocks(RequestKey key) const;
  int32_t num_requests() const { return static_cast<int32_t>(requests_.size()); }

  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t num_free_blocks() const { return pool_.num_free(); }  // cached free ones included
  int32_t num_used_blocks() const { return pool_.num_used(); }
  int32_t num_cached_free_blocks() const { return pool_.num_cached_free(); }
  int64_t num_evictions() const { return pool_.evictions(); }
  // num_used_blocks / num_blocks, for glimpse_kv_cache_usage_ratio (cached free = free).
  double usage_ratio() const;
  int32_t num_host_blocks() const { return host_.num_blocks(); }
  int32_t num_free_host_blocks() const { return host_.num_free(); }
  const PrefixCacheStats& prefix_cache_stats() const { return stats_; }
  // Blocks FindCachedPrefix has hashed so far (hashing work, for tests and profiles).
  int64_t num_lookup_hashes() const { return num_lookup_hashes_; }
  const BlockPool& pool() const { return pool_; }

  // Internal error naming the first broken invariant (this header's and the pool's).
  absl::Status CheckInvariants() const;

 private:
  struct RequestBlocks {
    std::vector<int32_t> blocks;       // device block table; empty while swapped out
    std::vector<BlockHash> chain;      // hashes of committed blocks [0, chain.size())
    std::vector<int32_t> host_blocks;  // swapped out: host copies of blocks [0, size)
    bool swapped_out = false;
  };
  // What an Allocate() would do; computed without side effects, then applied.
  struct AllocationPlan {
    int32_t num_revived = 0;         // hit blocks now cached free (leave the free list)
    std::vector<int32_t> cow_slots;  // table indices to replace copy-on-write
    int32_t num_appended = 0;        // fresh blocks appended to the table
    int32_t num_fresh() const { return static_cast<int32_t>(cow_slots.size()) + num_appended; }
  };
  // SwapIn's plan: per swapped block, the cached device block to reuse or -1 (copy in).
  struct SwapInPlan {
    std::vector<int32_t> reuse;  // [host_blocks.size()]
    int32_t num_fresh = 0;
    int32_t num_revived = 0;
  };

  const RequestBlocks* Find(RequestKey key) const;
  RequestBlocks& Get(RequestKey key);
  AllocationPlan PlanAllocation(const RequestBlocks* request, int32_t num_computed_tokens,
                                int32_t num_total_tokens, const PrefixHit* hit) const;
  void AdoptHit(RequestBlocks& request, const PrefixHit& hit);
  SwapInPlan PlanSwapIn(const RequestBlocks& request) const;
  absl::Status CheckRequest(RequestKey key, const RequestBlocks& request,
                            std::vector<int32_t>& refs, std::vector<bool>& host_seen) const;

  const int32_t block_size_;
  const BlockHasher hasher_;
  BlockPool pool_;
  HostSwapSpace host_;
  // node_hash_map: BlockTable() hands out references that must survive other insertions.
  absl::node_hash_map<RequestKey, RequestBlocks> requests_;
  PrefixCacheStats stats_;
  mutable int64_t num_lookup_hashes_ = 0;  // a work counter; lookups stay free of other effects
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_KV_CACHE_MANAGER_H_
