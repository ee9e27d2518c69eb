// Test support: the logits of every prompt position of several sequences, computed by any
// model's one-step forward in chunked-prefill steps (all unfinished sequences in every step,
// `chunk` tokens each). Used to compare two ways of running the same model (sharded vs whole,
// CUDA vs CPU) position by position.
//
// Thread-safety: a plain function; `forward` is called from the calling thread only.
#ifndef GLIMPSE_MODEL_CHUNKED_PROMPT_LOGITS_H_
#define GLIMPSE_MODEL_CHUNKED_PROMPT_LOGITS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/step_batch.h"

namespace glimpse::model {

// One step over the model's own KV cache; writes one row of vocab logits per logits row.
using StepForwardFn = std::function<absl::Status(const StepBatch&, float* logits)>;

// Sequence s owns KV blocks [s * blocks_per_seq, (s + 1) * blocks_per_seq) of `block_size`
// tokens. Result: [sequence][position * vocab + v]. The first forward error is returned.
absl::StatusOr<std::vector<std::vector<float>>> ChunkedPromptLogits(
    const StepForwardFn& forward, int32_t vocab, const std::vector<std::vector<int32_t>>& prompts,
    int32_t chunk, int32_t block_size, int32_t blocks_per_seq);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_CHUNKED_PROMPT_LOGITS_H_
