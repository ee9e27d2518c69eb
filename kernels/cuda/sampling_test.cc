// Sampling against a float64 reference: greedy, temperature, top-k (incl. k = 1), top-p,
// min-p and their combinations, vocabularies of 1000, 32000 and 50257 (odd) tokens, fresh
// logits and uniforms; draws that sit within rounding of a boundary are skipped and counted.
#include "kernels/cuda/sampling.h"

#include <string>
#include <vector>

#include "kernels/cuda/testing/sampling_reference.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

void RunCase(int32_t vocab, int32_t rows) {
  const std::vector<float> logits =
      testing::RandomNormal(static_cast<size_t>(vocab) * rows, 0.0f, 2.0f);
  const float temps[] = {0.0f, 0.7f, 1.0f, 1.5f};
  const int32_t top_ks[] = {0, 1, 5, 50};
  const float top_ps[] = {1.0f, 0.9f, 0.5f};
  const float min_ps[] = {0.0f, 0.05f};
  std::vector<float> temperature(rows), top_p(rows), min_p(rows);
  std::vector<int32_t> top_k(rows);
  for (int32_t r = 0; r < rows; ++r) {
    temperature[r] = temps[testing::RandomInt(0, 3)];
    top_k[r] = top_ks[testing::RandomInt(0, 3)];
    top_p[r] = top_ps[testing::RandomInt(0, 2)];
    min_p[r] = min_ps[testing::RandomInt(0, 1)];
  }
  const std::vector<float> uniforms = testing::RandomUniform(rows, 0.0f, 1.0f);
  DeviceArray<float> d_logits, d_t, d_p, d_minp, d_u;
  DeviceArray<int32_t> d_k, d_tokens;
  DeviceArray<SamplingRowStats> d_stats;
  GLIMPSE_ASSERT_CUDA(d_logits.Upload(logits));
  GLIMPSE_ASSERT_CUDA(d_t.Upload(temperature));
  GLIMPSE_ASSERT_CUDA(d_p.Upload(top_p));
  GLIMPSE_ASSERT_CUDA(d_minp.Upload(min_p));
  GLIMPSE_ASSERT_CUDA(d_k.Upload(top_k));
  GLIMPSE_ASSERT_CUDA(d_u.Upload(uniforms));
  GLIMPSE_ASSERT_CUDA(d_tokens.Allocate(rows));
  GLIMPSE_ASSERT_CUDA(d_stats.Allocate(rows));
  SampleParams p;
  p.logits = d_logits.get();
  p.num_rows = rows;
  p.vocab = vocab;
  p.config.temperature = d_t.get();
  p.config.top_k = d_k.get();
  p.config.top_p = d_p.get();
  p.config.min_p = d_minp.get();
  p.uniforms = d_u.get();
  p.stats = d_stats.get();
  p.tokens = d_tokens.get();
  GLIMPSE_ASSERT_CUDA(LaunchSample(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<int32_t> tokens;
  GLIMPSE_ASSERT_CUDA(d_tokens.Download(&tokens));
  int32_t checked = 0;
  for (int32_t r = 0; r < rows; ++r) {
    const testing::RefDist dist =
        testing::RefProcess(&logits[static_cast<size_t>(r) * vocab], vocab, temperature[r],
                            top_k[r], top_p[r], min_p[r]);
    bool ambiguous = dist.ambiguous;
    const int32_t want = testing::RefSample(dist, uniforms[r], {}, &ambiguous);
    if (ambiguous) continue;
    ++checked;
    GLIMPSE_EXPECT(tokens[r] == want,
                   "vocab " + std::to_string(vocab) + " row " + std::to_string(r) + " (T=" +
                       std::to_string(temperature[r]) + " k=" + std::to_string(top_k[r]) +
                       " p=" + std::to_string(top_p[r]) + " min_p=" +
                       std::to_string(min_p[r]) + "): got " + std::to_string(tokens[r]) +
                       ", want " + std::to_string(want));
  }
  testing::Note("sampling vocab=" + std::to_string(vocab) + ": " + std::to_string(checked) +
                "/" + std::to_string(rows) + " rows unambiguous and checked");
  // With a large vocabulary the top-p cut-off falls within the reference's 1e-4 rounding
  // window of a token boundary in some 10-15% of the rows that have one (seen over seeds on the
  // CPU emulation, where 90% failed most runs): require 70%, over enough rows that chance alone
  // (three standard deviations) does not fail it.
  GLIMPSE_EXPECT(checked >= rows * 7 / 10, "too many ambiguous rows");
}

GLIMPSE_CUDA_TEST(SampleMatchesReference) {
  RunCase(1000, 64);
  RunCase(32000, 64);
  RunCase(50257, 64);
}

}  // namespace
}  // namespace glimpse::kernels::cuda
