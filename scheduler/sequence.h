// The engine's state for one sequence — one of a request's n completions — and for the
// request that owns it. Request progress is one counter per sequence (num_computed_tokens):
// there are no separate prefill and decode paths; a sequence whose computed count is behind
// its token count is "prefilling", whatever the reason (a new prompt, a chunked one, or a
// recompute after preemption).
//
// Ownership: the Engine owns Requests; a Request owns its Sequences. Engine thread only.
#ifndef GLIMPSE_SCHEDULER_SEQUENCE_H_
#define GLIMPSE_SCHEDULER_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvcache/kv_cache_manager.h"
#include "model/sampler.h"
#include "scheduler/output_text.h"
#include "scheduler/request.h"
#include "scheduler/request_stream.h"

namespace glimpse::scheduler {

struct Request;

enum class SequenceState {
  kWaiting,    // Not admitted yet, or preempted for recompute (holds no blocks).
  kRunning,    // Holds device blocks; scheduled every step until finished or preempted.
  kSwapped,    // Preempted by swapping: its KV waits in host memory.
  kFinished,   // Done; blocks freed.
};

struct Sequence {
  Request* request = nullptr;  // Owner.
  int32_t index = 0;           // Which of the request's n completions.
  kvcache::RequestKey key = 0;  // Its block table in the KvCacheManager.
  SequenceState state = SequenceState::kWaiting;
  std::vector<int32_t> tokens;  // Prompt, then generated tokens.
  // Chain hashes of `tokens`' leading full blocks under the request's cache salt, as far as
  // prefix-cache lookups have hashed (KvCacheManager::FindCachedPrefix's memo): a request
  // waiting for blocks is looked up every step. Valid because tokens only grow.
  std::vector<kvcache::BlockHash> prefix_chain;
  int32_t num_prompt_tokens = 0;
  int32_t num_computed_tokens = 0;  // Tokens whose KV is in the cache.
  int32_t num_cached_tokens = 0;    // Prompt tokens that came from the prefix cache.
  int32_t num_preemptions = 0;
  int32_t peak_blocks = 0;
  Clock::time_point last_token_time;  // For inter-token latency.
  std::unique_ptr<model::Sampler> sampler;
  std::unique_ptr<OutputText> output_text;
  // Output not yet sent to the client; its completion is sent once (completion_sent).
  SequenceDelta pending;
  bool completion_sent = false;

  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - num_prompt_tokens; }
  int32_t num_uncomputed() const { return static_cast<int32_t>(tokens.size()) - num_computed_tokens; }
  bool is_prefilling() const { return num_uncomputed() > 1; }
};

struct Request {
  EngineRequest spec;
  std::shared_ptr<RequestStream> stream;
  int64_t arrival_order = 0;  // FCFS tiebreak: smaller arrived earlier.
  Clock::time_point arrival_time;
  Clock::time_point first_scheduled_time;
  Clock::time_point first_token_time;
  bool scheduled_once = false;
  bool got_first_token = false;
  bool prompt_info_sent = false;
  // Sequences 1..n-1 are created by forking sequence 0 once the prompt is computed.
  std::vector<std::unique_ptr<Sequence>> sequences;
  int32_t num_finished = 0;

  bool finished() const { return num_finished == static_cast<int32_t>(spec.n); }
};

}  // namespace glimpse::scheduler

#endif  // GLIMPSE_SCHEDULER_SEQUENCE_H_
