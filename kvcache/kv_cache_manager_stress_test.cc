// Randomized model check of KvCacheManager: thousands of seeded admit / step / commit / fork /
// swap / free operations against a simulated KV storage. Every slot of the simulated storage
// holds a fingerprint of the token prefix whose KV it would hold, so the test catches wrong
// prefix hits, lost or misdirected copies and writes into shared blocks — not just
// bookkeeping errors (which CheckInvariants after every operation catches).
#include <cstdint>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "kvcache/kv_cache_manager.h"

namespace glimpse::kvcache {
namespace {

constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 48;
constexpr int32_t kNumHostBlocks = 24;
constexpr uint64_t kGarbage = 0;

// One simulated request: its tokens (prompt + sampled so far) and progress.
struct SimRequest {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> prefix;  // [tokens.size()] fingerprint of tokens[0..i]
  int32_t num_computed = 0;
  std::string salt;
  bool swapped = false;

  void Append(int32_t token) {
    const uint64_t parent = prefix.empty() ? 0x9e3779b97f4a7c15ULL : prefix.back();
    prefix.push_back((parent ^ static_cast<uint32_t>(token)) * 0x100000001b3ULL + 1);
    tokens.push_back(token);
  }
};

class Simulation {
 public:
  explicit Simulation(uint32_t seed)
      : rng_(seed),
        m_(KvCacheManagerOptions{
            .num_blocks = kNumBlocks, .block_size = kBlockSize, .num_host_blocks = kNumHostBlocks}),
        device_(kNumBlocks, std::vector<uint64_t>(kBlockSize, kGarbage)),
        host_(kNumHostBlocks, std::vector<uint64_t>(kBlockSize, kGarbage)) {}

  void Run(int num_ops) {
    // Operations, weighted by how often they are drawn.
    using Op = void (Simulation::*)();
    static constexpr Op kOps[] = {&Simulation::Admit,    &Simulation::Admit, &Simulation::Step,
                                  &Simulation::Step,     &Simulation::Step,  &Simulation::Step,
                                  &Simulation::ForkOne,  &Simulation::Swap,  &Simulation::Free,
                                  &Simulation::Recompute};
    for (int op = 0; op < num_ops && !::testing::Test::HasFatalFailure(); ++op) {
      SCOPED_TRACE(op);
      (this->*kOps[Uniform(std::size(kOps))])();
      const absl::Status s = m_.CheckInvariants();
      ASSERT_TRUE(s.ok()) << s;
      PoisonPlainFreeBlocks();
    }
    for (const auto& [key, r] : requests_) m_.Free(key);
    ASSERT_EQ(m_.num_free_blocks(), kNumBlocks);
    ASSERT_EQ(m_.num_free_host_blocks(), kNumHostBlocks);
    EXPECT_GT(m_.prefix_cache_stats().hit_tokens, 0) << "the workload should share prefixes";
    EXPECT_GT(num_copies_, 0);
  }

 private:
  int32_t Uniform(int32_t n) { return static_cast<int32_t>(rng_() % n); }

  RequestKey PickRequest(bool want_swapped) {
    std::vector<RequestKey> keys;
    for (const auto& [key, r] : requests_) {
      if (r.swapped == want_swapped) keys.push_back(key);
    }
    return keys.empty() ? -1 : keys[Uniform(static_cast<int32_t>(keys.size()))];
  }

  // Prompts are drawn from a few shared stems so that prefix hits happen.
  void Admit() {
    if (requests_.size() >= 10) return;
    SimRequest r;
    r.salt = Uniform(4) == 0 ? "other" : "";
    const int32_t stem = Uniform(3), stem_len = Uniform(14);
    for (int32_t i = 0; i < stem_len; ++i) r.Append(stem * 1000 + i);
    for (int32_t i = 1 + Uniform(6); i > 0; --i) r.Append(Uniform(5));
    const RequestKey key = next_key_++;
    if (TryStart(key, r)) requests_.emplace(key, std::move(r));
  }

  // Looks the prompt up and allocates its first chunk; false if the pool is short.
  bool TryStart(RequestKey key, SimRequest& r) {
    const PrefixHit hit = m_.FindCachedPrefix(r.tokens, r.salt);
    EXPECT_LT(hit.num_tokens, static_cast<int32_t>(r.tokens.size()));
    const int32_t total = std::min<int32_t>(r.tokens.size(), hit.num_tokens + 1 + Uniform(8));
    if (!AllocateChecked(key, hit.num_tokens, total, &hit)) return false;
    r.num_computed = hit.num_tokens;
    ExpectContent(key, r);  // the hit's blocks hold this prompt's prefix
    return true;
  }

  bool AllocateChecked(RequestKey key, int32_t computed, int32_t total, const PrefixHit* hit) {
    const int32_t needed = m_.NumBlocksToAllocate(key, computed, total, hit);
    const int32_t free_before = m_.num_free_blocks();
    std::optional<Allocation> a = m_.Allocate(key, computed, total, hit);
    EXPECT_EQ(a.has_value(), needed <= free_before);
    if (!a.has_value()) {
      EXPECT_EQ(m_.num_free_blocks(), free_before);
      return false;
    }
    EXPECT_EQ(free_before - m_.num_free_blocks(), needed);
    EXPECT_GE(static_cast<int32_t>(m_.BlockTable(key).size()) * kBlockSize, total);
    for (const BlockCopy& c : a->copies) device_[c.dst] = device_[c.src];
    num_copies_ += static_cast<int64_t>(a->copies.size());
    return true;
  }

  // One engine step for a random resident request: a prefill chunk or a decode, plus
  // lookahead slots; then its KV is "written" and its full blocks committed.
  void Step() {
    const RequestKey key = PickRequest(false);
    if (key < 0) return;
    SimRequest& r = requests_.at(key);
    const int32_t pending = static_cast<int32_t>(r.tokens.size()) - r.num_computed;
    const int32_t n = std::min(pending, 1 + Uniform(6));
    if (!AllocateChecked(key, r.num_computed, r.num_computed + n + Uniform(4), nullptr)) return;
    ExpectContent(key, r);
    const std::vector<int32_t>& table = m_.BlockTable(key);
    for (int32_t p = r.num_computed; p < r.num_computed + n; ++p) {
      const int32_t block = table[p / kBlockSize];
      ASSERT_EQ(m_.pool().ref_count(block), 1) << "write into a shared block";
      ASSERT_EQ(m_.pool().hash(block), nullptr) << "write into a published block";
      device_[block][p % kBlockSize] = r.prefix[p];
    }
    r.num_computed += n;
    if (r.num_computed == static_cast<int32_t>(r.tokens.size())) r.Append(Uniform(5));
    m_.CommitFullBlocks(key, r.tokens, r.num_computed, r.salt);
    if (r.tokens.size() > 40) Finish(key);
  }

  void ForkOne() {
    const RequestKey parent = PickRequest(false);
    if (parent < 0 || requests_.size() >= 10) return;
    SimRequest child = requests_.at(parent);
    child.tokens.resize(child.num_computed);  // the child samples its own next token
    child.prefix.resize(child.num_computed);
    child.Append(100 + Uniform(5));
    const RequestKey key = next_key_++;
    m_.Fork(parent, key, child.num_computed);
    ExpectContent(key, child);
    requests_.emplace(key, std::move(child));
  }

  void Swap() {
    const bool in = Uniform(2) == 0;
    const RequestKey key = PickRequest(in);
    if (key < 0) return;
    SimRequest& r = requests_.at(key);
    const int32_t free_before = m_.num_free_blocks();
    if (in) {
      const int32_t needed = m_.NumBlocksToSwapIn(key);
      auto copies = m_.SwapIn(key);
      ASSERT_EQ(copies.has_value(), needed <= free_before);
      if (!copies.has_value()) return;
      EXPECT_EQ(free_before - m_.num_free_blocks(), needed);
      for (const BlockCopy& c : *copies) device_[c.dst] = host_[c.src];
      r.swapped = false;
      ExpectContent(key, r);
    } else {
      ExpectContent(key, r);
      auto copies = m_.SwapOut(key, r.num_computed);
      if (!copies.has_value()) return;
      for (const BlockCopy& c : *copies) host_[c.dst] = device_[c.src];
      r.swapped = true;
    }
  }

  void Free() {
    const RequestKey key = PickRequest(Uniform(4) == 0);
    if (key >= 0) Finish(key);
  }

  // Preemption by recompute: drop everything, start again from the prefix cache.
  void Recompute() {
    const RequestKey key = PickRequest(false);
    if (key < 0) return;
    m_.Free(key);
    SimRequest r = std::move(requests_.at(key));
    requests_.erase(key);
    PoisonPlainFreeBlocks();
    if (TryStart(key, r)) requests_.emplace(key, std::move(r));
  }

  void Finish(RequestKey key) {
    m_.Free(key);
    requests_.erase(key);
  }

  // Every computed position of a resident request must read back its own prefix.
  void ExpectContent(RequestKey key, const SimRequest& r) {
    const std::vector<int32_t>& table = m_.BlockTable(key);
    for (int32_t p = 0; p < r.num_computed; ++p) {
      ASSERT_EQ(device_[table[p / kBlockSize]][p % kBlockSize], r.prefix[p])
          << "request " << key << " position " << p;
    }
  }

  // Plain free blocks hold nothing anyone may read; cached free ones must stay intact.
  void PoisonPlainFreeBlocks() {
    for (int32_t b = 0; b < kNumBlocks; ++b) {
      if (m_.pool().ref_count(b) == 0 && m_.pool().hash(b) == nullptr) {
        device_[b].assign(kBlockSize, kGarbage);
      }
    }
  }

  std::mt19937 rng_;
  KvCacheManager m_;
  std::vector<std::vector<uint64_t>> device_;  // [kNumBlocks][kBlockSize] prefix fingerprints
  std::vector<std::vector<uint64_t>> host_;    // [kNumHostBlocks][kBlockSize]
  absl::flat_hash_map<RequestKey, SimRequest> requests_;
  RequestKey next_key_ = 1;
  int64_t num_copies_ = 0;
};

TEST(KvCacheManagerStressTest, RandomOperationsKeepInvariantsAndKvContent) {
  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
    SCOPED_TRACE(seed);
    Simulation sim(seed);
    sim.Run(4000);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace glimpse::kvcache
