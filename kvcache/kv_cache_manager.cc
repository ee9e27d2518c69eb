#include "kvcache/kv_cache_manager.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace glimpse::kvcache {

KvCacheManager::KvCacheManager(const KvCacheManagerOptions& options)
    : block_size_(options.block_size),
      hasher_(options.hash_key),
      pool_(options.num_blocks),
      host_(options.num_host_blocks) {
  CHECK(options.block_size > 0);
}

int32_t KvCacheManager::NumBlocksFor(int32_t num_tokens) const {
  CHECK(num_tokens >= 0);
  return (num_tokens + block_size_ - 1) / block_size_;
}

const KvCacheManager::RequestBlocks* KvCacheManager::Find(RequestKey key) const {
  auto it = requests_.find(key);
  return it == requests_.end() ? nullptr : &it->second;
}

KvCacheManager::RequestBlocks& KvCacheManager::Get(RequestKey key) {
  auto it = requests_.find(key);
  CHECK(it != requests_.end());
  return it->second;
}

// ---- Prefix cache ----------------------------------------------------------------------------

PrefixHit KvCacheManager::FindCachedPrefix(std::span<const int32_t> prompt,
                                           std::string_view salt) const {
  std::vector<BlockHash> chain;
  return FindCachedPrefix(prompt, salt, &chain);
}

PrefixHit KvCacheManager::FindCachedPrefix(std::span<const int32_t> prompt, std::string_view salt,
                                           std::vector<BlockHash>* chain) const {
  PrefixHit hit;
  hit.num_prompt_tokens = static_cast<int32_t>(prompt.size());
  if (prompt.empty()) return hit;
  // Whole blocks only, and never the last prompt token: its logits must be computed.
  const int32_t max_blocks = (hit.num_prompt_tokens - 1) / block_size_;
  for (int32_t i = 0; i < max_blocks; ++i) {
    if (i == static_cast<int32_t>(chain->size())) {
      const BlockHash parent = i == 0 ? hasher_.Root(salt) : (*chain)[i - 1];
      chain->push_back(
          hasher_.Block(parent, prompt.subspan(static_cast<size_t>(i) * block_size_, block_size_)));
      ++num_lookup_hashes_;
    }
    const BlockHash hash = (*chain)[i];
    const std::optional<int32_t> block = pool_.FindCached(hash);
    if (!block.has_value()) break;
    hit.blocks.push_back(*block);
    hit.hashes.push_back(hash);
  }
  hit.num_tokens = static_cast<int32_t>(hit.blocks.size()) * block_size_;
  return hit;
}

void KvCacheManager::CommitFullBlocks(RequestKey key, std::span<const int32_t> token_ids,
                                      int32_t num_computed_tokens, std::string_view salt) {
  RequestBlocks& request = Get(key);
  CHECK(!request.swapped_out);
  const int32_t num_tokens = std::min(num_computed_tokens, static_cast<int32_t>(token_ids.size()));
  const int32_t num_full =
      std::min(num_tokens / block_size_, static_cast<int32_t>(request.blocks.size()));
  for (int32_t i = static_cast<int32_t>(request.chain.size()); i < num_full; ++i) {
    const BlockHash parent = i == 0 ? hasher_.Root(salt) : request.chain[i - 1];
    const BlockHash hash =
        hasher_.Block(parent, token_ids.subspan(static_cast<size_t>(i) * block_size_, block_size_));
    // False when another block holds this content already: that one keeps serving hits.
    pool_.Publish(request.blocks[i], hash);
    request.chain.push_back(hash);
  }
}

// ---- Allocation ------------------------------------------------------------------------------

KvCacheManager::AllocationPlan KvCacheManager::PlanAllocation(const RequestBlocks* request,
                                                              int32_t num_computed_tokens,
                                                              int32_t num_total_tokens,
                                                              const PrefixHit* hit) const {
  CHECK(0 <= num_computed_tokens && num_computed_tokens <= num_total_tokens);
  CHECK(request == nullptr || !request->swapped_out);
  AllocationPlan plan;
  int32_t num_existing = request ? static_cast<int32_t>(request->blocks.size()) : 0;
  if (hit != nullptr) {
    CHECK(num_existing == 0);  // a hit only starts a table
    CHECK(hit->blocks.size() == hit->hashes.size());
    CHECK(hit->num_tokens == static_cast<int32_t>(hit->blocks.size()) * block_size_);
    CHECK(num_computed_tokens >= hit->num_tokens);
    for (size_t i = 0; i < hit->blocks.size(); ++i) {
      const BlockHash* hash = pool_.hash(hit->blocks[i]);
      CHECK(hash != nullptr && *hash == hit->hashes[i]);  // stale PrefixHit: a caller bug
      if (pool_.ref_count(hit->blocks[i]) == 0) ++plan.num_revived;
    }
    num_existing = static_cast<int32_t>(hit->blocks.size());
  }
  CHECK(num_computed_tokens <= num_existing * block_size_);
  const int32_t num_needed = NumBlocksFor(num_total_tokens);
  plan.num_appended = std::max(0, num_needed - num_existing);
  if (request != nullptr && hit == nullptr) {  // a hit's blocks all precede the writes
    // Committed blocks are final; only later positions may be written.
    CHECK(num_computed_tokens >= static_cast<int32_t>(request->chain.size()) * block_size_);
    const int32_t end = std::min(num_existing, num_needed);
    for (int32_t i = num_computed_tokens / block_size_; i < end; ++i) {
      if (pool_.ref_count(request->blocks[i]) > 1) plan.cow_slots.push_back(i);
    }
  }
  return plan;
}

int32_t KvCacheManager::NumBlocksToAllocate(RequestKey key, int32_t num_computed_tokens,
                                            int32_t num_total_tokens, const PrefixHit* hit) const {
  const AllocationPlan plan = PlanAllocation(Find(key), num_computed_tokens, num_total_tokens, hit);
  return plan.num_fresh() + plan.num_revived;
}

void KvCacheManager::AdoptHit(RequestBlocks& request, const PrefixHit& hit) {
  // Revive first, so that the fresh allocation that follows cannot evict these blocks.
  for (int32_t block : hit.blocks) pool_.AddRef(block);
  request.blocks = hit.blocks;
  request.chain = hit.hashes;
  ++stats_.queries;
  stats_.queried_tokens += hit.num_prompt_tokens;
  stats_.hit_tokens += hit.num_tokens;
}

std::optional<Allocation> KvCacheManager::Allocate(RequestKey key, int32_t num_computed_tokens,
                                                   int32_t num_total_tokens, const PrefixHit* hit) {
  const AllocationPlan plan = PlanAllocation(Find(key), num_computed_tokens, num_total_tokens, hit);
  if (plan.num_fresh() + plan.num_revived > pool_.num_free()) return std::nullopt;

  // Apply: nothing below can fail.
  RequestBlocks& request = requests_[key];
  if (hit != nullptr) AdoptHit(request, *hit);
  std::vector<int32_t> fresh = *pool_.Allocate(plan.num_fresh());
  auto next_fresh = fresh.begin();
  Allocation allocation;
  for (int32_t slot : plan.cow_slots) {
    const int32_t shared = request.blocks[slot];
    const int32_t own = *next_fresh++;
    // Only the block holding position num_computed_tokens has computed KV worth copying;
    // shared blocks wholly past it hold nothing yet.
    if (slot * block_size_ < num_computed_tokens) allocation.copies.push_back({shared, own});
    request.blocks[slot] = own;
    pool_.Release(shared);
  }
  request.blocks.insert(request.blocks.end(), next_fresh, fresh.end());
  return allocation;
}

void KvCacheManager::Fork(RequestKey parent, RequestKey child, int32_t num_computed_tokens) {
  CHECK(parent != child && !Contains(child));
  const RequestBlocks& from = Get(parent);
  CHECK(!from.swapped_out);
  const int32_t num_shared = NumBlocksFor(num_computed_tokens);
  CHECK(num_shared <= static_cast<int32_t>(from.blocks.size()));
  CHECK(static_cast<int32_t>(from.chain.size()) * block_size_ <= num_computed_tokens);
  RequestBlocks to;
  to.blocks.assign(from.blocks.begin(), from.blocks.begin() + num_shared);
  to.chain = from.chain;
  for (int32_t block : to.blocks) pool_.AddRef(block);
  requests_.emplace(child, std::move(to));
}

void KvCacheManager::Free(RequestKey key) {
  auto it = requests_.find(key);
  if (it == requests_.end()) return;
  pool_.ReleaseAll(it->second.blocks);
  host_.Release(it->second.host_blocks);
  requests_.erase(it);
}

// ---- Swapping --------------------------------------------------------------------------------

std::optional<std::vector<BlockCopy>> KvCacheManager::SwapOut(RequestKey key,
                                                              int32_t num_computed_tokens) {
  RequestBlocks& request = Get(key);
  CHECK(!request.swapped_out);
  CHECK(static_cast<int32_t>(request.chain.size()) * block_size_ <= num_computed_tokens);
  const int32_t num_kept = NumBlocksFor(num_computed_tokens);
  CHECK(num_kept <= static_cast<int32_t>(request.blocks.size()));
  std::optional<std::vector<int32_t>> host = host_.Allocate(num_kept);
  if (!host.has_value()) return std::nullopt;

  std::vector<BlockCopy> copies;
  copies.reserve(num_kept);
  for (int32_t i = 0; i < num_kept; ++i) copies.push_back({request.blocks[i], (*host)[i]});
  // Committed blocks stay cached on the device while they last; SwapIn reuses them.
  pool_.ReleaseAll(request.blocks);
  request.blocks.clear();
  request.host_blocks = std::move(*host);
  request.swapped_out = true;
  return copies;
}

KvCacheManager::SwapInPlan KvCacheManager::PlanSwapIn(const RequestBlocks& request) const {
  CHECK(request.swapped_out);
  SwapInPlan plan;
  plan.reuse.assign(request.host_blocks.size(), -1);
  for (size_t i = 0; i < request.host_blocks.size(); ++i) {
    std::optional<int32_t> cached;
    if (i < request.chain.size()) cached = pool_.FindCached(request.chain[i]);
    if (cached.has_value()) {
      plan.reuse[i] = *cached;
      if (pool_.ref_count(*cached) == 0) ++plan.num_revived;
    } else {
      ++plan.num_fresh;
    }
  }
  return plan;
}

int32_t KvCacheManager::NumBlocksToSwapIn(RequestKey key) const {
  const RequestBlocks* request = Find(key);
  CHECK(request != nullptr);
  const SwapInPlan plan = PlanSwapIn(*request);
  return plan.num_fresh + plan.num_revived;
}

std::optional<std::vector<BlockCopy>> KvCacheManager::SwapIn(RequestKey key) {
  RequestBlocks& request = Get(key);
  const SwapInPlan plan = PlanSwapIn(request);
  if (plan.num_fresh + plan.num_revived > pool_.num_free()) return std::nullopt;

  for (int32_t block : plan.reuse) {
    if (block >= 0) pool_.AddRef(block);  // before Allocate, which could evict it
  }
  const std::vector<int32_t> fresh = *pool_.Allocate(plan.num_fresh);
  auto next_fresh = fresh.begin();
  std::vector<BlockCopy> copies;
  request.blocks.clear();
  for (size_t i = 0; i < plan.reuse.size(); ++i) {
    int32_t block = plan.reuse[i];
    if (block < 0) {
      block = *next_fresh++;
      copies.push_back({request.host_blocks[i], block});
      // Publishing before the copy lands is safe: the copy runs before any forward pass.
      if (i < request.chain.size()) pool_.Publish(block, request.chain[i]);
    }
    request.blocks.push_back(block);
  }
  host_.Release(request.host_blocks);
  request.host_blocks.clear();
  request.swapped_out = false;
  return copies;
}

// ---- Queries ---------------------------------------------------------------------------------

bool KvCacheManager::IsSwappedOut(RequestKey key) const {
  const RequestBlocks* request = Find(key);
  return request != nullptr && request->swapped_out;
}

const std::vector<int32_t>& KvCacheManager::BlockTable(RequestKey key) const {
  const RequestBlocks* request = Find(key);
  CHECK(request != nullptr);
  return request->blocks;
}

int32_t KvCacheManager::NumCommittedBlocks(RequestKey key) const {
  const RequestBlocks* request = Find(key);
  CHECK(request != nullptr);
  return static_cast<int32_t>(request->chain.size());
}

double KvCacheManager::usage_ratio() const {
  if (num_blocks() == 0) return 0.0;
  return static_cast<double>(num_used_blocks()) / num_blocks();
}

// ---- Invariants ------------------------------------------------------------------------------

absl::Status KvCacheManager::CheckRequest(RequestKey key, const RequestBlocks& request,
                                          std::vector<int32_t>& refs,
                                          std::vector<bool>& host_seen) const {
  const std::string name = absl::StrCat("request ", key, ": ");
  if (request.swapped_out) {
    if (!request.blocks.empty()) return absl::InternalError(name + "swapped out but has blocks");
    if (request.chain.size() > request.host_blocks.size()) {
      return absl::InternalError(name + "more committed blocks than swapped blocks");
    }
    for (int32_t b : request.host_blocks) {
      if (!host_.in_use(b) || host_seen[b]) {
        return absl::InternalError(absl::StrCat(name, "host block ", b, " not owned or shared"));
      }
      host_seen[b] = true;
    }
    return absl::OkStatus();
  }
  if (!request.host_blocks.empty()) return absl::InternalError(name + "resident with host blocks");
  if (request.chain.size() > request.blocks.size()) {
    return absl::InternalError(name + "more committed blocks than blocks");
  }
  std::vector<int32_t> sorted = request.blocks;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return absl::InternalError(name + "a block appears twice in its table");
  }
  for (size_t i = 0; i < request.blocks.size(); ++i) {
    const int32_t b = request.blocks[i];
    if (b < 0 || b >= num_blocks()) return absl::InternalError(name + "block id out of range");
    ++refs[b];
    const BlockHash* hash = pool_.hash(b);
    if (i < request.chain.size() && hash != nullptr && !(*hash == request.chain[i])) {
      return absl::InternalError(absl::StrCat(name, "block ", b, " holds another hash"));
    }
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::CheckInvariants() const {
  if (absl::Status s = pool_.CheckInvariants(); !s.ok()) return s;
  if (absl::Status s = host_.CheckInvariants(); !s.ok()) return s;
  std::vector<int32_t> refs(num_blocks(), 0);
  std::vector<bool> host_seen(num_host_blocks(), false);
  for (const auto& [key, request] : requests_) {
    if (absl::Status s = CheckRequest(key, request, refs, host_seen); !s.ok()) return s;
  }
  for (int32_t b = 0; b < num_blocks(); ++b) {
    if (refs[b] != pool_.ref_count(b)) {
      return absl::InternalError(absl::StrCat("block ", b, ": ref count ", pool_.ref_count(b),
                                              " but held by ", refs[b], " tables"));
    }
  }
  for (int32_t b = 0; b < num_host_blocks(); ++b) {
    if (host_seen[b] != host_.in_use(b)) {
      return absl::InternalError(absl::StrCat("host block ", b, " leaked"));
    }
  }
  return absl::OkStatus();
}

}  // namespace glimpse::kvcache
