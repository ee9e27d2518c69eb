#include "kernels/cpu/attention.h"

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::kernels::cpu {
namespace {

// A paged layout of one sequence's keys/values, with blocks placed in a scrambled order.
struct PagedSeq {
  std::vector<float> k, v;  // pool storage
  std::vector<int32_t> blocks;
};

PagedSeq Scatter(const std::vector<float>& k, const std::vector<float>& v, int32_t ctx,
                 int32_t kv_heads, int32_t hd, int32_t block_size, uint32_t seed) {
  const int32_t num_pages = (ctx + block_size - 1) / block_size;
  const int32_t pool_blocks = num_pages + 3;
  PagedSeq s;
  s.k.assign(static_cast<size_t>(pool_blocks) * block_size * kv_heads * hd, NAN);
  s.v.assign(s.k.size(), NAN);
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  s.blocks.assign(ids.begin(), ids.begin() + num_pages);
  const KvLayerView view{s.k.data(), s.v.data(), block_size, kv_heads, hd};
  for (int32_t j = 0; j < ctx; ++j) {
    const int32_t block = s.blocks[j / block_size];
    const int32_t slot = j % block_size;
    for (int32_t h = 0; h < kv_heads; ++h) {
      for (int32_t d = 0; d < hd; ++d) {
        KeyTile(view, block, h)[d * block_size + slot] = k[(j * kv_heads + h) * hd + d];
        ValueTile(view, block, h)[slot * hd + d] = v[(j * kv_heads + h) * hd + d];
      }
    }
  }
  return s;
}

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> out(n);
  for (float& x : out) x = d(rng);
  return out;
}

// Runs one sequence's last `num_queries` positions through PagedAttention.
std::vector<float> RunPaged(const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<float>& v, int32_t ctx, int32_t num_queries,
                            int32_t heads, int32_t kv_heads, int32_t hd, int32_t block_size,
                            int threads) {
  PagedSeq s = Scatter(k, v, ctx, kv_heads, hd, block_size, 99);
  std::vector<float> out(static_cast<size_t>(num_queries) * heads * hd);
  std::vector<int32_t> positions(num_queries);
  for (int32_t i = 0; i < num_queries; ++i) positions[i] = ctx - num_queries + i;
  const int32_t query_start[2] = {0, num_queries};
  const int32_t indptr[2] = {0, static_cast<int32_t>(s.blocks.size())};
  const int32_t last = ctx - (static_cast<int32_t>(s.blocks.size()) - 1) * block_size;
  PagedAttentionParams p;
  p.q = q.data();
  p.out = out.data();
  p.kv = KvLayerView{s.k.data(), s.v.data(), block_size, kv_heads, hd};
  p.num_seqs = 1;
  p.num_heads = heads;
  p.query_start = query_start;
  p.positions = positions.data();
  p.kv_indptr = indptr;
  p.kv_indices = s.blocks.data();
  p.kv_last_page_len = &last;
  p.scale = 0.125f;
  ThreadPool pool(threads);
  PagedAttention(p, pool);
  return out;
}

TEST(PagedAttentionTest, MatchesDoublePrecisionReference) {
  const int32_t heads = 6, kv_heads = 2, hd = 36, ctx = 41, nq = 5;
  auto q = Random(nq * heads * hd, 1);
  auto k = Random(ctx * kv_heads * hd, 2);
  auto v = Random(ctx * kv_heads * hd, 3);
  auto got = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, 16, 2);
  for (int32_t i = 0; i < nq; ++i) {
    std::vector<float> want(heads * hd);
    AttentionReference(&q[i * heads * hd], k.data(), v.data(), ctx - nq + i + 1, heads, kv_heads,
                       hd, 0.125f, want.data());
    for (int32_t j = 0; j < heads * hd; ++j) {
      EXPECT_NEAR(got[i * heads * hd + j], want[j], 2e-5) << "query " << i << " elem " << j;
    }
  }
}

TEST(PagedAttentionTest, BitwiseIdenticalForAnyBlockSizeAndThreadCount) {
  const int32_t heads = 4, kv_heads = 1, hd = 64, ctx = 70, nq = 3;
  auto q = Random(nq * heads * hd, 4);
  auto k = Random(ctx * kv_heads * hd, 5);
  auto v = Random(ctx * kv_heads * hd, 6);
  const auto base = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, 16, 1);
  for (int32_t bs : {1, 7, 16, 17, 128}) {
    for (int threads : {1, 2, 3}) {
      const auto got = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, bs, threads);
      EXPECT_EQ(std::memcmp(got.data(), base.data(), got.size() * 4), 0)
          << "block size " << bs << " threads " << threads;
    }
  }
}

TEST(PagedAttentionTest, LargeGroupsAndKnownHeadDimsMatchReference) {
  // head_dim 64 and 128 take the register-accumulator path; a group of 6 is split in two.
  for (int32_t hd : {64, 128}) {
    const int32_t heads = 12, kv_heads = 2, ctx = 35;
    auto q = Random(heads * hd, 10);
    auto k = Random(ctx * kv_heads * hd, 11);
    auto v = Random(ctx * kv_heads * hd, 12);
    auto got = RunPaged(q, k, v, ctx, 1, heads, kv_heads, hd, 16, 2);
    std::vector<float> want(heads * hd);
    AttentionReference(q.data(), k.data(), v.data(), ctx, heads, kv_heads, hd, 0.125f, want.data());
    for (int32_t j = 0; j < heads * hd; ++j) EXPECT_NEAR(got[j], want[j], 2e-5) << hd << " " << j;
  }
}

TEST(PagedAttentionTest, QueryOnlySeesEarlierPositions) {
  // Changing the values after the query's position must not change its output.
  const int32_t heads = 2, kv_heads = 2, hd = 8, ctx = 20;
  auto q = Random(heads * hd, 7);
  auto k = Random(ctx * kv_heads * hd, 8);
  auto v = Random(ctx * kv_heads * hd, 9);
  // Query at position 9 of a 20-long cache: pass ctx=10 worth of queries ending at 9.
  auto a = RunPaged(q, k, v, 10, 1, heads, kv_heads, hd, 4, 1);
  for (size_t i = 10 * kv_heads * hd; i < v.size(); ++i) v[i] = 1000.0f;
  auto b = RunPaged(q, k, v, 10, 1, heads, kv_heads, hd, 4, 1);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace glimpse::kernels::cpu
