// What a step brings back of its logits rows, and the samples drawn from that. Every row's
// sampler says what its sample needs (Sampler::CandidatesNeeded), and the step takes the least
// that serves all of its rows:
//
//   every row plain greedy          → each row's argmax       (StepRunner::ForwardGreedy)
//   every row decided by its top k  → each row's k candidates (StepRunner::ForwardTopK),
//                                     with its softmax normalizer when a row reports logprobs
//   otherwise                       → the rows themselves     (StepRunner::Forward)
//
// On a GPU at a 128k vocabulary that is 8 bytes, k x 8 (+ 12) bytes or 513 KB a row, and a
// host pass over the row only in the last case. The tokens are the same whichever way (the Sampler
// guarantees it, seed for seed; logprob values from a device's normalizer may differ in the
// last bits). The serving engine and the offline generator both plan their
// steps with it.
//
// Thread-safety: Plan and Forward on the driving thread; Sample may then run concurrently for
// distinct rows (it only reads this object; each row's Sampler is its own).
#ifndef GLIMPSE_MODEL_STEP_LOGITS_H_
#define GLIMPSE_MODEL_STEP_LOGITS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "model/sampler.h"
#include "model/sampling_params.h"
#include "model/step_batch.h"
#include "model/step_runner.h"

namespace glimpse::model {

struct StepLogitsOptions {
  // Plain greedy steps reduce each row to its argmax where the logits are.
  bool device_greedy = true;
  // Steps whose rows need at most this many candidates each select them where the logits are;
  // the k asked for is the rows' largest need rounded up to a power of two (so that recorded
  // CUDA steps see few shapes), at most this. 0: never.
  int32_t max_device_top_k = 1024;
};

class StepLogits {
 public:
  enum class Kind {
    kRows,    // the rows (StepRunner::Forward)
    kArgMax,  // each row's argmax (StepRunner::ForwardGreedy)
    kTopK,    // each row's k most likely tokens (StepRunner::ForwardTopK)
  };

  // Plans a step: Begin, then AddRow for each logits row in row order (its sampler's params
  // and report_logprobs), then Finish.
  void Begin(const StepLogitsOptions& options, int32_t vocab_size);
  void AddRow(const SamplingParams& params, bool report_logprobs);
  void Finish();

  Kind kind() const { return kind_; }

  // Runs the step's forward pass the planned way. Errors as StepRunner's.
  absl::Status Forward(StepRunner& runner, const StepBatch& batch);
  // Sampler::Sample's result for logits row `row` of the step Forward ran: from the row
  // (with logprobs if the sampler reports them), its argmax (SampleArgMax) or its candidates
  // (SampleFromCandidates).
  Sampler::SampleResult Sample(Sampler& sampler, size_t row) const;

 private:
  StepLogitsOptions options_;
  int32_t vocab_size_ = 0;
  size_t num_rows_ = 0;
  bool all_greedy_ = true;
  int32_t candidates_ = 1;  // the rows' largest need; 0: some row needs the whole row
  bool normalizers_ = false;  // some row reports logprobs: kTopK brings its normalizer too
  Kind kind_ = Kind::kRows;
  int32_t k_ = 0;
  // The step's outputs, reused across steps.
  std::vector<float> logits_;    // kRows: [rows][vocab]
  std::vector<int32_t> argmax_;  // kArgMax: [rows]
  TopTokens top_;                // kTopK
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_STEP_LOGITS_H_
