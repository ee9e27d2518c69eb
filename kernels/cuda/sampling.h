// Token sampling from fp32 logits with temperature, top-k, top-p and min-p, driven by uniform
// random numbers that the caller supplies (so a draw is reproducible and testable; generate
// them with any counter-based RNG, e.g. Philox keyed by request seed and step).
//
// Semantics for one row (z = logits, all in fp32 exactly as written):
//   temperature <= 0:  greedy, the argmax (lowest index on ties).
//   z'  = z / temperature
//   top-k (0 < k < vocab):  keep z' >= the k-th largest z' (ties at the threshold are kept)
//   top-p (p < 1):  over the top-k survivors, keep the largest threshold set {z' >= t} whose
//                   probability mass is >= p (the smallest sorted prefix reaching p, ties kept)
//   min-p (m > 0):  keep z' >= max(z') + logf(m), i.e. p_i >= m * p_max
//   p(x) = exp(z'_x - max z') / Z over the kept set (one threshold on z': every filter keeps a
//          set of the form {z' >= t}).
//   sample: the first kept token x, in vocabulary order, whose cumulative mass exceeds
//           u * (total kept mass), u in [0, 1).
//
// dtypes: logits fp32 [num_rows][vocab] (vocab <= 2^24); sampling parameters per row (or per
// sequence for verification, see verify_accept.h).
#ifndef GLIMPSE_KERNELS_CUDA_SAMPLING_H_
#define GLIMPSE_KERNELS_CUDA_SAMPLING_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glimpse::kernels::cuda {

// Per-row sampling parameters, device arrays of `num_params` entries; a null array means the
// parameter is off (temperature 1, top_k off, top_p 1, min_p 0).
struct SamplingConfig {
  const float* temperature = nullptr;  // <= 0 selects greedy
  const int32_t* top_k = nullptr;      // <= 0 or >= vocab: off
  const float* top_p = nullptr;        // >= 1: off
  const float* min_p = nullptr;        // <= 0: off
};

// The processed distribution of one row, enough to evaluate p(x) in O(1):
//   p(x) = key(z'_x) >= threshold_key ? exp(z'_x - max_logit) / sum_exp : 0,  z'_x = z_x / T
// where key() maps floats to uint32 in increasing order. Greedy rows: p(x) = [x == argmax].
struct SamplingRowStats {
  float temperature = 1.0f;
  float max_logit = 0.0f;  // max z'
  float sum_exp = 0.0f;    // Z, over the kept set
  uint32_t threshold_key = 0;
  int32_t argmax = 0;
  int32_t greedy = 0;
};

struct SampleParams {
  const float* logits = nullptr;  // [num_rows][vocab]
  int32_t num_rows = 0;
  int32_t vocab = 0;
  SamplingConfig config;          // indexed by row
  const float* uniforms = nullptr;  // device, [num_rows], each in [0, 1)
  SamplingRowStats* stats = nullptr;  // device scratch/output, [num_rows]
  int32_t* tokens = nullptr;          // device output, [num_rows]
};

// Two launches: per-row statistics (thresholds by exact radix search, deterministic
// reductions), then the inverse-CDF draw. One 512-thread block per row each.
cudaError_t LaunchSample(const SampleParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_SAMPLING_H_
