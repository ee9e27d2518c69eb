// SipHash-2-4 (Aumasson & Bernstein, 2012), the keyed hash under the prefix cache's block
// hashes. Both output widths of the reference implementation: 64-bit and the 128-bit variant
// (reference `vectors_sip128`). Pure functions; thread-safe.
//
// Why SipHash: it is a PRF under its 128-bit key, so outputs behave as independent uniform
// values — with 128-bit output, two distinct inputs collide with probability 2^-128, and even
// 2^40 blocks ever hashed leave a collision chance below 2^-48. With a secret key nobody can
// craft colliding inputs either. It is small enough to carry here without a dependency.
#ifndef GLIMPSE_KVCACHE_SIPHASH_H_
#define GLIMPSE_KVCACHE_SIPHASH_H_

#include <cstdint>
#include <span>

namespace glimpse::kvcache {

// The 128-bit key as two little-endian 64-bit halves: k0 = bytes 0..7, k1 = bytes 8..15.
struct SipHashKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

// A 128-bit digest: `lo` = output bytes 0..7, `hi` = bytes 8..15, both little-endian.
struct SipHash128Value {
  uint64_t lo = 0;
  uint64_t hi = 0;
};

uint64_t SipHash24(const SipHashKey& key, std::span<const uint8_t> data);
SipHash128Value SipHash24_128(const SipHashKey& key, std::span<const uint8_t> data);

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_SIPHASH_H_
