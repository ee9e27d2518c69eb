#include "kvcache/block_hash.h"

#include "common/check.h"

namespace glimpse::kvcache {
namespace {

// Encoding, all little-endian:  parent.lo (8) | parent.hi (8) | tag (1) | length (8) | payload.
// The tag separates roots from blocks; the length makes the payload boundary unambiguous.
enum class Tag : uint8_t { kRoot = 1, kBlock = 2 };

void AppendLe(std::vector<uint8_t>& out, uint64_t value, int num_bytes) {
  for (int i = 0; i < num_bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

std::vector<uint8_t> Header(const BlockHash& parent, Tag tag, size_t payload_length,
                            size_t payload_bytes) {
  std::vector<uint8_t> bytes;
  bytes.reserve(25 + payload_bytes);
  AppendLe(bytes, parent.lo, 8);
  AppendLe(bytes, parent.hi, 8);
  bytes.push_back(static_cast<uint8_t>(tag));
  AppendLe(bytes, payload_length, 8);
  return bytes;
}

BlockHash ToBlockHash(const SipHash128Value& v) { return BlockHash{v.lo, v.hi}; }

}  // namespace

BlockHash BlockHasher::Root(std::string_view extra_key) const {
  std::vector<uint8_t> bytes = Header(BlockHash{}, Tag::kRoot, extra_key.size(), extra_key.size());
  bytes.insert(bytes.end(), extra_key.begin(), extra_key.end());
  return ToBlockHash(SipHash24_128(key_, bytes));
}

BlockHash BlockHasher::Block(const BlockHash& parent, std::span<const int32_t> tokens) const {
  std::vector<uint8_t> bytes = Header(parent, Tag::kBlock, tokens.size(), 4 * tokens.size());
  for (int32_t t : tokens) AppendLe(bytes, static_cast<uint32_t>(t), 4);
  return ToBlockHash(SipHash24_128(key_, bytes));
}

std::vector<BlockHash> BlockHasher::Chain(std::string_view extra_key,
                                          std::span<const int32_t> tokens, int32_t block_size,
                                          int32_t num_blocks) const {
  CHECK(block_size > 0 && num_blocks >= 0);
  CHECK(static_cast<size_t>(num_blocks) * block_size <= tokens.size());
  std::vector<BlockHash> hashes;
  hashes.reserve(num_blocks);
  BlockHash parent = Root(extra_key);
  for (int32_t i = 0; i < num_blocks; ++i) {
    parent = Block(parent, tokens.subspan(static_cast<size_t>(i) * block_size, block_size));
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace glimpse::kvcache
