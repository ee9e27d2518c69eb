// The pool's free list: an intrusive doubly-linked list of block ids in LRU order, with O(1)
// push at either end, pop from the front and removal from the middle (a cached free block
// that a prefix hit revives). "Intrusive": the links are one prev/next slot per block id,
// allocated once; nothing is allocated after construction (vLLM's FreeKVCacheBlockQueue).
//
//   slot:   0 1 2 ... n-1 | n = sentinel
//   sentinel.next = front (next to be reused), sentinel.prev = back (most recently freed)
//
//   front ◀──▶ ... ◀──▶ back      PopFront() takes the least recently freed block.
//
// Invariants: a block is in the list iff its links are not kNotInList; following `next`
// from the sentinel visits size() blocks and returns to it, and prev mirrors next.
// Thread-safety: engine thread only (no internal locking).
#ifndef GLIMPSE_KVCACHE_FREE_BLOCK_QUEUE_H_
#define GLIMPSE_KVCACHE_FREE_BLOCK_QUEUE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace glimpse::kvcache {

class FreeBlockQueue {
 public:
  // An empty queue for block ids [0, num_blocks).
  explicit FreeBlockQueue(int32_t num_blocks);

  int32_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool Contains(int32_t block) const;
  // Front block (next PopFront); requires !empty().
  int32_t front() const;

  // Requires the block not in the queue.
  void PushBack(int32_t block);
  void PushFront(int32_t block);
  // Requires !empty().
  int32_t PopFront();
  // Requires the block in the queue.
  void Remove(int32_t block);

  // Front to back; for tests and debugging (O(size)).
  std::vector<int32_t> ToVector() const;
  // Internal: verifies the invariants above; Internal error naming the first violation.
  absl::Status CheckInvariants() const;

 private:
  static constexpr int32_t kNotInList = -1;

  void InsertBetween(int32_t block, int32_t before, int32_t after);
  int32_t sentinel() const { return static_cast<int32_t>(next_.size()) - 1; }

  std::vector<int32_t> prev_;  // [num_blocks + 1], slot num_blocks is the sentinel
  std::vector<int32_t> next_;  // [num_blocks + 1]
  int32_t size_ = 0;
};

}  // namespace glimpse::kvcache

#endif  // GLIMPSE_KVCACHE_FREE_BLOCK_QUEUE_H_
