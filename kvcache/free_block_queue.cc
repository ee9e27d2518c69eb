#include "kvcache/free_block_queue.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace glimpse::kvcache {

FreeBlockQueue::FreeBlockQueue(int32_t num_blocks)
    : prev_(num_blocks + 1, kNotInList), next_(num_blocks + 1, kNotInList) {
  CHECK(num_blocks >= 0);
  prev_[sentinel()] = sentinel();
  next_[sentinel()] = sentinel();
}

bool FreeBlockQueue::Contains(int32_t block) const {
  CHECK(block >= 0 && block < sentinel());
  return next_[block] != kNotInList;
}

int32_t FreeBlockQueue::front() const {
  CHECK(size_ > 0);
  return next_[sentinel()];
}

void FreeBlockQueue::InsertBetween(int32_t block, int32_t before, int32_t after) {
  CHECK(!Contains(block));
  prev_[block] = before;
  next_[block] = after;
  next_[before] = block;
  prev_[after] = block;
  ++size_;
}

void FreeBlockQueue::PushBack(int32_t block) {
  InsertBetween(block, prev_[sentinel()], sentinel());
}

void FreeBlockQueue::PushFront(int32_t block) {
  InsertBetween(block, sentinel(), next_[sentinel()]);
}

int32_t FreeBlockQueue::PopFront() {
  const int32_t block = front();
  Remove(block);
  return block;
}

void FreeBlockQueue::Remove(int32_t block) {
  CHECK(Contains(block));
  next_[prev_[block]] = next_[block];
  prev_[next_[block]] = prev_[block];
  prev_[block] = kNotInList;
  next_[block] = kNotInList;
  --size_;
}

std::vector<int32_t> FreeBlockQueue::ToVector() const {
  std::vector<int32_t> blocks;
  blocks.reserve(size_);
  for (int32_t b = next_[sentinel()]; b != sentinel(); b = next_[b]) blocks.push_back(b);
  return blocks;
}

absl::Status FreeBlockQueue::CheckInvariants() const {
  int32_t visited = 0;
  int32_t prev = sentinel();
  for (int32_t b = next_[sentinel()]; b != sentinel(); prev = b, b = next_[b]) {
    if (b < 0 || b >= sentinel() || prev_[b] != prev) {
      return absl::InternalError(absl::StrCat("free queue: broken link at block ", b));
    }
    if (++visited > size_) return absl::InternalError("free queue: longer than its size");
  }
  if (visited != size_ || prev_[sentinel()] != prev) {
    return absl::InternalError(absl::StrCat("free queue: walked ", visited, " of ", size_));
  }
  int32_t linked = 0;
  for (int32_t b = 0; b < sentinel(); ++b) linked += Contains(b) ? 1 : 0;
  if (linked != size_) {
    return absl::InternalError(
        absl::StrCat("free queue: ", linked, " linked blocks, size ", size_));
  }
  return absl::OkStatus();
}

}  // namespace glimpse::kvcache
