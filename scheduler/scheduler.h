// The scheduling policy: each step, which sequences run and how many of their tokens, given a
// token budget, a cap on running sequences and the KV blocks available. Decisions only — the
// Engine executes them — so it is tested with hand-built sequences and no model.
//
// Policy (continuous batching at iteration level, as vLLM v1):
// 1. Running sequences first, higher priority first (then earlier arrival): each gets its
//    next token, or its next prefill chunk (chunked prefill: a long prompt takes at most the
//    budget left and `prefill_chunk_tokens`, so it never stalls running decodes). If the KV
//    pool cannot grow a sequence, the lowest-priority, latest-arrived running sequence is
//    preempted (recompute: its blocks are freed and it waits again; swap: its KV moves to
//    host memory) until the sequence fits or is itself the victim.
// 2. Swapped sequences come back before anything new is admitted.
// 3. Waiting sequences are admitted by effective priority — priority plus one per
//    `aging_seconds` waited, so lower classes still progress — then arrival (FCFS), while
//    budget, running slots and blocks last. Admission stops at the first sequence that does
//    not fit (no overtaking, which would starve long prompts). A new sequence starts from
//    its longest cached prefix.
// No admissions happen in a step that preempted.
//
// Thread-safety: engine thread only. Does not own sequences; the engine removes a sequence
// (Remove) before destroying it.
#ifndef GLIMPSE_SCHEDULER_SCHEDULER_H_
#define GLIMPSE_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <vector>

#include "kvcache/kv_cache_manager.h"
#include "scheduler/request.h"
#include "scheduler/sequence.h"

namespace glimpse::scheduler {

enum class PreemptionMode { kRecompute, kSwap };

struct SchedulerOptions {
  int32_t max_running_sequences = 64;
  int32_t max_step_tokens = 512;       // Token budget of one forward pass.
  int32_t prefill_chunk_tokens = 512;  // Most prompt tokens of one sequence per step.
  double aging_seconds = 10.0;         // Waiting this long adds 1 to the effective priority.
  PreemptionMode preemption_mode = PreemptionMode::kRecompute;
  bool enable_prefix_caching = true;
};

// A KV block copy the engine must perform before the step's forward pass, in list order.
struct KvCopy {
  enum class Kind { kDeviceToDevice, kDeviceToHost, kHostToDevice };
  Kind kind = Kind::kDeviceToDevice;
  int32_t src = 0;
  int32_t dst = 0;
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;     // Tokens [num_computed_tokens, + num_tokens) run this step.
  bool wants_logits = false;  // The step reaches the sequence's newest token.
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> scheduled;  // Batch order.
  std::vector<KvCopy> copies;                // Execute in order, before the forward pass.
  std::vector<Sequence*> preempted;          // This step, for counters and stats.
  int32_t num_tokens = 0;
};

class Scheduler {
 public:
  // `kv` is not owned and must outlive the scheduler.
  Scheduler(kvcache::KvCacheManager& kv, const SchedulerOptions& options);

  // A new sequence holding no blocks (state kWaiting).
  void AddWaiting(Sequence* seq);
  // A sequence forked from a running parent; it shares the parent's computed KV and runs.
  void AddForked(Sequence* parent, Sequence* child);
  // Takes a sequence out of every queue and frees its blocks (finished, aborted).
  void Remove(Sequence* seq);

  SchedulerOutput Schedule(Clock::time_point now);
  // After the forward pass: advances the scheduled sequences' computed counts and publishes
  // their full blocks to the prefix cache.
  void OnStepComputed(const SchedulerOutput& output);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_swapped() const { return static_cast<int32_t>(swapped_.size()); }
  const SchedulerOptions& options() const { return options_; }

 private:
  // False if `seq` (running) was preempted to make room, or room could not be made.
  bool GrowRunning(Sequence* seq, int32_t num_tokens, SchedulerOutput& out);
  void Preempt(Sequence* victim, SchedulerOutput& out);
  bool TryResumeSwapped(Sequence* seq, int32_t budget, SchedulerOutput& out);
  bool TryAdmit(Sequence* seq, int32_t budget, SchedulerOutput& out);
  int32_t TokensThisStep(const Sequence* seq, int32_t budget) const;
  void Schedule(Sequence* seq, int32_t num_tokens, SchedulerOutput& out);
  void AppendCopies(const std::vector<kvcache::BlockCopy>& copies, KvCopy::Kind kind,
                    SchedulerOutput& out);

  kvcache::KvCacheManager& kv_;
  SchedulerOptions options_;
  std::vector<Sequence*> running_;
  std::vector<Sequence*> waiting_;
  std::vector<Sequence*> swapped_;
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_SCHEDULER_H_
