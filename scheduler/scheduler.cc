#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace glimpse::scheduler {
namespace {

// Higher priority first, then earlier arrival, then lower index.
bool RunsBefore(const Sequence* a, const Sequence* b) {
  if (a->request->spec.scheduling.priority != b->request->spec.scheduling.priority) {
    return a->request->spec.scheduling.priority > b->request->spec.scheduling.priority;
  }
  if (a->request->arrival_order != b->request->arrival_order) {
    return a->request->arrival_order < b->request->arrival_order;
  }
  return a->index < b->index;
}

void Erase(std::vector<Sequence*>& v, Sequence* seq) {
  v.erase(std::remove(v.begin(), v.end(), seq), v.end());
}

}  // namespace

Scheduler::Scheduler(kvcache::KvCacheManager& kv, const SchedulerOptions& options)
    : kv_(kv), options_(options) {
  CHECK(options_.max_step_tokens >= 1 && options_.prefill_chunk_tokens >= 1 &&
        options_.max_running_sequences >= 1);
}

void Scheduler::AddWaiting(Sequence* seq) {
  seq->state = SequenceState::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::AddForked(Sequence* parent, Sequence* child) {
  CHECK(parent->state == SequenceState::kRunning);
  kv_.Fork(parent->key, child->key, parent->num_computed_tokens);
  child->num_computed_tokens = parent->num_computed_tokens;
  child->state = SequenceState::kRunning;
  running_.push_back(child);
}

void Scheduler::Remove(Sequence* seq) {
  Erase(running_, seq);
  Erase(waiting_, seq);
  Erase(swapped_, seq);
  kv_.Free(seq->key);
  seq->state = SequenceState::kFinished;
}

int32_t Scheduler::TokensThisStep(const Sequence* seq, int32_t budget) const {
  return std::min({seq->num_uncomputed(), budget, options_.prefill_chunk_tokens});
}

void Scheduler::AppendCopies(const std::vector<kvcache::BlockCopy>& copies, KvCopy::Kind kind,
                             SchedulerOutput& out) {
  for (const kvcache::BlockCopy& c : copies) out.copies.push_back({kind, c.src, c.dst});
}

void Scheduler::Schedule(Sequence* seq, int32_t num_tokens, SchedulerOutput& out) {
  ScheduledSequence s;
  s.seq = seq;
  s.num_tokens = num_tokens;
  s.wants_logits = seq->num_computed_tokens + num_tokens == static_cast<int32_t>(seq->tokens.size());
  out.scheduled.push_back(s);
  out.num_tokens += num_tokens;
  seq->peak_blocks = std::max(seq->peak_blocks, static_cast<int32_t>(kv_.BlockTable(seq->key).size()));
}

void Scheduler::Preempt(Sequence* victim, SchedulerOutput& out) {
  Erase(running_, victim);
  ++victim->num_preemptions;
  out.preempted.push_back(victim);
  if (options_.preemption_mode == PreemptionMode::kSwap) {
    if (auto copies = kv_.SwapOut(victim->key, victim->num_computed_tokens)) {
      AppendCopies(*copies, KvCopy::Kind::kDeviceToHost, out);
      victim->state = SequenceState::kSwapped;
      swapped_.push_back(victim);
      return;
    }
    // Host space is full: fall back to recomputation.
  }
  kv_.Free(victim->key);
  victim->num_computed_tokens = 0;
  victim->state = SequenceState::kWaiting;
  waiting_.push_back(victim);
}

bool Scheduler::GrowRunning(Sequence* seq, int32_t num_tokens, SchedulerOutput& out) {
  while (true) {
    auto allocation =
        kv_.Allocate(seq->key, seq->num_computed_tokens, seq->num_computed_tokens + num_tokens);
    if (allocation.has_value()) {
      AppendCopies(allocation->copies, KvCopy::Kind::kDeviceToDevice, out);
      return true;
    }
    // Victims come from the back: lowest priority, latest arrival, not yet scheduled.
    Sequence* victim = running_.back();
    Preempt(victim, out);
    if (victim == seq) return false;
  }
}

bool Scheduler::TryResumeSwapped(Sequence* seq, int32_t budget, SchedulerOutput& out) {
  const int32_t n = TokensThisStep(seq, budget);
  const int32_t need = kv_.NumBlocksToSwapIn(seq->key) +
                       kv_.NumBlocksFor(seq->num_computed_tokens + n) -
                       kv_.NumBlocksFor(seq->num_computed_tokens);
  if (!kv_.CanAllocate(need)) return false;
  auto copies = kv_.SwapIn(seq->key);
  if (!copies.has_value()) return false;
  AppendCopies(*copies, KvCopy::Kind::kHostToDevice, out);
  seq->state = SequenceState::kRunning;
  Erase(swapped_, seq);
  running_.push_back(seq);
  if (!GrowRunning(seq, n, out)) return false;
  Schedule(seq, n, out);
  return true;
}

bool Scheduler::TryAdmit(Sequence* seq, int32_t budget, SchedulerOutput& out) {
  const EngineRequest& spec = seq->request->spec;
  kvcache::PrefixHit hit;
  const bool use_cache = options_.enable_prefix_caching && !spec.kv.bypass_prefix_cache;
  if (use_cache) hit = kv_.FindCachedPrefix(seq->tokens, spec.kv.cache_salt, &seq->prefix_chain);
  const int32_t computed = hit.num_tokens;
  const int32_t n = std::min({static_cast<int32_t>(seq->tokens.size()) - computed, budget,
                              options_.prefill_chunk_tokens});
  auto allocation = kv_.Allocate(seq->key, computed, computed + n, use_cache ? &hit : nullptr);
  if (!allocation.has_value()) return false;
  AppendCopies(allocation->copies, KvCopy::Kind::kDeviceToDevice, out);
  seq->num_computed_tokens = computed;
  if (seq->num_preemptions == 0) seq->num_cached_tokens = computed;
  seq->state = SequenceState::kRunning;
  Erase(waiting_, seq);
  running_.push_back(seq);
  Schedule(seq, n, out);
  return true;
}

SchedulerOutput Scheduler::Schedule(Clock::time_point now) {
  SchedulerOutput out;
  int32_t budget = options_.max_step_tokens;
  std::stable_sort(running_.begin(), running_.end(), RunsBefore);
  // Running sequences. Preemption removes from the back, so index i stays valid.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int32_t n = TokensThisStep(seq, budget);
    if (!GrowRunning(seq, n, out)) continue;  // seq itself was preempted (it was last).
    Schedule(seq, n, out);
    budget -= n;
    ++i;
  }
  if (!out.preempted.empty()) return out;

  std::stable_sort(swapped_.begin(), swapped_.end(), RunsBefore);
  while (!swapped_.empty() && budget > 0 &&
         num_running() < options_.max_running_sequences) {
    Sequence* seq = swapped_.front();
    if (!TryResumeSwapped(seq, budget, out)) return out;
    budget -= out.scheduled.back().num_tokens;
  }
  if (!swapped_.empty()) return out;

  auto effective_priority = [&](const Sequence* s) {
    const double waited = std::chrono::duration<double>(now - s->request->arrival_time).count();
    return s->request->spec.scheduling.priority +
           static_cast<int64_t>(std::floor(waited / options_.aging_seconds));
  };
  std::stable_sort(waiting_.begin(), waiting_.end(), [&](const Sequence* a, const Sequence* b) {
    const int64_t pa = effective_priority(a), pb = effective_priority(b);
    if (pa != pb) return pa > pb;
    if (a->request->arrival_order != b->request->arrival_order) {
      return a->request->arrival_order < b->request->arrival_order;
    }
    return a->index < b->index;
  });
  while (!waiting_.empty() && budget > 0 && num_running() < options_.max_running_sequences) {
    Sequence* seq = waiting_.front();
    if (!TryAdmit(seq, budget, out)) break;
    budget -= out.scheduled.back().num_tokens;
  }
  return out;
}

void Scheduler::OnStepComputed(const SchedulerOutput& output) {
  for (const ScheduledSequence& s : output.scheduled) {
    Sequence* seq = s.seq;
    seq->num_computed_tokens += s.num_tokens;
    const EngineRequest& spec = seq->request->spec;
    if (options_.enable_prefix_caching && !spec.kv.bypass_prefix_cache) {
      kv_.CommitFullBlocks(seq->key, seq->tokens, seq->num_computed_tokens, spec.kv.cache_salt);
    }
  }
}

}  // namespace glimpse::scheduler
