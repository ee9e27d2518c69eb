#include "model/sampling_params.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace glimpse::model {

// Every comparison below is written so that NaN fails it (NaN compares false with everything).
absl::Status ValidateSamplingParams(const SamplingParams& params, int32_t vocab_size) {
  if (vocab_size <= 0) {
    return absl::InternalError(absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if (!(params.temperature >= 0.0f && params.temperature <= kMaxTemperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, ", kMaxTemperature,
                                                   "] (0 = greedy), got ", params.temperature));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 = off), got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1] (1 = off), got ", params.top_p));
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1] (0 = off), got ", params.min_p));
  }
  if (!(params.repetition_penalty > 0.0f && std::isfinite(params.repetition_penalty))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be finite and > 0 (1 = off), got ", params.repetition_penalty));
  }
  if (!(std::fabs(params.presence_penalty) <= kMaxAbsPresencePenalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("presence_penalty must be in [-", kMaxAbsPresencePenalty, ", ",
                     kMaxAbsPresencePenalty, "], got ", params.presence_penalty));
  }
  if (!(std::fabs(params.frequency_penalty) <= kMaxAbsFrequencyPenalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frequency_penalty must be in [-", kMaxAbsFrequencyPenalty, ", ",
                     kMaxAbsFrequencyPenalty, "], got ", params.frequency_penalty));
  }
  std::vector<int32_t> bias_ids;
  bias_ids.reserve(params.logit_bias.size());
  for (const auto& [token, bias] : params.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias token id must be in [0, ", vocab_size, "), got ", token));
    }
    const bool is_ban = bias == -std::numeric_limits<float>::infinity();
    if (!is_ban && !(std::fabs(bias) <= kMaxAbsLogitBias)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias value for token ", token, " must be in [-", kMaxAbsLogitBias,
                       ", ", kMaxAbsLogitBias, "] or -inf (ban), got ", bias));
    }
    bias_ids.push_back(token);
  }
  std::sort(bias_ids.begin(), bias_ids.end());
  if (auto it = std::adjacent_find(bias_ids.begin(), bias_ids.end()); it != bias_ids.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logit_bias lists token id ", *it, " more than once"));
  }
  if (params.num_logprobs < 0 || params.num_logprobs > kMaxNumLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("num_logprobs must be in [0, ", kMaxNumLogprobs,
                                                   "], got ", params.num_logprobs));
  }
  return absl::OkStatus();
}

}  // namespace glimpse::model
