// Sampling flags shared by `glimpse generate` and `glimpse bench`, turned into validated
// model::SamplingParams.
#ifndef GLIMPSE_SERVER_SAMPLING_FLAGS_H_
#define GLIMPSE_SERVER_SAMPLING_FLAGS_H_

#include "absl/status/statusor.h"
#include "model/sampling_params.h"

namespace glimpse::server {

// InvalidArgument (naming the flag) for malformed --logit_bias; value ranges are checked
// later against the vocabulary by ValidateSamplingParams.
absl::StatusOr<model::SamplingParams> SamplingParamsFromFlags();

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_SAMPLING_FLAGS_H_
