#include "kvcache/siphash.h"

#include <bit>

namespace glimpse::kvcache {
namespace {

// The four-word SipHash state.
struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void Compress(uint64_t m) {  // c = 2 rounds per message word
    v3 ^= m;
    Round();
    Round();
    v0 ^= m;
  }
  uint64_t Finalize(uint64_t tag) {  // d = 4 rounds
    v2 ^= tag;
    for (int i = 0; i < 4; ++i) Round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

uint64_t LoadLe64(const uint8_t* p, size_t n) {  // n <= 8 bytes, little-endian
  uint64_t word = 0;
  for (size_t i = 0; i < n; ++i) word |= static_cast<uint64_t>(p[i]) << (8 * i);
  return word;
}

// Initializes from the key and absorbs all of `data` including the length-tagged last word.
SipState Absorb(const SipHashKey& key, std::span<const uint8_t> data, bool wide) {
  SipState s{key.k0 ^ 0x736f6d6570736575ULL, key.k1 ^ 0x646f72616e646f6dULL,
             key.k0 ^ 0x6c7967656e657261ULL, key.k1 ^ 0x7465646279746573ULL};
  if (wide) s.v1 ^= 0xee;
  const size_t num_words = data.size() / 8;
  for (size_t i = 0; i < num_words; ++i) s.Compress(LoadLe64(data.data() + 8 * i, 8));
  const size_t tail = data.size() - 8 * num_words;
  s.Compress(LoadLe64(data.data() + 8 * num_words, tail) |
             (static_cast<uint64_t>(data.size() & 0xff) << 56));
  return s;
}

}  // namespace

uint64_t SipHash24(const SipHashKey& key, std::span<const uint8_t> data) {
  SipState s = Absorb(key, data, /*wide=*/false);
  return s.Finalize(0xff);
}

SipHash128Value SipHash24_128(const SipHashKey& key, std::span<const uint8_t> data) {
  SipState s = Absorb(key, data, /*wide=*/true);
  SipHash128Value out;
  out.lo = s.Finalize(0xee);
  s.v1 ^= 0xdd;
  for (int i = 0; i < 4; ++i) s.Round();
  out.hi = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  return out;
}

}  // namespace glimpse::kvcache
