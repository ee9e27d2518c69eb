// RoPE from a (cos, sin) table: the host table must reproduce the CPU backend's fp32 angle
// recurrence (checked against an independent copy of that loop, bitwise), and the kernel
// must apply it as a float64 reference on the same table does; both styles, partial rot_dim,
// odd head counts, positions up to 32k; dimensions past rot_dim untouched (bitwise); and a
// second tensor (k) rotated in the same launch.
#include "kernels/cuda/rope_table.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

// heads2 > 0: a second tensor (k beside q) rotated by the same table in the same launch.
void RunCase(RopeStyle style, int32_t tokens, int32_t heads, int32_t head_dim, int32_t rot_dim,
             float freq_base, int32_t heads2 = 0) {
  std::string name = std::string("rope_table ") + (style == RopeStyle::kNeox ? "neox" : "normal") +
                     " tokens=" + std::to_string(tokens) + " heads=" + std::to_string(heads);
  if (heads2 > 0) name += " and " + std::to_string(heads2);
  name += " d=" + std::to_string(head_dim) + " rot=" + std::to_string(rot_dim);
  const int32_t half = rot_dim / 2;
  std::vector<int32_t> positions(tokens);
  for (int32_t t = 0; t < tokens; ++t) positions[t] = testing::RandomInt(0, 32768);
  positions[0] = 0;
  std::vector<float> table(static_cast<size_t>(tokens) * half * 2);
  FillRopeCosSinTable(positions.data(), tokens, rot_dim, freq_base, table.data());
  // The CPU backend's loop (kernels/cpu/elementwise.cc ApplyRope), written out again.
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rot_dim));
  for (int32_t t = 0; t < tokens; ++t) {
    float theta = static_cast<float>(positions[t]);
    for (int32_t i = 0; i < half; ++i) {
      const bool same = table[(t * half + i) * 2] == std::cos(theta) &&
                        table[(t * half + i) * 2 + 1] == std::sin(theta);
      GLIMPSE_EXPECT(same, name + ": table differs from the CPU backend's angles");
      theta *= theta_scale;
    }
  }
  // The float64 rotation of a [tokens][n_heads][head_dim] tensor by the table.
  auto rotated = [&](const std::vector<float>& x, int32_t n_heads) {
    std::vector<double> ref(x.begin(), x.end());
    for (int32_t t = 0; t < tokens; ++t) {
      for (int32_t h = 0; h < n_heads; ++h) {
        const int64_t o = (static_cast<int64_t>(t) * n_heads + h) * head_dim;
        for (int32_t i = 0; i < half; ++i) {
          const int32_t a = style == RopeStyle::kNeox ? i : 2 * i;
          const int32_t b = style == RopeStyle::kNeox ? i + half : 2 * i + 1;
          const double c = table[(t * half + i) * 2];
          const double s = table[(t * half + i) * 2 + 1];
          ref[o + a] = x[o + a] * c - x[o + b] * s;
          ref[o + b] = x[o + a] * s + x[o + b] * c;
        }
      }
    }
    return ref;
  };
  // Checks a rotated tensor: against the reference, and bitwise unchanged past rot_dim.
  auto check = [&](const std::string& what, const std::vector<float>& out,
                   const std::vector<float>& x, int32_t n_heads) {
    GLIMPSE_EXPECT_CLOSE(what, out, rotated(x, n_heads), testing::Tolerance::Fp32());
    for (int32_t t = 0; t < tokens; ++t) {
      for (int32_t h = 0; h < n_heads; ++h) {
        for (int32_t d = rot_dim; d < head_dim; ++d) {
          const int64_t i = (static_cast<int64_t>(t) * n_heads + h) * head_dim + d;
          GLIMPSE_EXPECT(out[i] == x[i], what + ": a dimension past rot_dim changed");
        }
      }
    }
  };
  const std::vector<float> x =
      testing::RandomNormal(static_cast<size_t>(tokens) * heads * head_dim, 0.0f, 1.0f);
  const std::vector<float> x2 =
      testing::RandomNormal(static_cast<size_t>(tokens) * heads2 * head_dim, 0.0f, 1.0f);
  DeviceArray<float> d_x, d_x2, d_table;
  GLIMPSE_ASSERT_CUDA(d_x.Upload(x));
  GLIMPSE_ASSERT_CUDA(d_x2.Upload(x2));
  GLIMPSE_ASSERT_CUDA(d_table.Upload(table));
  RopeTableParams p;
  p.x = d_x.get();
  p.num_tokens = tokens;
  p.num_heads = heads;
  p.head_dim = head_dim;
  p.rot_dim = rot_dim;
  p.style = style;
  p.cos_sin = d_table.get();
  p.x2 = heads2 > 0 ? d_x2.get() : nullptr;
  p.num_heads2 = heads2;
  GLIMPSE_ASSERT_CUDA(LaunchRopeWithTable(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> out, out2;
  GLIMPSE_ASSERT_CUDA(d_x.Download(&out));
  check(name, out, x, heads);
  if (heads2 > 0) {
    GLIMPSE_ASSERT_CUDA(d_x2.Download(&out2));
    check(name + " second tensor", out2, x2, heads2);
  }
}

GLIMPSE_CUDA_TEST(RopeWithTableMatchesReference) {
  for (const RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
    RunCase(style, 1, 1, 2, 2, 10000.0f);
    RunCase(style, 37, 6, 32, 32, 10000.0f);   // the bundled model's shape
    RunCase(style, 5, 3, 64, 40, 10000.0f);    // partial rotary
    RunCase(style, 9, 32, 128, 128, 500000.0f);
    RunCase(style, 300, 7, 80, 64, 1000000.0f);
  }
}

// q and k in one launch, as the CUDA backend's decode graphs rotate them: GQA head counts,
// partial rotary, more heads than a block has threads.
GLIMPSE_CUDA_TEST(RopeWithTableRotatesASecondTensorInTheSameLaunch) {
  for (const RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
    RunCase(style, 1, 1, 2, 2, 10000.0f, 1);
    RunCase(style, 37, 6, 32, 32, 10000.0f, 2);     // the bundled model's q and k
    RunCase(style, 5, 3, 64, 40, 10000.0f, 1);      // partial rotary
    RunCase(style, 9, 32, 128, 128, 500000.0f, 8);  // Llama-3-8B: 32 q heads, 8 k heads
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
