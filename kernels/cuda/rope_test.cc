// RoPE against a float64 reference: both layouts, full and partial rotary dims, head dims
// 32/64/128, q and k inside one fused QKV row, positions up to 40k.
#include "kernels/cuda/rope.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

void RunCase(DType dtype, RopeStyle style, int32_t tokens, int32_t q_heads, int32_t k_heads,
             int32_t head_dim, int32_t rot_dim) {
  const std::string name = std::string("rope ") + testing::DTypeName(dtype) +
                           (style == RopeStyle::kNeox ? " neox" : " normal") +
                           " tokens=" + std::to_string(tokens) + " heads=" +
                           std::to_string(q_heads) + "/" + std::to_string(k_heads) +
                           " d=" + std::to_string(head_dim) + " rot=" + std::to_string(rot_dim);
  // One fused row: [q heads | k heads | v heads], v untouched by RoPE.
  const int64_t stride = static_cast<int64_t>(q_heads + 2 * k_heads) * head_dim;
  const std::vector<float> x = testing::RandomActivations(tokens * stride, dtype);
  std::vector<int32_t> positions(tokens);
  for (int32_t t = 0; t < tokens; ++t) positions[t] = testing::RandomInt(0, 40000);
  positions[0] = 0;
  const double base = 500000.0;  // Llama-3's rope theta
  std::vector<double> ref(x.begin(), x.end());
  const int32_t half = rot_dim / 2;
  for (int32_t t = 0; t < tokens; ++t) {
    for (int32_t h = 0; h < q_heads + k_heads; ++h) {
      const int64_t o = t * stride + static_cast<int64_t>(h) * head_dim;
      for (int32_t i = 0; i < half; ++i) {
        const double theta = positions[t] * std::pow(base, -2.0 * i / rot_dim);
        const int32_t a = style == RopeStyle::kNeox ? i : 2 * i;
        const int32_t b = style == RopeStyle::kNeox ? i + half : 2 * i + 1;
        const double xa = x[o + a];
        const double xb = x[o + b];
        ref[o + a] = xa * std::cos(theta) - xb * std::sin(theta);
        ref[o + b] = xa * std::sin(theta) + xb * std::cos(theta);
      }
    }
  }
  DeviceActivations d_x;
  DeviceArray<int32_t> d_pos;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x, dtype));
  GLIMPSE_ASSERT_CUDA(d_pos.Upload(positions));
  const size_t elem = DTypeSize(dtype);
  RopeParams p;
  p.dtype = dtype;
  p.q = d_x.ptr;
  p.k = static_cast<char*>(d_x.ptr) + static_cast<size_t>(q_heads) * head_dim * elem;
  p.q_token_stride = stride;
  p.k_token_stride = stride;
  p.num_q_heads = q_heads;
  p.num_k_heads = k_heads;
  p.positions = d_pos.get();
  p.num_tokens = tokens;
  p.head_dim = head_dim;
  p.rot_dim = rot_dim;
  p.freq_base = static_cast<float>(base);
  p.style = style;
  GLIMPSE_ASSERT_CUDA(LaunchRope(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out;
  GLIMPSE_ASSERT_CUDA(d_x.Download(&out, dtype));
  GLIMPSE_EXPECT_CLOSE(name, out, ref, testing::ToleranceFor(dtype));
}

GLIMPSE_CUDA_TEST(RopeMatchesReference) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    for (const RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
      RunCase(dtype, style, 1, 1, 1, 32, 32);
      RunCase(dtype, style, 37, 8, 2, 64, 64);    // group 4
      RunCase(dtype, style, 5, 32, 8, 128, 128);  // Llama-8B
      RunCase(dtype, style, 3, 14, 2, 64, 32);    // partial rotary, group 7
      RunCase(dtype, style, 2, 3, 3, 128, 96);
    }
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
