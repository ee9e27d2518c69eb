// Scheduler decisions with hand-built sequences and a real KvCacheManager; no model.
#include "scheduler/scheduler.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::scheduler {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void Init(int32_t num_blocks, SchedulerOptions options, int32_t num_host_blocks = 0) {
    kvcache::KvCacheManagerOptions kv_options;
    kv_options.num_blocks = num_blocks;
    kv_options.block_size = 4;
    kv_options.num_host_blocks = num_host_blocks;
    kv_ = std::make_unique<kvcache::KvCacheManager>(kv_options);
    scheduler_ = std::make_unique<Scheduler>(*kv_, options);
    now_ = Clock::now();
  }

  // A waiting sequence with a prompt of `prompt_len` tokens (ids start at `first_token`).
  Sequence* Add(int32_t prompt_len, int32_t priority = 0, int32_t first_token = 100) {
    auto request = std::make_unique<Request>();
    request->spec.scheduling.priority = priority;
    request->arrival_order = static_cast<int64_t>(requests_.size());
    request->arrival_time = now_;
    auto seq = std::make_unique<Sequence>();
    seq->request = request.get();
    seq->key = static_cast<kvcache::RequestKey>(requests_.size() + 1);
    for (int32_t i = 0; i < prompt_len; ++i) seq->tokens.push_back(first_token + i);
    seq->num_prompt_tokens = prompt_len;
    Sequence* raw = seq.get();
    request->sequences.push_back(std::move(seq));
    requests_.push_back(std::move(request));
    scheduler_->AddWaiting(raw);
    return raw;
  }

  // Runs one step as the engine would: schedule, "compute", and append a sampled token to
  // every sequence whose logits were produced.
  SchedulerOutput Step() {
    SchedulerOutput out = scheduler_->Schedule(now_);
    scheduler_->OnStepComputed(out);
    for (const ScheduledSequence& s : out.scheduled) {
      if (s.wants_logits) s.seq->tokens.push_back(7);
    }
    EXPECT_TRUE(kv_->CheckInvariants().ok()) << kv_->CheckInvariants();
    return out;
  }

  static int32_t TokensOf(const SchedulerOutput& out, const Sequence* seq) {
    for (const ScheduledSequence& s : out.scheduled) {
      if (s.seq == seq) return s.num_tokens;
    }
    return 0;
  }

  std::unique_ptr<kvcache::KvCacheManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<Request>> requests_;
  Clock::time_point now_;
};

TEST_F(SchedulerTest, LongPromptIsChunkedAndNeverStallsRunningDecodes) {
  SchedulerOptions options;
  options.max_step_tokens = 10;
  options.prefill_chunk_tokens = 8;
  Init(100, options);
  Sequence* a = Add(3);
  SchedulerOutput s1 = Step();
  EXPECT_EQ(TokensOf(s1, a), 3);
  Sequence* b = Add(30);
  // From now on `a` decodes one token every step and `b` takes what is left, <= 8.
  for (int step = 0; step < 3; ++step) {
    SchedulerOutput s = Step();
    EXPECT_EQ(TokensOf(s, a), 1) << step;
    EXPECT_EQ(TokensOf(s, b), 8) << step;
    EXPECT_EQ(s.scheduled.front().seq, a) << "running decodes come first";
    EXPECT_LE(s.num_tokens, 10);
  }
  // 24 of 30 prompt tokens are computed: the last 6 come with the logits for b's first token.
  SchedulerOutput last = Step();
  EXPECT_EQ(TokensOf(last, b), 6);
  for (const ScheduledSequence& sch : last.scheduled) {
    if (sch.seq == b) {
      EXPECT_TRUE(sch.wants_logits);
    }
  }
}

TEST_F(SchedulerTest, HigherPriorityIsAdmittedFirstAndAgingLetsLowPriorityIn) {
  SchedulerOptions options;
  options.max_running_sequences = 1;
  options.aging_seconds = 1.0;
  Init(100, options);
  Sequence* low = Add(4, /*priority=*/0);
  Sequence* high = Add(4, /*priority=*/2);
  SchedulerOutput s = Step();
  ASSERT_EQ(s.scheduled.size(), 1u);
  EXPECT_EQ(s.scheduled[0].seq, high);
  scheduler_->Remove(high);
  Sequence* newer_high = Add(4, /*priority=*/1);
  // `low` has waited 3 s: effective priority 0 + 3 > 1.
  requests_[0]->arrival_time = now_ - std::chrono::seconds(3);
  s = Step();
  ASSERT_EQ(s.scheduled.size(), 1u);
  EXPECT_EQ(s.scheduled[0].seq, low);
  EXPECT_EQ(newer_high->state, SequenceState::kWaiting);
}

TEST_F(SchedulerTest, AdmissionStopsAtTheFirstSequenceThatDoesNotFit) {
  Init(5, SchedulerOptions());  // 20 tokens of KV.
  Sequence* big = Add(16);
  Sequence* huge = Add(40);  // Cannot fit now; must not be overtaken by `small`.
  Sequence* small = Add(2);
  SchedulerOutput s = Step();
  EXPECT_EQ(TokensOf(s, big), 16);
  EXPECT_EQ(TokensOf(s, huge), 0);
  EXPECT_EQ(TokensOf(s, small), 0);
  EXPECT_EQ(small->state, SequenceState::kWaiting);
}

TEST_F(SchedulerTest, OutOfBlocksPreemptsLowestPriorityByRecompute) {
  Init(4, SchedulerOptions());  // 16 tokens.
  Sequence* important = Add(7, /*priority=*/1);
  Sequence* bulk = Add(7, /*priority=*/0);
  Step();  // Both prefilled: 2 + 2 blocks, pool full.
  EXPECT_EQ(kv_->num_free_blocks(), 0);
  // Next step both need a third block for position 8; `bulk` is preempted.
  Step();
  SchedulerOutput s = Step();
  EXPECT_EQ(bulk->state, SequenceState::kWaiting);
  EXPECT_EQ(bulk->num_computed_tokens, 0);
  EXPECT_GE(bulk->num_preemptions, 1);
  EXPECT_EQ(important->state, SequenceState::kRunning);
  EXPECT_EQ(TokensOf(s, important), 1);
}

TEST_F(SchedulerTest, SwapPreemptionKeepsComputedTokensAndResumes) {
  SchedulerOptions options;
  options.preemption_mode = PreemptionMode::kSwap;
  options.enable_prefix_caching = false;  // Otherwise swap-in may reuse cached device blocks.
  Init(4, options, /*num_host_blocks=*/8);
  Sequence* important = Add(7, 1);
  Sequence* bulk = Add(7, 0);
  bool copied_out = false;
  for (int step = 0; step < 3 && bulk->state != SequenceState::kSwapped; ++step) {
    for (const KvCopy& c : Step().copies) copied_out |= c.kind == KvCopy::Kind::kDeviceToHost;
  }
  ASSERT_EQ(bulk->state, SequenceState::kSwapped);
  EXPECT_TRUE(copied_out);
  EXPECT_GT(bulk->num_computed_tokens, 0) << "swapping keeps the computed tokens";
  // Free room by finishing the important sequence: the swapped one comes back first.
  scheduler_->Remove(important);
  SchedulerOutput back = Step();
  EXPECT_EQ(bulk->state, SequenceState::kRunning);
  EXPECT_EQ(TokensOf(back, bulk), 1);
  bool copied_in = false;
  for (const KvCopy& c : back.copies) copied_in |= c.kind == KvCopy::Kind::kHostToDevice;
  EXPECT_TRUE(copied_in);
}

TEST_F(SchedulerTest, RunningCapIsHonoured) {
  SchedulerOptions options;
  options.max_running_sequences = 3;
  Init(100, options);
  for (int i = 0; i < 5; ++i) Add(2, 0, 200 + 10 * i);
  SchedulerOutput s = Step();
  EXPECT_EQ(s.scheduled.size(), 3u);
  EXPECT_EQ(scheduler_->num_running(), 3);
  EXPECT_EQ(scheduler_->num_waiting(), 2);
}

TEST_F(SchedulerTest, SharedPrefixStartsFromTheCache) {
  Init(100, SchedulerOptions());
  Sequence* first = Add(13, 0, 500);
  Step();  // 13 tokens computed; blocks [0,4),[4,8),[8,12) committed.
  Sequence* second = Add(13, 0, 500);  // Same prompt.
  SchedulerOutput s = Step();
  EXPECT_EQ(second->num_cached_tokens, 12);
  EXPECT_EQ(TokensOf(s, second), 1);
  EXPECT_EQ(TokensOf(s, first), 1);
}

// A waiting sequence the pool cannot take yet is looked up in the prefix cache every step; its
// prompt's blocks are hashed once, not once per step.
TEST_F(SchedulerTest, AWaitingPromptIsHashedOnceHoweverManyStepsItWaits) {
  Init(6, SchedulerOptions());  // 24 tokens of KV.
  Sequence* running = Add(16, 0, 500);
  Step();  // 16 tokens computed: 4 committed blocks.
  // Starts with running's 16 tokens (4 cached blocks), then differs; needs 10 blocks in all.
  Sequence* waiting = Add(40, 0, 500);
  const int64_t before = kv_->num_lookup_hashes();
  for (int i = 0; i < 5; ++i) {
    SchedulerOutput s = Step();
    EXPECT_EQ(TokensOf(s, running), 1);
    EXPECT_EQ(waiting->state, SequenceState::kWaiting) << "step " << i;
  }
  EXPECT_EQ(kv_->num_lookup_hashes() - before, 5);  // 4 hits and the first miss, once
}

}  // namespace
}  // namespace glimpse::scheduler
