// Float64 reference of sampling.h's processed distribution and draws, for the sampling and
// verification tests. It computes z' = logits / T with the same fp32 division as the device
// and every threshold the same way, then sums in float64. Where a decision sits within
// rounding of a boundary (top-p mass, a CDF step, an acceptance ratio) it reports the case
// ambiguous, and tests skip it rather than accept either answer silently.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_SAMPLING_REFERENCE_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_SAMPLING_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace glimpse::kernels::cuda::testing {

struct RefDist {
  bool greedy = false;
  int32_t argmax = 0;
  std::vector<float> z;  // scaled logits
  float threshold = -INFINITY;
  double max_z = 0.0;
  double total = 0.0;
  bool ambiguous = false;

  bool Kept(int32_t x) const { return greedy ? x == argmax : z[x] >= threshold; }
  double Weight(int32_t x) const {
    if (greedy) return x == argmax ? 1.0 : 0.0;
    return Kept(x) ? std::exp(static_cast<double>(z[x]) - max_z) : 0.0;
  }
  double P(int32_t x) const { return Weight(x) / total; }
};

inline RefDist RefProcess(const float* row, int32_t vocab, float temperature, int32_t top_k,
                          float top_p, float min_p) {
  RefDist d;
  d.greedy = temperature <= 0.0f;
  const float t = d.greedy ? 1.0f : temperature;
  d.z.resize(vocab);
  for (int32_t x = 0; x < vocab; ++x) d.z[x] = row[x] / t;
  d.argmax = static_cast<int32_t>(std::max_element(d.z.begin(), d.z.end()) - d.z.begin());
  d.max_z = d.z[d.argmax];
  if (d.greedy) {
    d.total = 1.0;
    return d;
  }
  std::vector<float> sorted = d.z;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  if (top_k > 0 && top_k < vocab) d.threshold = sorted[top_k - 1];
  if (top_p < 1.0f) {
    double total = 0.0;
    for (const float v : sorted) {
      if (v >= d.threshold) total += std::exp(static_cast<double>(v) - d.max_z);
    }
    const double target = static_cast<double>(top_p) * total;
    double cum = 0.0;
    for (size_t i = 0; i < sorted.size() && sorted[i] >= d.threshold; ++i) {
      const double before = cum;
      cum += std::exp(static_cast<double>(sorted[i]) - d.max_z);
      const bool last_of_ties = i + 1 == sorted.size() || sorted[i + 1] != sorted[i];
      if (!last_of_ties) continue;
      if (std::fabs(cum - target) < 1e-4 * total || std::fabs(before - target) < 1e-4 * total) {
        d.ambiguous = true;
      }
      if (cum >= target) {
        d.threshold = std::max(d.threshold, sorted[i]);
        break;
      }
    }
  }
  if (min_p > 0.0f) {
    const float tm = static_cast<float>(d.max_z) + std::log(min_p);
    for (const float v : sorted) {
      if (std::fabs(v - tm) < 1e-5f * std::max(1.0f, std::fabs(tm))) d.ambiguous = true;
    }
    d.threshold = std::max(d.threshold, tm);
  }
  d.total = 0.0;
  for (int32_t x = 0; x < vocab; ++x) d.total += d.Weight(x);
  return d;
}

// Inverse-CDF draw over kept tokens not in `excluded`; -1 if none is left.
inline int32_t RefSample(const RefDist& d, double u, const std::vector<int32_t>& excluded,
                         bool* ambiguous) {
  auto is_excluded = [&](int32_t x) {
    return std::find(excluded.begin(), excluded.end(), x) != excluded.end();
  };
  const int32_t vocab = static_cast<int32_t>(d.z.size());
  double total = 0.0;
  for (int32_t x = 0; x < vocab; ++x) {
    if (!is_excluded(x)) total += d.Weight(x);
  }
  if (total <= 0.0) return -1;
  const double target = u * total;
  double cum = 0.0;
  int32_t last = -1;
  for (int32_t x = 0; x < vocab; ++x) {
    if (is_excluded(x) || !d.Kept(x)) continue;
    const double before = cum;
    cum += d.Weight(x);
    last = x;
    if (cum > target) {
      if (std::fabs(cum - target) < 1e-5 * total || std::fabs(before - target) < 1e-5 * total) {
        *ambiguous = true;
      }
      return x;
    }
  }
  *ambiguous = true;  // u within rounding of 1
  return last;
}

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_SAMPLING_REFERENCE_H_
