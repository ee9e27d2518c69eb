// The serving engine: one thread runs Schedule → Execute → Update over a continuously
// changing batch, and front-end threads reach it through Submit/Abort (a locked inbox) and
// per-request RequestStreams (a step's outputs are pushed to them while the next step's
// forward pass computes: EngineOptions::overlap_outputs). Owns the KV block bookkeeping, the
// scheduler and every in-flight request; the KV tensors live in the model::StepRunner it runs
// on (one model, or one split over tensor-parallel ranks), whose cache it allocates at
// creation.
//
// Status codes of Submit follow DESIGN.md: INVALID_ARGUMENT for bad requests (including a
// prompt longer than the context or than the whole KV pool), ALREADY_EXISTS for a duplicate
// in-flight request id, RESOURCE_EXHAUSTED when the waiting queue is full, UNAVAILABLE when
// draining or stopped.
//
// Thread-safety: Submit, Abort, GetLoad, StartDrain, WaitIdle and Stop are safe from any
// thread; everything else runs on the engine thread.
#ifndef GLIMPSE_SCHEDULER_ENGINE_H_
#define GLIMPSE_SCHEDULER_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/cpu/thread_pool.h"
#include "kvcache/kv_cache_manager.h"
#include "model/llama_model.h"
#include "model/step_logits.h"
#include "model/step_runner.h"
#include "model/tokenizer.h"
#include "scheduler/engine_observer.h"
#include "scheduler/request.h"
#include "scheduler/request_stream.h"
#include "scheduler/scheduler.h"
#include "scheduler/sequence.h"

namespace glimpse::scheduler {

struct EngineOptions {
  SchedulerOptions scheduler;
  int32_t num_kv_blocks = 1024;
  int32_t block_size = 16;
  int32_t num_host_blocks = 0;  // Swap space for PreemptionMode::kSwap.
  int32_t max_waiting_requests = 256;
  uint64_t seed = 0;  // Default sampling seed base for requests without one.
  // Not owned; must outlive the engine. Null: no per-event reporting.
  EngineObserver* observer = nullptr;
  // Threads that sample a step's rows, the engine thread included (>= 1). Each sequence has
  // its own sampler and RNG, so any count gives the same tokens; more pay off once rows x
  // vocabulary of a step that brings whole rows back reach parallel_sampling_min_elements (a
  // 128k-vocabulary greedy row is ~0.1 ms of the engine thread's time, ~1 ms with top-p or
  // logprobs; a GPU step at batch 64 is a few ms). Steps that bring back argmaxes always
  // sample on the engine thread, and candidate steps only their costliest rows in parallel.
  int32_t sampling_threads = 1;
  int64_t parallel_sampling_min_elements = int64_t{1} << 20;
  // What a step brings back of its logits rows (model/step_logits.h): each row's argmax when
  // every row is plain greedy, each row's top-k candidates when every row's sample depends on
  // them alone, else the rows. The same tokens either way; turning both off copies every row
  // back (for comparison).
  model::StepLogitsOptions step_logits;
  // Emit a step's outputs of requests it did not finish during the next step's forward pass
  // (StepRunner::OverlapNextForward): on a GPU the host builds and pushes them while the
  // device computes, instead of the device waiting for them. A request's tokens still reach
  // its stream in order, and outputs that finish a request go out at once. Off: every output
  // is pushed before the next step is scheduled (for comparison).
  bool overlap_outputs = true;
};

// A consistent-enough snapshot of the engine's state and cumulative work counters.
struct EngineLoad {
  int32_t num_running = 0;   // Sequences holding KV and scheduled each step.
  int32_t num_waiting = 0;   // Sequences waiting for admission (incl. not yet seen).
  int32_t num_swapped = 0;
  int32_t num_requests = 0;  // In-flight requests.
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_cached_free = 0;  // Free blocks still holding a reusable cached prefix.
  // Tokens waiting sequences still have to compute (prompt, or everything after a recompute
  // preemption), before any prefix-cache hit: what a router's least-load policy weighs.
  int64_t num_waiting_tokens = 0;
  int64_t num_steps = 0;
  int64_t num_forward_tokens = 0;
  int64_t num_prompt_tokens = 0;      // Prompt tokens of admitted requests.
  int64_t num_generation_tokens = 0;  // Tokens sampled.
  int64_t num_preemptions = 0;
  int64_t prefix_cache_queried_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t num_decode_steps = 0;        // Steps that decoded at least one sequence.
  int64_t sum_decode_batch = 0;        // Sequences decoding, summed over those steps.
  int32_t max_decode_batch = 0;
  // Nucleus rows (no top-k: top-p, min-p or plain temperature) and rows with a logit bias or
  // penalties sampled from their device candidates, and rows of either fetched whole after
  // their step because the candidates did not decide (model::StepLogits).
  int64_t num_nucleus_rows_decided = 0;
  int64_t num_adjusted_rows_decided = 0;
  int64_t num_sampled_rows_fetched = 0;
  // Of the biased or penalised rows, those that gathered a few tokens' logits after their step.
  int64_t num_sampled_rows_gathered = 0;
  // Steps whose rows were sampled on several threads (EngineOptions::sampling_threads).
  int64_t num_parallel_sampled_steps = 0;
};

class Engine {
 public:
  // `runner` and `tokenizer` are not owned and must outlive the engine. The engine
  // (re)allocates the runner's KV cache from options (num_kv_blocks device blocks on every
  // rank, num_host_blocks of swap space) and is its only user while it lives.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(model::StepRunner& runner,
                                                       const model::Tokenizer& tokenizer,
                                                       const EngineOptions& options);
  // The unsplit `model` (not owned; must outlive the engine) with a KV cache of the engine's
  // own on the model's backend.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(model::LlamaModel& model,
                                                       const model::Tokenizer& tokenizer,
                                                       const EngineOptions& options);
  ~Engine();  // Stop()s.
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void Start();
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(EngineRequest request);
  // Finishes the request with FinishReason kAbort (status OK) and `reason` as the completion's
  // message. Unknown or finished ids are ignored; returns whether the id was in flight.
  bool Abort(const std::string& request_id, std::string reason = "aborted by request");
  EngineLoad GetLoad() const;
  // New requests are refused with UNAVAILABLE from now on; in-flight ones continue.
  void StartDrain();
  bool draining() const { return draining_.load(); }
  // Waits until no request is in flight; false on timeout.
  bool WaitIdle(absl::Duration timeout);
  // Stops the engine thread; requests still in flight end with UNAVAILABLE.
  void Stop();

  const EngineOptions& options() const { return options_; }
  const model::LlamaConfig& model_config() const { return runner_.config(); }

 private:
  Engine(std::unique_ptr<model::StepRunner> owned_runner, model::StepRunner& runner,
         const model::Tokenizer& tokenizer, const EngineOptions& options);
  static absl::Status ValidateOptions(const EngineOptions& options);
  void Loop();
  struct AbortOrder {
    std::string request_id;
    std::string reason;
  };
  void AdmitInbox(std::vector<EngineRequest>& requests,
                  std::vector<std::shared_ptr<RequestStream>>& streams,
                  std::vector<AbortOrder>& aborts);
  void CheckCancellations(Clock::time_point now);
  void Step();
  void ExecuteCopies(const std::vector<KvCopy>& copies);
  // Candidate steps sample on sampling_pool_ from this many rows with a bias or penalties
  // over a nucleus (model::StepLogits::num_adjusted_nucleus_rows).
  static constexpr size_t kParallelAdjustedNucleusRows = 4;
  // A sequence's token to draw from logits row `row` of this step (SampleStep).
  struct SampleJob {
    Sequence* seq = nullptr;
    size_t row = 0;  // logits row of the step (step_logits_)
  };
  // The step's sampling in three phases: set-up in order (first-token samplers and forks,
  // latency observations; `jobs` gets one entry per sequence to sample), the draws (the few
  // logits biased or penalised rows need gathered first; then in parallel on sampling_pool_
  // when worth it, from what step_logits_ brought back; last, rows those did not decide,
  // fetched in one copy and sampled, in parallel when worth it), then AppendToken in order.
  void SampleStep(const std::vector<Sequence*>& logits_owner, Clock::time_point now);
  void PrepareSampling(Sequence* seq, size_t row, Clock::time_point now,
                       std::vector<SampleJob>& jobs);
  Sequence* ForkChild(Request* request, int32_t index);
  // Adds the token to the sequence and its pending output, and ends the sequence if the token
  // stops it (or reaches max_tokens). Its text waits for EmitOutputs unless stop strings need
  // it now (OutputText::AppendDeferred).
  void AppendToken(Sequence* seq, const model::Sampler::SampleResult& sample);
  void FinishSequence(Sequence* seq, FinishReason reason, std::string message);
  void FinishRequest(Request* request, FinishReason reason, const std::string& message,
                     absl::Status status);
  // Renders the text AppendToken left, then pushes each request's news to its stream.
  void EmitOutputs(const std::vector<Request*>& touched);
  // The outputs deferred_outputs_ left for later (EngineOptions::overlap_outputs), now.
  void EmitDeferredOutputs();
  void PushOutput(Request* request, RequestOutput output);
  void ReleaseFinished();
  void PublishLoad();
  void PublishLoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Set when the engine made its own runner (Create from a LlamaModel); runner_ is it or the
  // caller's.
  std::unique_ptr<model::StepRunner> owned_runner_;
  model::StepRunner& runner_;
  const model::Tokenizer& tokenizer_;
  const EngineOptions options_;
  std::unique_ptr<kvcache::KvCacheManager> kv_manager_;
  std::unique_ptr<Scheduler> scheduler_;

  // Engine-thread state.
  absl::flat_hash_map<std::string, std::unique_ptr<Request>> requests_;
  int64_t next_arrival_ = 0;
  kvcache::RequestKey next_key_ = 1;
  // This step's logits as brought back (the rows, their argmax or their candidates).
  model::StepLogits step_logits_;
  std::vector<model::KvBlockMove> kv_moves_;  // This step's, reused across steps.
  // Requests whose last step's outputs wait to be emitted (EngineOptions::overlap_outputs):
  // during the next forward pass (emit_work_), or before anything else could push to their
  // streams. Unfinished when listed; one that finishes meanwhile (an abort, a cancel, a
  // deadline) has all its outputs emitted then, and leaves this list before it is released
  // (ReleaseFinished), which the loop does before every step.
  std::vector<Request*> deferred_outputs_;
  kernels::HostWork emit_work_;  // EmitDeferredOutputs, handed to the step's forward pass
  // options_.sampling_threads - 1 workers (null for one thread); used by the engine thread only.
  std::unique_ptr<kernels::cpu::ThreadPool> sampling_pool_;

  // Shared with front-end threads.
  mutable absl::Mutex mu_;
  std::vector<EngineRequest> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<RequestStream>> inbox_streams_ ABSL_GUARDED_BY(mu_);
  std::vector<AbortOrder> abort_inbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> in_flight_ids_ ABSL_GUARDED_BY(mu_);
  int32_t num_waiting_requests_ ABSL_GUARDED_BY(mu_) = 0;  // Submitted, not yet admitted to run.
  EngineLoad load_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> draining_{false};
  // Tokens sampled (EngineLoad::num_generation_tokens), counted on the per-token path.
  std::atomic<int64_t> num_generation_tokens_{0};
  std::thread thread_;
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_ENGINE_H_
