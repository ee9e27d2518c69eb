// RoPE from a (cos, sin) table: the host table must reproduce the CPU backend's fp32 angle
// recurrence (checked against an independent copy of that loop, bitwise), and the kernel
// must apply it as a float64 reference on the same table does; both styles, partial rot_dim,
// odd head counts, positions up to 32k; dimensions past rot_dim untouched (bitwise); a
// second tensor (k) rotated in the same launch; and k and v appended to the paged cache in
// that launch, bitwise as RoPE then LaunchKvAppend.
#include "kernels/cuda/rope_table.h"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/kv_append.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceArray;

// A launch rotating x (heads) and x2 (heads2; 0: none) by `table`.
RopeTableParams RotationOf(float* x, int32_t heads, float* x2, int32_t heads2, int32_t tokens,
                           int32_t head_dim, int32_t rot_dim, RopeStyle style, const float* table) {
  RopeTableParams p;
  p.x = x;
  p.num_tokens = tokens;
  p.num_heads = heads;
  p.head_dim = head_dim;
  p.rot_dim = rot_dim;
  p.style = style;
  p.cos_sin = table;
  p.x2 = heads2 > 0 ? x2 : nullptr;
  p.num_heads2 = heads2;
  return p;
}

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
  const RopeTableParams p = RotationOf(d_x.get(), heads, d_x2.get(), heads2, tokens, head_dim,
                                       rot_dim, style, d_table.get());
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

// q and k rotated and k and v appended to the cache (dtype) in one launch (RopeKvAppend),
// against the two launches it replaces: the RoPE of q and k, then LaunchKvAppend of k and v.
// Both must leave q, k and both caches bitwise the same; token 1 (when there is one) is a
// padding token (slot -1), whose slot neither touches.
void RunAppendCase(RopeStyle style, int32_t tokens, int32_t heads, int32_t heads2, int32_t head_dim,
                   int32_t rot_dim, DType dtype, int32_t page_size) {
  const std::string name = std::string("rope_table + kv append ") +
                           (style == RopeStyle::kNeox ? "neox" : "normal") +
                           (dtype == DType::kBF16 ? " bf16" : " fp32") +
                           " tokens=" + std::to_string(tokens) + " heads=" + std::to_string(heads) +
                           "/" + std::to_string(heads2) + " d=" + std::to_string(head_dim) +
                           " rot=" + std::to_string(rot_dim) + " page=" + std::to_string(page_size);
  std::vector<int32_t> positions(tokens);
  for (int32_t t = 0; t < tokens; ++t) positions[t] = testing::RandomInt(0, 32768);
  std::vector<float> table(static_cast<size_t>(tokens) * rot_dim);
  FillRopeCosSinTable(positions.data(), tokens, rot_dim, 10000.0f, table.data());
  // Distinct slots scattered over the pages, token 1 a padding token.
  const int32_t num_pages = tokens / page_size + 2;
  std::vector<int32_t> slots(tokens);
  for (int32_t t = 0; t < tokens; ++t) slots[t] = (t * 7 + 3) % (num_pages * page_size);
  if (tokens > 1) slots[1] = -1;
  const size_t q_n = static_cast<size_t>(tokens) * heads * head_dim;
  const size_t kv_n = static_cast<size_t>(tokens) * heads2 * head_dim;
  const std::vector<float> q = testing::RandomNormal(q_n, 0.0f, 1.0f);
  const std::vector<float> k = testing::RandomNormal(kv_n, 0.0f, 1.0f);
  const std::vector<float> v = testing::RandomNormal(kv_n, 0.0f, 1.0f);
  const size_t cache_bytes = static_cast<size_t>(num_pages) * heads2 * page_size * head_dim *
                             (dtype == DType::kBF16 ? 2 : 4);
  DeviceArray<float> d_table, d_v;
  DeviceArray<int32_t> d_slots;
  GLIMPSE_ASSERT_CUDA(d_table.Upload(table));
  GLIMPSE_ASSERT_CUDA(d_v.Upload(v));
  GLIMPSE_ASSERT_CUDA(d_slots.Upload(slots));
  // [0]: one launch; [1]: two.
  DeviceArray<float> d_q[2], d_k[2];
  DeviceArray<uint8_t> d_k_cache[2], d_v_cache[2];
  for (int run = 0; run < 2; ++run) {
    GLIMPSE_ASSERT_CUDA(d_q[run].Upload(q));
    GLIMPSE_ASSERT_CUDA(d_k[run].Upload(k));
    GLIMPSE_ASSERT_CUDA(d_k_cache[run].Allocate(cache_bytes));  // poisoned, 0xFF
    GLIMPSE_ASSERT_CUDA(d_v_cache[run].Allocate(cache_bytes));
    RopeTableParams p = RotationOf(d_q[run].get(), heads, d_k[run].get(), heads2, tokens, head_dim,
                                   rot_dim, style, d_table.get());
    if (run == 0) {
      p.kv_append.k_cache = d_k_cache[run].get();
      p.kv_append.v_cache = d_v_cache[run].get();
      p.kv_append.dtype = dtype;
      p.kv_append.page_size = page_size;
      p.kv_append.v = d_v.get();
      p.kv_append.slot_mapping = d_slots.get();
    }
    GLIMPSE_ASSERT_CUDA(LaunchRopeWithTable(p, nullptr));
    if (run == 1) {
      KvAppendParams a;
      a.dtype = dtype;
      a.fp32_input = dtype == DType::kBF16;
      a.k = d_k[run].get();
      a.v = d_v.get();
      a.token_stride = static_cast<int64_t>(heads2) * head_dim;
      a.slot_mapping = d_slots.get();
      a.k_cache = d_k_cache[run].get();
      a.v_cache = d_v_cache[run].get();
      a.num_tokens = tokens;
      a.num_kv_heads = heads2;
      a.page_size = page_size;
      a.head_dim = head_dim;
      GLIMPSE_ASSERT_CUDA(LaunchKvAppend(a, nullptr));
    }
    GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  }
  auto same = [&](const std::string& what, const auto& one, const auto& two) {
    std::vector<std::remove_cvref_t<decltype(*one.get())>> a, b;
    GLIMPSE_ASSERT_CUDA(one.Download(&a));
    GLIMPSE_ASSERT_CUDA(two.Download(&b));
    GLIMPSE_EXPECT(
        a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0,
        name + ": " + what + " differs from RoPE then KV append");
  };
  same("q", d_q[0], d_q[1]);
  same("k", d_k[0], d_k[1]);
  same("the key cache", d_k_cache[0], d_k_cache[1]);
  same("the value cache", d_v_cache[0], d_v_cache[1]);
}

// The CUDA backend's decode graphs: k's RoPE and the KV append in q's RoPE launch. Both cache
// dtypes, both styles, partial rotary (the key dims past rot_dim are copied, not rotated),
// more k elements than a block has threads, page sizes 1, 16 and 17.
GLIMPSE_CUDA_TEST(RopeWithTableAppendsKvInTheSameLaunch) {
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    for (const RopeStyle style : {RopeStyle::kNormal, RopeStyle::kNeox}) {
      RunAppendCase(style, 1, 1, 1, 2, 2, dtype, 1);
      RunAppendCase(style, 37, 6, 2, 32, 32, dtype, 16);    // the bundled model's q and k
      RunAppendCase(style, 5, 3, 1, 64, 40, dtype, 17);     // partial rotary
      RunAppendCase(style, 9, 32, 8, 128, 128, dtype, 16);  // Llama-3-8B: 8 kv heads
    }
  }
}

}  // namespace
}  // namespace glimpse::kernels::cuda
