#include "kvcache/block_pool.h"

#include "common/check.h"

namespace glimpse::kvcache {

BlockPool::BlockPool(int32_t num_blocks) : ref_counts_(num_blocks, 0) {
  free_list_.reserve(num_blocks);
  // Hand out low ids first.
  for (int32_t i = num_blocks - 1; i >= 0; --i) free_list_.push_back(i);
}

std::optional<std::vector<int32_t>> BlockPool::Allocate(int32_t n) {
  CHECK(n >= 0);
  if (n > num_free()) return std::nullopt;
  std::vector<int32_t> blocks(free_list_.end() - n, free_list_.end());
  free_list_.resize(free_list_.size() - n);
  for (int32_t b : blocks) ref_counts_[b] = 1;
  return blocks;
}

void BlockPool::AddRef(int32_t block) {
  CHECK(block >= 0 && block < num_blocks() && ref_counts_[block] > 0);
  ++ref_counts_[block];
}

void BlockPool::Release(int32_t block) {
  CHECK(block >= 0 && block < num_blocks() && ref_counts_[block] > 0);
  if (--ref_counts_[block] == 0) free_list_.push_back(block);
}

void BlockPool::ReleaseAll(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) Release(b);
}

}  // namespace glimpse::kvcache
