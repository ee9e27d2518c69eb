#include "kernels/cpu/attention.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "kernels/cpu/elementwise.h"

namespace glimpse::kernels::cpu {
namespace {

// A paged layout of one sequence's keys/values, with blocks placed in a scrambled order, written
// by StoreKv into a cache of `kv_type` elements.
struct PagedSeq {
  std::vector<unsigned char> k, v;  // pool storage; unwritten elements are NaN (all bits set)
  std::vector<int32_t> blocks;
};

PagedSeq Scatter(const std::vector<float>& k, const std::vector<float>& v, int32_t ctx,
                 int32_t kv_heads, int32_t hd, int32_t block_size, uint32_t seed,
                 KvElementType kv_type) {
  const int32_t num_pages = (ctx + block_size - 1) / block_size;
  const int32_t pool_blocks = num_pages + 3;
  PagedSeq s;
  s.k.assign(static_cast<size_t>(pool_blocks) * block_size * kv_heads * hd * KvElementSize(kv_type),
             0xff);
  s.v.assign(s.k.size(), 0xff);
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  s.blocks.assign(ids.begin(), ids.begin() + num_pages);
  std::vector<int32_t> slots(ctx);
  for (int32_t j = 0; j < ctx; ++j)
    slots[j] = s.blocks[j / block_size] * block_size + j % block_size;
  KvStoreParams store;
  store.k = k.data();
  store.v = v.data();
  store.kv = KvLayerView{s.k.data(), s.v.data(), block_size, kv_heads, hd};
  store.num_tokens = ctx;
  store.slots = slots.data();
  StoreKv(store, kv_type);
  return s;
}

// x rounded to the nearest value of `kv_type` by common/float16.h's scalar conversions.
float RoundTo(KvElementType kv_type, float x) {
  switch (kv_type) {
    case KvElementType::kF16:
      return HalfToFloat(FloatToHalf(x));
    case KvElementType::kBF16:
      return Bf16ToFloat(FloatToBf16(x));
    case KvElementType::kF32:
      break;
  }
  return x;
}

std::vector<float> RoundAll(KvElementType kv_type, std::vector<float> x) {
  for (float& e : x) e = RoundTo(kv_type, e);
  return x;
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
                            int threads, KvElementType kv_type = KvElementType::kF32) {
  PagedSeq s = Scatter(k, v, ctx, kv_heads, hd, block_size, 99, kv_type);
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
  PagedAttention(p, kv_type, pool);
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
  for (KvElementType type : {KvElementType::kF32, KvElementType::kF16, KvElementType::kBF16}) {
    const auto base = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, 16, 1, type);
    for (int32_t bs : {1, 7, 16, 17, 128}) {
      for (int threads : {1, 2, 3}) {
        const auto got = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, bs, threads, type);
        EXPECT_EQ(std::memcmp(got.data(), base.data(), got.size() * 4), 0)
            << KvElementTypeName(type) << " block size " << bs << " threads " << threads;
      }
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

constexpr KvElementType kSixteenBit[] = {KvElementType::kF16, KvElementType::kBF16};

TEST(PagedAttentionTest, SixteenBitCachesMatchTheReferenceOnRoundedKeysAndValues) {
  // head_dim 36: 8-wide value chunks and a scalar tail; 64 and 128: the register-accumulator
  // paths. ctx 45 in blocks of 16: score chunks of 16, 8 and single slots.
  for (KvElementType type : kSixteenBit) {
    for (int32_t hd : {36, 64, 128}) {
      const int32_t heads = hd == 64 ? 12 : 6, kv_heads = 2, ctx = 45, nq = 3;
      const auto q = Random(nq * heads * hd, 20 + hd);
      const auto k = Random(ctx * kv_heads * hd, 21 + hd);
      const auto v = Random(ctx * kv_heads * hd, 22 + hd);
      const auto got = RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, 16, 2, type);
      const auto k_rounded = RoundAll(type, k);
      const auto v_rounded = RoundAll(type, v);
      for (int32_t i = 0; i < nq; ++i) {
        std::vector<float> want(heads * hd);
        AttentionReference(&q[i * heads * hd], k_rounded.data(), v_rounded.data(), ctx - nq + i + 1,
                           heads, kv_heads, hd, 0.125f, want.data());
        for (int32_t j = 0; j < heads * hd; ++j) {
          ASSERT_NEAR(got[i * heads * hd + j], want[j], 2e-5)
              << KvElementTypeName(type) << " head_dim " << hd << " query " << i << " elem " << j;
        }
      }
      // The cache really holds 16-bit values: an fp32 cache gives other outputs.
      EXPECT_NE(got, RunPaged(q, k, v, ctx, nq, heads, kv_heads, hd, 16, 2, KvElementType::kF32))
          << KvElementTypeName(type);
    }
  }
}

// The encoding of `x`'s neighbours on either side of `bits` decode farther from x, or as far
// and `bits` is even: `bits` is x rounded to nearest, ties to even. Checked against the
// neighbours, not by the conversion StoreKv uses.
bool IsNearest(KvElementType type, uint16_t bits, float x) {
  const auto decode = [type](uint16_t b) {
    return type == KvElementType::kF16 ? HalfToFloat(b) : Bf16ToFloat(b);
  };
  const double err = std::fabs(static_cast<double>(decode(bits)) - x);
  for (const int step : {-1, 1}) {
    const uint16_t other = static_cast<uint16_t>(bits + step);
    if ((other & 0x8000) != (bits & 0x8000)) continue;  // wrapped past zero: other sign
    const double other_err = std::fabs(static_cast<double>(decode(other)) - x);
    if (other_err < err || (other_err == err && (bits & 1) != 0)) return false;
  }
  return true;
}

TEST(StoreKvTest, SixteenBitCachesHoldTheNearestValueAtEachKeyAndValuePosition) {
  const int32_t kv_heads = 2, hd = 8, block_size = 4, ctx = 6;
  std::vector<float> k = Random(ctx * kv_heads * hd, 30);
  std::vector<float> v = Random(ctx * kv_heads * hd, 31);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] *= std::ldexp(1.0f, static_cast<int>(i % 17) - 8);  // magnitudes 2^-8 .. 2^8
    v[i] *= std::ldexp(1.0f, 8 - static_cast<int>(i % 13));
  }
  // Exact ties between two representable values: bf16 1 + 2^-8, fp16 1 + 2^-11 (both round
  // down to the even 1.0), and their odd-neighbour counterparts (round up).
  k[0] = 1.0f + std::ldexp(1.0f, -8);
  k[1] = 1.0f + 3 * std::ldexp(1.0f, -8);
  v[0] = 1.0f + std::ldexp(1.0f, -11);
  v[1] = -(1.0f + 3 * std::ldexp(1.0f, -11));
  for (KvElementType type : kSixteenBit) {
    PagedSeq s = Scatter(k, v, ctx, kv_heads, hd, block_size, 7, type);
    const KvLayerView view{s.k.data(), s.v.data(), block_size, kv_heads, hd};
    for (int32_t j = 0; j < ctx; ++j) {
      const int32_t block = s.blocks[j / block_size];
      const int32_t slot = j % block_size;
      for (int32_t h = 0; h < kv_heads; ++h) {
        for (int32_t d = 0; d < hd; ++d) {
          const int32_t i = (j * kv_heads + h) * hd + d;
          EXPECT_TRUE(
              IsNearest(type, KeyTile<uint16_t>(view, block, h)[d * block_size + slot], k[i]))
              << KvElementTypeName(type) << " key " << i << " = " << k[i];
          EXPECT_TRUE(IsNearest(type, ValueTile<uint16_t>(view, block, h)[slot * hd + d], v[i]))
              << KvElementTypeName(type) << " value " << i << " = " << v[i];
        }
      }
    }
  }
}

}  // namespace
}  // namespace glimpse::kernels::cpu
