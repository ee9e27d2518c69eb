#include "kvcache/siphash.h"

#include <array>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::kvcache {
namespace {

// The reference implementation's key 00 01 .. 0f and messages 00 01 .. (len-1).
constexpr SipHashKey kReferenceKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};

std::vector<uint8_t> Message(size_t len) {
  std::vector<uint8_t> m(len);
  for (size_t i = 0; i < len; ++i) m[i] = static_cast<uint8_t>(i);
  return m;
}

std::array<uint8_t, 16> Bytes(const SipHash128Value& v) {
  std::array<uint8_t, 16> out;
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<uint8_t>(v.lo >> (8 * i));
    out[8 + i] = static_cast<uint8_t>(v.hi >> (8 * i));
  }
  return out;
}

TEST(SipHashTest, SipHash24MatchesReferenceVectors) {
  EXPECT_EQ(SipHash24(kReferenceKey, Message(0)), 0x726fdb47dd0e0e31ULL);
  EXPECT_EQ(SipHash24(kReferenceKey, Message(1)), 0x74f839c593dc67fdULL);
  EXPECT_EQ(SipHash24(kReferenceKey, Message(2)), 0x0d6c8009d9a94f5aULL);
  // The paper's worked example (15-byte message).
  EXPECT_EQ(SipHash24(kReferenceKey, Message(15)), 0xa129ca6149be45e5ULL);
}

TEST(SipHashTest, SipHash24_128MatchesReferenceVectors) {
  const std::array<std::array<uint8_t, 16>, 3> want = {{
      {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02,
       0x93},
      {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc,
       0x45},
      {0x81, 0x77, 0x22, 0x8d, 0xa4, 0xa4, 0x5d, 0xc7, 0xfc, 0xa3, 0x8b, 0xde, 0xf6, 0x0a, 0xff,
       0xe4},
  }};
  for (size_t len = 0; len < want.size(); ++len) {
    EXPECT_EQ(Bytes(SipHash24_128(kReferenceKey, Message(len))), want[len]) << "len " << len;
  }
}

TEST(SipHashTest, EveryLengthAcrossWordBoundariesHashesDifferently) {
  // Lengths 0..24 cover empty, partial and multiple 8-byte words; the length tag must keep
  // zero-padded messages apart.
  std::vector<uint64_t> seen;
  for (size_t len = 0; len <= 24; ++len) {
    const uint64_t h = SipHash24_128(kReferenceKey, std::vector<uint8_t>(len, 0)).lo;
    for (uint64_t s : seen) EXPECT_NE(s, h) << "len " << len;
    seen.push_back(h);
  }
}

}  // namespace
}  // namespace glimpse::kvcache
