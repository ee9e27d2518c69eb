// KV append and slot copies: every written slot holds exactly the input, every other element
// of the cache is untouched (the cache starts as random data, not zeros).
#include "kernels/cuda/kv_append.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

const testing::Tolerance kExact{0.0, 0.0, 0.0};

// dtype: the cache's; the inputs are fp32 instead when fp32_input (dtype kBF16), and the
// cache must then hold them rounded to the nearest bf16.
void RunAppend(DType dtype, int32_t tokens, int32_t heads, int32_t page_size, int32_t head_dim,
               int64_t token_stride, bool fp32_input = false) {
  const DType input_dtype = fp32_input ? DType::kF32 : dtype;
  const std::string name = std::string("kv_append ") + testing::DTypeName(dtype) +
                           (fp32_input ? " (fp32 inputs)" : "") +
                           " tokens=" + std::to_string(tokens) + " heads=" +
                           std::to_string(heads) + " page=" + std::to_string(page_size) +
                           " d=" + std::to_string(head_dim) + " stride=" +
                           std::to_string(token_stride);
  const int32_t num_blocks = (tokens + page_size - 1) / page_size + 2;
  const size_t cache_n = static_cast<size_t>(num_blocks) * heads * page_size * head_dim;
  std::vector<float> k_cache = testing::RandomActivations(cache_n, dtype);
  std::vector<float> v_cache = testing::RandomActivations(cache_n, dtype);
  const std::vector<float> k = testing::RandomActivations(tokens * token_stride, input_dtype);
  const std::vector<float> v = testing::RandomActivations(tokens * token_stride, input_dtype);
  // What the cache must hold: the inputs, rounded when they are wider than the cache.
  const std::vector<float> k_stored = fp32_input ? testing::RoundBf16(k) : k;
  const std::vector<float> v_stored = fp32_input ? testing::RoundBf16(v) : v;
  // Distinct random slots; every 5th token is padding (-1).
  std::vector<int32_t> all(num_blocks * page_size);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), testing::Rng());
  std::vector<int32_t> slots(tokens);
  for (int32_t t = 0; t < tokens; ++t) slots[t] = t % 5 == 4 ? -1 : all[t];
  std::vector<double> k_ref(k_cache.begin(), k_cache.end());
  std::vector<double> v_ref(v_cache.begin(), v_cache.end());
  for (int32_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0) continue;
    for (int32_t h = 0; h < heads; ++h) {
      const int64_t dst =
          KvOffset(slots[t] / page_size, h, slots[t] % page_size, heads, page_size, head_dim);
      for (int32_t d = 0; d < head_dim; ++d) {
        k_ref[dst + d] = k_stored[t * token_stride + h * head_dim + d];
        v_ref[dst + d] = v_stored[t * token_stride + h * head_dim + d];
      }
    }
  }
  DeviceActivations d_k, d_v, d_kc, d_vc;
  DeviceArray<int32_t> d_slots;
  GLIMPSE_ASSERT_CUDA(d_k.Upload(k, input_dtype));
  GLIMPSE_ASSERT_CUDA(d_v.Upload(v, input_dtype));
  GLIMPSE_ASSERT_CUDA(d_kc.Upload(k_cache, dtype));
  GLIMPSE_ASSERT_CUDA(d_vc.Upload(v_cache, dtype));
  GLIMPSE_ASSERT_CUDA(d_slots.Upload(slots));
  KvAppendParams p;
  p.dtype = dtype;
  p.fp32_input = fp32_input;
  p.k = d_k.ptr;
  p.v = d_v.ptr;
  p.token_stride = token_stride;
  p.slot_mapping = d_slots.get();
  p.k_cache = d_kc.ptr;
  p.v_cache = d_vc.ptr;
  p.num_tokens = tokens;
  p.num_kv_heads = heads;
  p.page_size = page_size;
  p.head_dim = head_dim;
  GLIMPSE_ASSERT_CUDA(LaunchKvAppend(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> k_out, v_out;
  GLIMPSE_ASSERT_CUDA(d_kc.Download(&k_out, dtype));
  GLIMPSE_ASSERT_CUDA(d_vc.Download(&v_out, dtype));
  GLIMPSE_EXPECT_CLOSE(name + " k_cache", k_out, k_ref, kExact);
  GLIMPSE_EXPECT_CLOSE(name + " v_cache", v_out, v_ref, kExact);
}

// Random caches of num_blocks pages; the copies src[i] -> dst[i], grouped into `rounds` (one
// LaunchKvCopySlots each), must leave every destination with its source's original content
// (every head, every element) and every other element unchanged.
void ExpectCopiesMoveOriginalSlots(const std::string& name, DType dtype, int32_t num_blocks,
                                   int32_t heads, int32_t page_size, int32_t head_dim,
                                   const std::vector<int32_t>& src,
                                   const std::vector<int32_t>& dst,
                                   const std::vector<KvCopySlotsRound>& rounds) {
  const size_t cache_n = static_cast<size_t>(num_blocks) * heads * page_size * head_dim;
  const std::vector<float> k_cache = testing::RandomActivations(cache_n, dtype);
  const std::vector<float> v_cache = testing::RandomActivations(cache_n, dtype);
  std::vector<double> k_ref(k_cache.begin(), k_cache.end());
  std::vector<double> v_ref(v_cache.begin(), v_cache.end());
  for (size_t i = 0; i < src.size(); ++i) {
    for (int32_t h = 0; h < heads; ++h) {
      const int64_t from =
          KvOffset(src[i] / page_size, h, src[i] % page_size, heads, page_size, head_dim);
      const int64_t to =
          KvOffset(dst[i] / page_size, h, dst[i] % page_size, heads, page_size, head_dim);
      for (int32_t e = 0; e < head_dim; ++e) {
        k_ref[to + e] = k_cache[from + e];  // from the original content
        v_ref[to + e] = v_cache[from + e];
      }
    }
  }
  DeviceActivations d_kc, d_vc;
  GLIMPSE_ASSERT_CUDA(d_kc.Upload(k_cache, dtype));
  GLIMPSE_ASSERT_CUDA(d_vc.Upload(v_cache, dtype));
  for (const KvCopySlotsRound& round : rounds) {
    DeviceArray<int32_t> d_src, d_dst;
    GLIMPSE_ASSERT_CUDA(d_src.Upload(round.src));
    GLIMPSE_ASSERT_CUDA(d_dst.Upload(round.dst));
    KvCopySlotsParams p;
    p.dtype = dtype;
    p.k_cache = d_kc.ptr;
    p.v_cache = d_vc.ptr;
    p.src_slots = d_src.get();
    p.dst_slots = d_dst.get();
    p.num_copies = static_cast<int32_t>(round.src.size());
    p.num_kv_heads = heads;
    p.page_size = page_size;
    p.head_dim = head_dim;
    GLIMPSE_ASSERT_CUDA(LaunchKvCopySlots(p, nullptr));
  }
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  std::vector<float> k_out, v_out;
  GLIMPSE_ASSERT_CUDA(d_kc.Download(&k_out, dtype));
  GLIMPSE_ASSERT_CUDA(d_vc.Download(&v_out, dtype));
  GLIMPSE_EXPECT_CLOSE(name + " k_cache", k_out, k_ref, kExact);
  GLIMPSE_EXPECT_CLOSE(name + " v_cache", v_out, v_ref, kExact);
}

void RunCopy(DType dtype, int32_t heads, int32_t page_size, int32_t head_dim) {
  const std::string name = std::string("kv_copy_slots ") + testing::DTypeName(dtype) +
                           " page=" + std::to_string(page_size) + " d=" +
                           std::to_string(head_dim);
  const int32_t num_blocks = 6;
  // Compaction of an accepted path: sources and destinations disjoint, so one launch.
  std::vector<int32_t> all(num_blocks * page_size);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), testing::Rng());
  const int32_t copies = std::min<int32_t>(7, static_cast<int32_t>(all.size()) / 2);
  std::vector<int32_t> src(all.begin(), all.begin() + copies);
  std::vector<int32_t> dst(all.begin() + copies, all.begin() + 2 * copies);
  ExpectCopiesMoveOriginalSlots(name, dtype, num_blocks, heads, page_size, head_dim, src, dst,
                                {KvCopySlotsRound{src, dst}});
}

GLIMPSE_CUDA_TEST(KvAppendWritesExactlyTheMappedSlots) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunAppend(dtype, 1, 1, 1, 32, 32);
    RunAppend(dtype, 37, 8, 16, 128, 48 * 128);  // fused QKV row of Llama-8B (32+8+8 heads)
    RunAppend(dtype, 20, 2, 17, 64, 2 * 64);
    RunAppend(dtype, 9, 3, 16, 36, 3 * 36 + 2);  // scalar path (stride not a vector multiple)
  }
  // The CUDA backend's bf16 KV option: fp32 activations rounded into a bf16 cache.
  RunAppend(DType::kBF16, 37, 8, 16, 128, 48 * 128, true);
  RunAppend(DType::kBF16, 20, 2, 17, 64, 2 * 64, true);
  RunAppend(DType::kBF16, 9, 3, 16, 36, 3 * 36 + 2, true);  // scalar path
}

GLIMPSE_CUDA_TEST(KvCopySlotsMovesWholeSlots) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    RunCopy(dtype, 8, 16, 128);
    RunCopy(dtype, 2, 1, 64);
    RunCopy(dtype, 3, 17, 32);
  }
}

// Compaction of accepted draft paths in a batch: sequence s's tree occupies flat slots
// [base_s + prefix, base_s + prefix + nodes); the accepted path (node 0, then increasing node
// indices) moves to base_s + prefix + 0, 1, 2, ... The planned rounds, run one launch each, must
// leave every destination with its source's original content and nothing else changed.
GLIMPSE_CUDA_TEST(KvCopySlotRoundsCompactAcceptedPaths) {
  const int32_t heads = 2, page_size = 16, head_dim = 64;
  const int32_t num_blocks = 40;
  std::vector<int32_t> src, dst;
  int32_t base = 0;
  for (int s = 0; s < 6; ++s) {
    const int32_t prefix = testing::RandomInt(0, 40);
    const int32_t nodes = testing::RandomInt(1, 64);
    // Node 0 is always accepted (the root); each later node with probability 1/2.
    int32_t kept = 1;
    for (int32_t node = 1; node < nodes; ++node) {
      if (testing::RandomInt(0, 1) == 0) continue;
      src.push_back(base + prefix + node);
      dst.push_back(base + prefix + kept);
      ++kept;
    }
    base += prefix + nodes;
  }
  // A contrived chain needing one round per link: 104 -> 103 -> 102 -> 101 -> 100 read before
  // written, plus a copy onto itself (dropped).
  for (int32_t i = 0; i < 4; ++i) {
    src.push_back(base + 101 + i);
    dst.push_back(base + 100 + i);
  }
  src.push_back(base + 120);
  dst.push_back(base + 120);
  GLIMPSE_EXPECT(base + 121 <= num_blocks * page_size, "slots fit the cache");

  std::vector<KvCopySlotsRound> rounds;
  GLIMPSE_ASSERT_CUDA(PlanKvCopySlotRounds(src, dst, &rounds));
  GLIMPSE_EXPECT(rounds.size() >= 2, "compaction chains need more than one round");

  ExpectCopiesMoveOriginalSlots("compaction in " + std::to_string(rounds.size()) + " rounds",
                                DType::kBF16, num_blocks, heads, page_size, head_dim, src, dst,
                                rounds);
}

GLIMPSE_CUDA_TEST(KvCopySlotRoundsRefuseSharedDestinationsAndCycles) {
  std::vector<KvCopySlotsRound> rounds;
  GLIMPSE_EXPECT(PlanKvCopySlotRounds({1, 2}, {3, 3}, &rounds) == cudaErrorInvalidValue,
                 "two copies onto slot 3");
  GLIMPSE_EXPECT(PlanKvCopySlotRounds({1, 2}, {2, 1}, &rounds) == cudaErrorInvalidValue,
                 "a swap is a cycle");
  GLIMPSE_EXPECT(PlanKvCopySlotRounds({5}, {5}, &rounds) == cudaSuccess && rounds.empty(),
                 "a copy onto itself needs no launch");
}

}  // namespace
}  // namespace glimpse::kernels::cuda
