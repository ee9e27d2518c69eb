// Per-request sampling parameters and their validation.
//
// SamplingParams is a plain value: the front ends (gRPC, OpenAI gateway) fill it from a request,
// ValidateSamplingParams rejects bad values with InvalidArgument (→ HTTP 400) before the request
// reaches the engine, and the engine builds one model::Sampler per sequence from it.
// The defaults mean "plain sampling from the model's softmax": every knob is off.
#ifndef GLIMPSE_MODEL_SAMPLING_PARAMS_H_
#define GLIMPSE_MODEL_SAMPLING_PARAMS_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace glimpse::model {

// Allowed ranges, checked by ValidateSamplingParams. Shared with the front ends so that their
// help texts and error messages quote the same numbers.
inline constexpr float kMaxTemperature = 100.0f;
// Temperatures below this are treated as greedy (argmax) decoding, as in vLLM: dividing logits
// by a tiny temperature would overflow, and the limit T → 0 of softmax(l/T) is the argmax anyway.
inline constexpr float kGreedyTemperatureEpsilon = 1e-5f;
inline constexpr float kMaxAbsPresencePenalty = 2.0f;   // OpenAI's range.
inline constexpr float kMaxAbsFrequencyPenalty = 2.0f;  // OpenAI's range.
inline constexpr float kMaxAbsLogitBias = 100.0f;       // OpenAI's range; -inf also allowed.
inline constexpr int32_t kMaxNumLogprobs = 20;          // OpenAI's limit for top_logprobs.

struct SamplingParams {
  // Softmax temperature, in [0, kMaxTemperature]. 0 (anything below kGreedyTemperatureEpsilon)
  // means greedy decoding: always the highest processed logit, ties to the lowest token id.
  float temperature = 1.0f;
  // Keep only the top_k most likely tokens (ties broken toward lower ids, so exactly top_k
  // survive). 0 = off. Values larger than the vocabulary are allowed and mean "off".
  int32_t top_k = 0;
  // Nucleus sampling: keep the smallest set of most likely tokens whose cumulative probability is
  // >= top_p (always at least one token). In (0, 1]; 1 = off.
  float top_p = 1.0f;
  // Drop tokens whose probability is below min_p * (probability of the most likely token).
  // In [0, 1]; 0 = off.
  float min_p = 0.0f;
  // Multiplicative repetition penalty (HF / vLLM / llama.cpp semantics) on every token seen in the
  // prompt or the output so far: a positive logit is divided by it, a negative one multiplied.
  // > 0; 1 = off; > 1 discourages repetition.
  float repetition_penalty = 1.0f;
  // OpenAI semantics, over generated tokens only: logit -= presence_penalty * [count > 0]
  // + frequency_penalty * count. Each in [-2, 2]; 0 = off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // (token id, bias) pairs added to the logits before anything else. Ids in [0, vocab_size), each
  // at most once; bias in [-100, 100], or -inf to ban the token.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // RNG seed. When empty the engine's per-request default seed is used.
  std::optional<uint64_t> seed;
  // Number of most likely tokens whose log-probabilities are returned with each sampled token,
  // in [0, kMaxNumLogprobs]; 0 = none. The chosen token's logprob is always returned.
  int32_t num_logprobs = 0;
};

// Returns OK, or InvalidArgument naming the first offending field and its allowed range.
// `vocab_size` is the model's vocabulary size (must be positive; Internal otherwise, since that is
// a caller bug, not bad user input).
absl::Status ValidateSamplingParams(const SamplingParams& params, int32_t vocab_size);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_SAMPLING_PARAMS_H_
