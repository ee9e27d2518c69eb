// Hooks through which the engine reports per-request latencies and per-step work as they
// happen, so a front end can feed its metrics (histograms need every observation, which the
// cumulative EngineLoad snapshot cannot give). Called on the engine thread: implementations
// must be quick and thread-safe against their readers (atomics), and must not call back into
// the engine.
#ifndef GLIMPSE_SCHEDULER_ENGINE_OBSERVER_H_
#define GLIMPSE_SCHEDULER_ENGINE_OBSERVER_H_

#include <cstdint>

namespace glimpse::scheduler {

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // A request was scheduled for the first time, `queue_seconds` after it arrived.
  virtual void OnRequestScheduled(double queue_seconds) {}
  // A request's first token was sampled, `ttft_seconds` after it arrived.
  virtual void OnFirstToken(double ttft_seconds) {}
  // A sequence sampled another token, `seconds` after its previous one.
  virtual void OnInterTokenLatency(double seconds) {}
  // A request ended (every sequence finished), `e2e_seconds` after it arrived.
  virtual void OnRequestFinished(double e2e_seconds, int32_t prompt_tokens,
                                 int32_t generated_tokens) {}
  // A forward step ran `num_tokens` tokens, `num_decoding` of them single decode tokens.
  virtual void OnStep(int32_t num_tokens, int32_t num_decoding, int32_t num_preemptions) {}
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_ENGINE_OBSERVER_H_
