// Chained content hashes of full KV blocks: the keys of the prefix cache.
//
//   root           = H(parent = 0, tag "root", extra key bytes)        e.g. extra key = cache_salt
//   hash(block 0)  = H(parent = root,          tag "block", its block_size token ids)
//   hash(block i)  = H(parent = hash(block i-1), tag "block", its block_size token ids)
//
// so a block's hash names the whole token prefix up to its end plus the extra key: equal
// hashes mean equal KV (the cache is exact; see DESIGN.md), and two requests with different
// salts never share a block. Anything that changes a block's KV besides its tokens (a LoRA id,
// lossy eviction settings) must go into the extra key, or that KV must not be published.
//
// H is SipHash-2-4 with 128-bit output (siphash.h) over an injective byte encoding
// (little-endian; every variable-length part carries its length), so distinct chains collide
// with probability ~2^-128 per pair: nothing verifies the tokens of a hit. The key is fixed by
// default so hashes are stable across processes (useful for future KV events); a deployment
// that fears crafted collisions between tenants can pass a secret key.
//
// Thread-safety: immutable after construction; safe to share.
#ifndef GLIMPSE_KVCACHE_BLOCK_HASH_H_
#define GLIMPSE_KVCACHE_BLOCK_HASH_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kvcache/siphash.h"

namespace glimpse::kvcache {

// 128-bit block hash. Value type; hashable by absl containers.
struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const BlockHash&, const BlockHash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }
};

// "glimpse-kv-block" in ASCII; any fixed value works, it only has to stay put.
inline constexpr SipHashKey kDefaultBlockHashKey{0x2d6573706d696c67ULL, 0x6b636f6c622d766bULL};

class BlockHasher {
 public:
  explicit BlockHasher(SipHashKey key = kDefaultBlockHashKey) : key_(key) {}

  // The chain's starting point for a namespace `extra_key` (empty: the shared namespace).
  BlockHash Root(std::string_view extra_key) const;
  // The hash of a block holding `tokens` whose prefix ends with the block hashed `parent`.
  BlockHash Block(const BlockHash& parent, std::span<const int32_t> tokens) const;
  // Hashes of the first `num_blocks` full blocks of `tokens` (block_size tokens each) in the
  // namespace `extra_key`. Requires num_blocks * block_size <= tokens.size().
  std::vector<BlockHash> Chain(std::string_view extra_key, std::span<const int32_t> tokens,
                               int32_t block_size, int32_t num_blocks) const;

 private:
  SipHashKey key_;
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_BLOCK_HASH_H_
