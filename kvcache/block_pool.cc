#include "kvcache/block_pool.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace glimpse::kvcache {

BlockPool::BlockPool(int32_t num_blocks) : blocks_(num_blocks), free_queue_(num_blocks) {
  CHECK(num_blocks >= 0);
  // Hand out low ids first.
  for (int32_t b = 0; b < num_blocks; ++b) free_queue_.PushBack(b);
}

void BlockPool::CheckId(int32_t block) const { CHECK(block >= 0 && block < num_blocks()); }

void BlockPool::Evict(int32_t block) {
  BlockMeta& meta = blocks_[block];
  CHECK(meta.has_hash && meta.ref_count == 0);
  cached_.erase(meta.hash);
  meta.has_hash = false;
  --num_cached_free_;
  ++evictions_;
}

std::optional<std::vector<int32_t>> BlockPool::Allocate(int32_t n) {
  CHECK(n >= 0);
  if (n > num_free()) return std::nullopt;
  std::vector<int32_t> out;
  out.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t block = free_queue_.PopFront();
    if (blocks_[block].has_hash) Evict(block);
    blocks_[block].ref_count = 1;
    out.push_back(block);
  }
  return out;
}

void BlockPool::AddRef(int32_t block) {
  CheckId(block);
  BlockMeta& meta = blocks_[block];
  if (meta.ref_count == 0) {
    CHECK(meta.has_hash);  // only a cached block can be named while free
    free_queue_.Remove(block);
    --num_cached_free_;
  }
  ++meta.ref_count;
}

void BlockPool::Release(int32_t block) {
  CheckId(block);
  BlockMeta& meta = blocks_[block];
  CHECK(meta.ref_count > 0);
  if (--meta.ref_count > 0) return;
  if (meta.has_hash) {
    free_queue_.PushBack(block);
    ++num_cached_free_;
  } else {
    free_queue_.PushFront(block);
  }
}

void BlockPool::ReleaseAll(std::span<const int32_t> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) Release(*it);
}

std::optional<int32_t> BlockPool::FindCached(const BlockHash& hash) const {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return std::nullopt;
  return it->second;
}

bool BlockPool::Publish(int32_t block, const BlockHash& hash) {
  CheckId(block);
  BlockMeta& meta = blocks_[block];
  CHECK(meta.ref_count > 0);
  if (meta.has_hash) {
    CHECK(meta.hash == hash);  // write-once
    return true;
  }
  if (!cached_.emplace(hash, block).second) return false;
  meta.has_hash = true;
  meta.hash = hash;
  return true;
}

const BlockHash* BlockPool::hash(int32_t block) const {
  CheckId(block);
  return blocks_[block].has_hash ? &blocks_[block].hash : nullptr;
}

int32_t BlockPool::ref_count(int32_t block) const {
  CheckId(block);
  return blocks_[block].ref_count;
}

absl::Status BlockPool::CheckInvariants() const {
  if (absl::Status s = free_queue_.CheckInvariants(); !s.ok()) return s;
  int32_t num_hashed = 0, num_cached_free = 0;
  for (int32_t b = 0; b < num_blocks(); ++b) {
    const BlockMeta& meta = blocks_[b];
    if (meta.ref_count < 0 || (meta.ref_count == 0) != free_queue_.Contains(b)) {
      return absl::InternalError(absl::StrCat("block ", b, ": ref count ", meta.ref_count,
                                              " disagrees with the free list"));
    }
    if (!meta.has_hash) continue;
    ++num_hashed;
    if (meta.ref_count == 0) ++num_cached_free;
    auto it = cached_.find(meta.hash);
    if (it == cached_.end() || it->second != b) {
      return absl::InternalError(absl::StrCat("block ", b, ": hash not mapped to it"));
    }
  }
  bool seen_cached = false;  // the free list runs: plain free blocks, then cached ones
  for (int32_t b : free_queue_.ToVector()) {
    if (seen_cached && !blocks_[b].has_hash) {
      return absl::InternalError(absl::StrCat("free block ", b, " queued behind cached blocks"));
    }
    seen_cached = seen_cached || blocks_[b].has_hash;
  }
  if (num_hashed != num_cached()) {
    return absl::InternalError(absl::StrCat("hash map holds ", num_cached(), " entries but ",
                                            num_hashed, " blocks have a hash"));
  }
  if (num_cached_free != num_cached_free_) {
    return absl::InternalError(
        absl::StrCat("num_cached_free is ", num_cached_free_, ", counted ", num_cached_free));
  }
  return absl::OkStatus();
}

}  // namespace glimpse::kvcache
