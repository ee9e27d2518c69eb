// Prefill (causal) and tree-verification attention on tensor cores against a float64
// reference on the same bf16 inputs: head dims 32/64/128, group sizes 1..8, page sizes
// 1/16/17, query counts that are not multiples of the 64-row tile, chunked prefill over a
// cached prefix, split-KV on and off, random draft trees of 1..64 nodes; checks o and lse.
// Every kernel: mma.sync with 64- and 128-row blocks, and wgmma plain and pipelined (head dims
// 64/128, sm_90 devices only); and the fp32 CUDA-core kernel on fp32 inputs, to fp32 bounds.
#include "kernels/cuda/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"
#include "kernels/cuda/tree_attention.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

const testing::Tolerance kLseTolerance{1e-3, 1e-4, 1e-5};

struct SeqShape {
  int32_t qo_len;
  int32_t kv_len;
};

// Random topologically ordered tree of n nodes; returns ancestor masks.
std::vector<uint64_t> RandomTreeMasks(int32_t n) {
  std::vector<int32_t> parents(n);
  for (int32_t i = 0; i < n; ++i) parents[i] = i == 0 ? -1 : testing::RandomInt(0, i - 1);
  std::vector<uint64_t> masks(n);
  AncestorMasksFromParents(parents.data(), n, masks.data());
  return masks;
}

// GLIMPSE_PREFILL_TEST_MAX_PAIRS=N (tools/test.sh sets it for the sanitized run on the CPU
// emulation, where these cases take ~5x as long as unsanitized): cases of more than N
// (query head, key) pairs (queries x keys x heads) are skipped, saying so. They run unsanitized and
// on a GPU; the smaller cases cover the same code paths (tiles ending mid-tile, several tiles per
// block, split KV) for out-of-bounds accesses.
int64_t MaxCasePairs() {
  const char* env = std::getenv("GLIMPSE_PREFILL_TEST_MAX_PAIRS");
  return env != nullptr ? std::atoll(env) : 0;
}

// merge_in_kernel: a split plan's chunks merge in the last block of each (sequence, query
// tile, kv head) (PrefillAttentionParams::merge_counters, as the backend runs it), whose
// counters must all be 0 again after the launch, and a sequence of one chunk writes o
// directly, leaving its partial-state slots in the workspace (poisoned, NaN) untouched; else
// the chunks merge in a second launch.
void RunCase(AttentionMaskMode mode, int32_t head_dim, int32_t group, int32_t num_kv_heads,
             int32_t page_size, const std::vector<SeqShape>& seqs, int32_t num_sms,
             PrefillKernel requested = PrefillKernel::kMmaSync, DType dtype = DType::kBF16,
             bool merge_in_kernel = true) {
  // The kernel the backend would run at this page size on an H200 (the pipelined kernel
  // hands page sizes its TMA boxes cannot tile to kWgmma).
  const PrefillKernel kernel = PrefillKernelFor(requested, head_dim, page_size, 9, 232448);
  const bool tree = mode == AttentionMaskMode::kTree;
  const int32_t num_seqs = static_cast<int32_t>(seqs.size());
  const int32_t num_qo_heads = num_kv_heads * group;
  std::vector<int32_t> kv_lens, qo_indptr = {0};
  for (const SeqShape& s : seqs) {
    kv_lens.push_back(s.kv_len);
    qo_indptr.push_back(qo_indptr.back() + s.qo_len);
  }
  const int32_t total_q = qo_indptr.back();
  if (const int64_t max_pairs = MaxCasePairs(); max_pairs > 0) {
    int64_t pairs = 0;  // (query head, key) pairs, every key counted for every query
    for (const SeqShape& s : seqs) pairs += static_cast<int64_t>(s.qo_len) * s.kv_len;
    pairs *= num_kv_heads * group;
    if (pairs > max_pairs) {
      std::printf("  skipped (GLIMPSE_PREFILL_TEST_MAX_PAIRS=%lld): %lld pairs, d=%d\n",
                  static_cast<long long>(max_pairs), static_cast<long long>(pairs), head_dim);
      return;
    }
  }
  testing::HostPagedKv kv =
      testing::MakeRandomPagedKv(kv_lens, num_kv_heads, page_size, head_dim, dtype);
  std::vector<uint64_t> masks;
  for (const SeqShape& s : seqs) {
    const std::vector<uint64_t> m = tree ? RandomTreeMasks(s.qo_len)
                                         : std::vector<uint64_t>(s.qo_len, 0);
    masks.insert(masks.end(), m.begin(), m.end());
  }
  PrefillPlanInput in;
  in.qo_indptr = qo_indptr.data();
  in.kv_indptr = kv.indptr.data();
  in.kv_last_page_len = kv.last_page_len.data();
  in.num_seqs = num_seqs;
  in.num_qo_heads = num_qo_heads;
  in.num_kv_heads = num_kv_heads;
  in.page_size = page_size;
  in.mask_mode = mode;
  in.num_sms = num_sms;
  in.kernel = kernel;
  // With an odd number of kv heads (> 1), an L2 that holds the KV of two heads twice over:
  // the blocks run in passes of two heads and a last pass of one (PrefillBlockOf).
  const bool two_head_passes = num_kv_heads > 1 && num_kv_heads % 2 == 1;
  if (two_head_passes) {
    int64_t keys = 0;
    for (const SeqShape& s : seqs) keys += s.kv_len;
    in.kv_bytes_per_key = 2 * head_dim * static_cast<int64_t>(DTypeSize(dtype));
    in.l2_cache_bytes = 4 * keys * in.kv_bytes_per_key;
  }
  PrefillPlan plan;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &plan));
  GLIMPSE_EXPECT(plan.heads_per_pass == (two_head_passes ? 2 : num_kv_heads),
                 "heads per pass " + std::to_string(plan.heads_per_pass));
  std::string name = std::string(tree ? "tree" : "causal") +
                     (kernel == PrefillKernel::kWgmma               ? " wgmma"
                      : kernel == PrefillKernel::kWgmmaPipelined    ? " wgmma-pipelined"
                      : kernel == PrefillKernel::kWgmmaPipelined128 ? " wgmma-pipelined-128"
                      : kernel == PrefillKernel::kMmaSyncWide       ? " wide"
                                                                    : "") +
                     (dtype == DType::kF32 ? " fp32" : "") + " d=" + std::to_string(head_dim) +
                     " group=" + std::to_string(group) + " hkv=" + std::to_string(num_kv_heads) +
                     " page=" + std::to_string(page_size) +
                     " heads/pass=" + std::to_string(plan.heads_per_pass) +
                     " chunks=" + std::to_string(plan.num_chunks) +
                     (plan.num_chunks > 1 && !merge_in_kernel ? " merge launch" : "") + " (qo,kv)=";
  for (const SeqShape& s : seqs) {
    name += '(';
    name += std::to_string(s.qo_len);
    name += ',';
    name += std::to_string(s.kv_len);
    name += ')';
  }
  const size_t q_n = static_cast<size_t>(total_q) * num_qo_heads * head_dim;
  const std::vector<float> q = testing::RandomActivations(q_n, dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  std::vector<double> o_ref(q_n);
  std::vector<double> lse_ref(static_cast<size_t>(total_q) * num_qo_heads);
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t prefix = seqs[s].kv_len - seqs[s].qo_len;
    for (int32_t t = 0; t < seqs[s].qo_len; ++t) {
      const int32_t token = qo_indptr[s] + t;
      const uint64_t mask = masks[token];
      auto visible = [&](int32_t j) {
        if (tree) return j < prefix || ((mask >> (j - prefix)) & 1) != 0;
        return j <= prefix + t;
      };
      for (int32_t h = 0; h < num_qo_heads; ++h) {
        const size_t row = static_cast<size_t>(token) * num_qo_heads + h;
        testing::ReferenceAttendOne(kv, s, h / group, &q[row * head_dim], scale, visible,
                                    &o_ref[row * head_dim], &lse_ref[row]);
      }
    }
  }
  testing::DevicePagedKv d_kv;
  GLIMPSE_ASSERT_CUDA(d_kv.Upload(kv, dtype));
  DeviceActivations d_q, d_o;
  DeviceArray<float> d_lse, d_ws;
  DeviceArray<int32_t> d_qo_indptr, d_work;
  DeviceArray<uint64_t> d_masks;
  GLIMPSE_ASSERT_CUDA(d_q.Upload(q, dtype));
  GLIMPSE_ASSERT_CUDA(d_o.AllocatePoisoned(q_n, dtype));
  GLIMPSE_ASSERT_CUDA(d_lse.Allocate(lse_ref.size()));
  GLIMPSE_ASSERT_CUDA(d_qo_indptr.Upload(qo_indptr));
  GLIMPSE_ASSERT_CUDA(d_work.Upload(plan.work_items));
  GLIMPSE_ASSERT_CUDA(d_masks.Upload(masks));
  const size_t ws_bytes = PrefillWorkspaceBytes(plan, num_qo_heads, head_dim);
  GLIMPSE_ASSERT_CUDA(d_ws.Allocate(ws_bytes / sizeof(float)));
  PrefillAttentionParams p;
  p.dtype = dtype;
  p.q = d_q.ptr;
  p.o = d_o.ptr;
  p.lse = d_lse.get();
  p.kv = d_kv.view;
  p.qo_indptr = d_qo_indptr.get();
  p.num_seqs = num_seqs;
  p.num_qo_heads = num_qo_heads;
  p.sm_scale = static_cast<float>(scale);
  p.mask_mode = mode;
  p.kernel = kernel;
  p.tree_mask = tree ? d_masks.get() : nullptr;
  ApplyPrefillPlan(plan, &p);
  p.work_items = d_work.get();
  p.workspace = d_ws.get();
  p.workspace_bytes = ws_bytes;
  const int64_t num_counters = PrefillMergeCounters(total_q, num_qo_heads);
  DeviceArray<int32_t> d_counters;
  GLIMPSE_ASSERT_CUDA(d_counters.Upload(std::vector<int32_t>(num_counters, 0)));
  if (merge_in_kernel) {
    p.merge_counters = d_counters.get();
    p.num_merge_counters = num_counters;
  }
  GLIMPSE_ASSERT_CUDA(tree ? LaunchTreeAttention(p, nullptr) : LaunchPrefillAttention(p, nullptr));
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
  if (merge_in_kernel) {
    std::vector<int32_t> counters;
    GLIMPSE_ASSERT_CUDA(d_counters.Download(&counters));
    const int64_t left = testing::NonZeroCounters(counters);
    GLIMPSE_EXPECT(left == 0, name + ": " + std::to_string(left) +
                                  " merge counters not back to 0 after the launch");
    std::vector<float> ws;
    GLIMPSE_ASSERT_CUDA(d_ws.Download(&ws));
    const int64_t written = testing::PartialStatesOfOneChunkSequences(
        ws, plan.num_chunks, plan.chunk_keys, qo_indptr, kv_lens, num_qo_heads, head_dim);
    GLIMPSE_EXPECT(written == 0, name + ": " + std::to_string(written) +
                                     " partial states written for one-chunk sequences");
  }
  std::vector<float> o, lse;
  GLIMPSE_ASSERT_CUDA(d_o.Download(&o, dtype));
  GLIMPSE_ASSERT_CUDA(d_lse.Download(&lse));
  const bool fp32 = dtype == DType::kF32;
  GLIMPSE_EXPECT_CLOSE(name + " o", o, o_ref,
                       fp32 ? testing::Tolerance::Fp32() : testing::Tolerance::Bf16());
  GLIMPSE_EXPECT_CLOSE(name + " lse", lse, lse_ref,
                       fp32 ? testing::Tolerance::Fp32() : kLseTolerance);
}

GLIMPSE_CUDA_TEST(PrefillCausalMatchesReference) {
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  for (const int32_t head_dim : {32, 64, 128}) {
    for (const int32_t group : {1, 2, 4, 8}) {
      // Pure prefill, chunked prefill over a cached prefix, a single token, exactly one tile.
      RunCase(causal, head_dim, group, 2, 16, {{17, 17}, {100, 300}, {1, 1}, {64, 64}}, 1);
    }
  }
  RunCase(causal, 128, 3, 2, 1, {{70, 70}, {5, 130}}, 1);   // page size 1, odd group
  RunCase(causal, 64, 5, 3, 17, {{33, 200}, {129, 129}}, 1);  // page size 17
  RunCase(causal, 128, 4, 8, 16, {{513, 1000}}, 1);          // Llama-8B heads, long-ish
}

GLIMPSE_CUDA_TEST(PrefillCausalSplitKvMatchesReference) {
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  // Few query rows, long KV: the planner splits (132 SMs) and merges.
  RunCase(causal, 128, 4, 2, 16, {{30, 2000}}, 132);
  RunCase(causal, 64, 8, 1, 17, {{3, 1500}, {40, 41}, {1, 700}}, 132);
  RunCase(causal, 32, 1, 4, 1, {{9, 1100}}, 132);
  // The same chunks merged by a second launch (LaunchMergeAttentionStates).
  const PrefillKernel mma = PrefillKernel::kMmaSync;
  const DType bf16 = DType::kBF16;
  RunCase(causal, 128, 4, 2, 16, {{30, 2000}}, 132, mma, bf16, /*merge_in_kernel=*/false);
  RunCase(causal, 64, 8, 1, 17, {{3, 1500}, {40, 41}, {1, 700}}, 132, mma, bf16, false);
}

GLIMPSE_CUDA_TEST(TreeAttentionMatchesReference) {
  const AttentionMaskMode tree = AttentionMaskMode::kTree;
  for (const int32_t head_dim : {32, 64, 128}) {
    for (const int32_t group : {1, 2, 4, 8}) {
      RunCase(tree, head_dim, group, 2, 16, {{16, 16 + 100}, {7, 7 + 33}, {1, 1 + 5}}, 1);
    }
  }
  RunCase(tree, 128, 4, 8, 16, {{64, 64 + 1000}}, 1);          // the largest tree
  RunCase(tree, 64, 3, 2, 17, {{64, 64}, {13, 13 + 17}}, 1);  // no prefix at all
  RunCase(tree, 128, 4, 8, 16, {{16, 16 + 4000}}, 132);        // split KV
  RunCase(tree, 32, 7, 1, 1, {{40, 40 + 300}, {2, 2 + 1}}, 132);
  RunCase(tree, 32, 7, 1, 1, {{40, 40 + 300}, {2, 2 + 1}}, 132, PrefillKernel::kMmaSync,
          DType::kBF16, /*merge_in_kernel=*/false);
}

// One variant kernel over the main cases of the tests above: causal and tree for every group
// size and `head_dims`, odd page sizes and groups, Llama-8B heads, split KV, the largest tree.
void RunVariantCases(PrefillKernel kernel, std::initializer_list<int32_t> head_dims,
                     DType dtype = DType::kBF16) {
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  const AttentionMaskMode tree = AttentionMaskMode::kTree;
  const PrefillKernel k = kernel;
  const DType t = dtype;
  for (const int32_t head_dim : head_dims) {
    for (const int32_t group : {1, 2, 4, 8}) {
      RunCase(causal, head_dim, group, 2, 16, {{17, 17}, {100, 300}, {1, 1}, {64, 64}}, 1, k, t);
      RunCase(tree, head_dim, group, 2, 16, {{16, 16 + 100}, {7, 7 + 33}, {1, 1 + 5}}, 1, k, t);
    }
  }
  RunCase(causal, 128, 3, 2, 1, {{70, 70}, {5, 130}}, 1, k, t);     // page size 1, odd group
  RunCase(causal, 64, 5, 3, 17, {{33, 200}, {129, 129}}, 1, k, t);  // page size 17
  RunCase(causal, 128, 4, 8, 16, {{513, 1000}}, 1, k, t);           // Llama-8B heads
  RunCase(causal, 128, 4, 2, 16, {{30, 2000}}, 132, k, t);          // split KV
  RunCase(tree, 128, 4, 8, 16, {{64, 64 + 1000}}, 1, k, t);         // the largest tree
}

// 128-row blocks (two m-tiles per warp): 129 and 513 rows end mid-block, and a group of 8
// with 16 tree nodes fills exactly one block.
GLIMPSE_CUDA_TEST(PrefillWideMatchesReference) {
  RunVariantCases(PrefillKernel::kMmaSyncWide, {32, 64, 128});
}

// The fp32 cache's kernel (CUDA cores, fp32 throughout) over the same cases, against the
// float64 reference to fp32 bounds; plus tiles that end a key short of and one past a 32-key
// tile, a split whose chunks end mid-tile, and an empty query range beside full ones.
GLIMPSE_CUDA_TEST(PrefillFp32MatchesReference) {
  const DType fp32 = DType::kF32;
  const PrefillKernel mma = PrefillKernel::kMmaSync;
  RunVariantCases(mma, {32, 64, 128}, fp32);
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  RunCase(causal, 64, 2, 2, 16, {{31, 31}, {33, 33}, {0, 40}, {5, 95}}, 1, mma, fp32);
  RunCase(causal, 32, 8, 1, 5, {{3, 1500}, {40, 41}, {1, 700}}, 132, mma, fp32);
  RunCase(causal, 32, 8, 1, 5, {{3, 1500}, {40, 41}, {1, 700}}, 132, mma, fp32,
          /*merge_in_kernel=*/false);
  RunCase(causal, 128, 1, 1, 16, {{300, 300}}, 1, mma, fp32);
}

// Points every array of `p` at `scratch` (aligned device memory): for launches that must be
// refused before reading any of them.
void PointArraysAt(int32_t* scratch, PrefillAttentionParams* p) {
  p->q = p->o = scratch;
  p->kv.k_cache = p->kv.v_cache = scratch;
  p->qo_indptr = p->kv.kv_indptr = p->kv.kv_indices = p->kv.kv_last_page_len = scratch;
  p->work_items = scratch;
}

// ---- Launch order ----
//
// The GPU starts blocks in about block-index order, as slots free up. Modelled here as list
// scheduling: `slots` resident blocks (SMs x blocks per SM), each block taking its cost, the
// next block starting on the first slot free. A block's cost is recomputed from its work
// item: one unit (Q load, setup, epilogue) plus the tiles of keys it reads.

struct LaunchShape {
  std::vector<SeqShape> seqs;
  int32_t group = 4;
  int32_t num_kv_heads = 8;
  PrefillKernel kernel = PrefillKernel::kMmaSync;
};

// Cost of every block of `plan`, in launch order (PrefillBlockOf). Also checks that the
// blocks cover every (work item, kv head) once and that a pass's blocks take its own heads.
std::vector<int64_t> LaunchOrderCosts(const LaunchShape& shape, const PrefillPlan& plan) {
  const int32_t items = plan.num_work_items();
  const int32_t heads = shape.num_kv_heads;
  const int32_t tile_keys = shape.kernel == PrefillKernel::kWgmmaPipelined128 ? 128 : 64;
  std::vector<int> seen(static_cast<size_t>(items) * heads, 0);
  std::vector<int64_t> costs;
  for (int32_t block = 0; block < items * heads; ++block) {
    const PrefillBlockAssignment a = PrefillBlockOf(block, items, heads, plan.heads_per_pass);
    if (a.work_item < 0 || a.work_item >= items || a.kv_head < 0 || a.kv_head >= heads) {
      GLIMPSE_EXPECT(false, "block " + std::to_string(block) + " maps outside the launch");
      return {};
    }
    ++seen[static_cast<size_t>(a.work_item) * heads + a.kv_head];
    const int32_t pass = block / (items * plan.heads_per_pass);
    GLIMPSE_EXPECT(a.kv_head / plan.heads_per_pass == pass,
                   "block " + std::to_string(block) + " of pass " + std::to_string(pass) +
                       " takes kv head " + std::to_string(a.kv_head));
    const int32_t seq = plan.work_items[3 * a.work_item];
    const int32_t tile = plan.work_items[3 * a.work_item + 1];
    const int32_t chunk = plan.work_items[3 * a.work_item + 2];
    const SeqShape& s = shape.seqs[seq];
    // The tile's packed rows end at token `last`, which sees keys up to prefix + last.
    const int32_t last_row = std::min((tile + 1) * plan.block_rows, s.qo_len * shape.group) - 1;
    const int32_t visible = s.kv_len - s.qo_len + last_row / shape.group + 1;
    const int32_t first = chunk * plan.chunk_keys;
    const int32_t keys = std::max(0, std::min(visible, first + plan.chunk_keys) - first);
    costs.push_back(1 + (keys + tile_keys - 1) / tile_keys);
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    GLIMPSE_EXPECT(seen[i] == 1, "work item " + std::to_string(i / heads) + ", kv head " +
                                     std::to_string(i % heads) + " launched " +
                                     std::to_string(seen[i]) + " times");
  }
  return costs;
}

// Finish time of the last block over the lower bound max(total / slots, longest block).
double MakespanOverBound(const std::vector<int64_t>& costs, int32_t slots) {
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<int64_t>> free_at;
  for (int32_t i = 0; i < slots; ++i) free_at.push(0);
  int64_t total = 0, longest = 0, end = 0;
  for (const int64_t c : costs) {
    const int64_t start = free_at.top();
    free_at.pop();
    free_at.push(start + c);
    end = std::max(end, start + c);
    total += c;
    longest = std::max(longest, c);
  }
  const double bound = std::max(static_cast<double>(total) / slots, static_cast<double>(longest));
  return static_cast<double>(end) / bound;
}

PrefillPlan PlanFor(const LaunchShape& shape, int64_t l2_cache_bytes = 0) {
  std::vector<int32_t> qo_indptr = {0}, kv_indptr = {0}, last_page_len;
  constexpr int32_t kPage = 16;
  for (const SeqShape& s : shape.seqs) {
    qo_indptr.push_back(qo_indptr.back() + s.qo_len);
    kv_indptr.push_back(kv_indptr.back() + (s.kv_len + kPage - 1) / kPage);
    last_page_len.push_back(s.kv_len - (s.kv_len - 1) / kPage * kPage);
  }
  PrefillPlanInput in;
  in.qo_indptr = qo_indptr.data();
  in.kv_indptr = kv_indptr.data();
  in.kv_last_page_len = last_page_len.data();
  in.num_seqs = static_cast<int32_t>(shape.seqs.size());
  in.num_qo_heads = shape.num_kv_heads * shape.group;
  in.num_kv_heads = shape.num_kv_heads;
  in.page_size = kPage;
  in.num_sms = 132;
  in.kernel = shape.kernel;
  in.kv_bytes_per_key = 2 * 128 * 2;  // head_dim 128, bf16
  in.l2_cache_bytes = l2_cache_bytes;
  PrefillPlan plan;
  GLIMPSE_EXPECT(PlanPrefillAttention(in, &plan) == cudaSuccess, "PlanPrefillAttention");
  return plan;
}

// Longest blocks first, every kv head's in the first wave: the modelled makespan stays within
// 5 % of its lower bound where launching kv head by kv head with each head's blocks longest
// first (the order before) ends 23 % (a 4k prompt, 128-row blocks two per SM), 19 % (2k,
// 128-key tiles, one per SM) and 17 % (a long prompt's chunk behind 40 short prompts) past it.
GLIMPSE_CUDA_TEST(PrefillPlanStartsTheLongestBlocksFirst) {
  struct Case {
    const char* what;
    LaunchShape shape;
    int32_t slots;
  };
  std::vector<SeqShape> mixed(40, SeqShape{256, 256});
  mixed.push_back({1024, 8192});  // a long prompt's chunk over its first 7k keys, batched last
  const Case cases[] = {
      {"4k prompt, 128-row blocks, two per SM",
       {{{4096, 4096}}, 4, 8, PrefillKernel::kMmaSyncWide},
       264},
      {"2k prompt, 128-key tiles, one block per SM",
       {{{2048, 2048}}, 4, 8, PrefillKernel::kWgmmaPipelined128},
       132},
      {"40 short prompts, then a long one's chunk", {mixed, 4, 8, PrefillKernel::kMmaSync}, 264},
  };
  for (const Case& c : cases) {
    const PrefillPlan plan = PlanFor(c.shape);
    GLIMPSE_EXPECT(plan.num_chunks == 1 && plan.heads_per_pass == c.shape.num_kv_heads,
                   std::string(c.what) + ": no split, and with no L2 given one pass of all heads");
    const std::vector<int64_t> costs = LaunchOrderCosts(c.shape, plan);
    GLIMPSE_EXPECT(std::is_sorted(costs.rbegin(), costs.rend()),
                   std::string(c.what) + ": blocks launch longest first");
    const double ratio = MakespanOverBound(costs, c.slots);
    GLIMPSE_EXPECT(ratio <= 1.05, std::string(c.what) + ": modelled makespan " +
                                      std::to_string(ratio) + " x its lower bound");
  }
}

// Passes of as many kv heads as keep their KV within half the L2: a 16k prompt's 8 MiB of
// bf16 K and V per head (head_dim 128) in 50 MiB of L2 makes passes of 3, 3 and 2 heads.
GLIMPSE_CUDA_TEST(PrefillPlanKeepsAPassesKvWithinL2) {
  const LaunchShape shape{{{16384, 16384}}, 4, 8, PrefillKernel::kWgmmaPipelined};
  const PrefillPlan plan = PlanFor(shape, int64_t{50} << 20);
  GLIMPSE_EXPECT(plan.heads_per_pass == 3, "heads per pass " + std::to_string(plan.heads_per_pass));
  const std::vector<int64_t> costs = LaunchOrderCosts(shape, plan);
  const size_t pass_blocks = static_cast<size_t>(plan.num_work_items()) * 3;
  for (size_t begin = 0; begin < costs.size(); begin += pass_blocks) {
    const size_t end = std::min(costs.size(), begin + pass_blocks);
    GLIMPSE_EXPECT(std::is_sorted(costs.rbegin() + (costs.size() - end),
                                  costs.rbegin() + (costs.size() - begin)),
                   "the pass from block " + std::to_string(begin) + " launches longest first");
  }
  const double ratio = MakespanOverBound(costs, 264);
  GLIMPSE_EXPECT(ratio <= 1.05, "modelled makespan " + std::to_string(ratio) + " x its bound");
  const PrefillPlan small_l2 = PlanFor(shape, int64_t{4} << 20);
  GLIMPSE_EXPECT(small_l2.heads_per_pass == 1, "an L2 smaller than one head's KV: one per pass");
}

// The plan input of the refusal tests below: one sequence, GQA 8/2, 16-key pages, the host
// arrays those given (which must outlive it).
PrefillPlanInput OneSequencePlanInput(const std::vector<int32_t>& qo_indptr,
                                      const std::vector<int32_t>& kv_indptr,
                                      const std::vector<int32_t>& last_page_len) {
  PrefillPlanInput in;
  in.qo_indptr = qo_indptr.data();
  in.kv_indptr = kv_indptr.data();
  in.kv_last_page_len = last_page_len.data();
  in.num_seqs = 1;
  in.num_qo_heads = 8;
  in.num_kv_heads = 2;
  in.page_size = 16;
  return in;
}

// A split launch merging in the kernel indexes a counter per packed row and kv head: fewer
// than PrefillMergeCounters of them is refused, not overrun.
GLIMPSE_CUDA_TEST(PrefillRefusesTooFewMergeCounters) {
  const std::vector<int32_t> qo_indptr = {0, 4};
  const std::vector<int32_t> kv_indptr = {0, 100};
  const std::vector<int32_t> last_page_len = {16};
  const PrefillPlanInput in = OneSequencePlanInput(qo_indptr, kv_indptr, last_page_len);
  PrefillPlan plan;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &plan));
  GLIMPSE_EXPECT(plan.num_chunks > 1, "4 query tokens over 1600 keys split on 132 SMs");
  PrefillAttentionParams p;
  p.kv.num_kv_heads = 2;
  p.kv.head_dim = 64;
  p.kv.page_size = 16;
  p.num_qo_heads = 8;
  const size_t ws_bytes = PrefillWorkspaceBytes(plan, 8, 64);
  DeviceArray<float> workspace;
  GLIMPSE_ASSERT_CUDA(workspace.Allocate(ws_bytes / sizeof(float)));
  DeviceArray<int32_t> scratch;
  GLIMPSE_ASSERT_CUDA(scratch.Allocate(64));
  PointArraysAt(scratch.get(), &p);
  ApplyPrefillPlan(plan, &p);
  p.workspace = workspace.get();
  p.workspace_bytes = ws_bytes;
  p.merge_counters = scratch.get();
  p.num_merge_counters = PrefillMergeCounters(4, 8) - 1;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "a split launch with one merge counter too few must be refused");
  (void)cudaGetLastError();
}

// A plan's tiles are its kernel's: launching another kernel with it is refused, not run over
// the wrong rows.
GLIMPSE_CUDA_TEST(PrefillRefusesAPlanMadeForAnotherKernel) {
  const std::vector<int32_t> qo_indptr = {0, 100};
  const std::vector<int32_t> kv_indptr = {0, 7};
  const std::vector<int32_t> last_page_len = {4};
  PrefillPlanInput in = OneSequencePlanInput(qo_indptr, kv_indptr, last_page_len);
  PrefillPlan narrow, wide;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &narrow));
  in.kernel = PrefillKernel::kMmaSyncWide;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &wide));
  // 400 packed rows: 7 tiles of 64, 4 of 128.
  GLIMPSE_EXPECT(narrow.num_work_items() == 7 && wide.num_work_items() == 4,
                 "400 rows make 7 blocks of 64 and 4 of 128");
  PrefillAttentionParams p;
  p.kv.num_kv_heads = 2;
  p.kv.head_dim = 64;
  p.kv.page_size = 16;
  p.num_qo_heads = 8;
  DeviceArray<int32_t> scratch;
  GLIMPSE_ASSERT_CUDA(scratch.Allocate(64));
  PointArraysAt(scratch.get(), &p);
  ApplyPrefillPlan(narrow, &p);
  p.kernel = PrefillKernel::kMmaSyncWide;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "a 64-row plan launched on the 128-row kernel must be refused");
  ApplyPrefillPlan(wide, &p);
  p.kernel = PrefillKernel::kMmaSync;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "a 128-row plan launched on the 64-row kernel must be refused");
  // The 128-key-tile kernel's chunks are whole 128-key tiles (its TMA boxes start at
  // multiples of 128): a plan of 64-key tiles with a chunk of 192 keys is refused. (100 rows
  // over 164 keys: one chunk of 192 keys for 64-key tiles, of 256 for 128-key tiles.)
  const std::vector<int32_t> long_kv_indptr = {0, 11};
  in.kv_indptr = long_kv_indptr.data();
  PrefillPlan pipelined, pipelined_128;
  in.kernel = PrefillKernel::kWgmmaPipelined;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &pipelined));
  in.kernel = PrefillKernel::kWgmmaPipelined128;
  GLIMPSE_ASSERT_CUDA(PlanPrefillAttention(in, &pipelined_128));
  GLIMPSE_EXPECT(pipelined.chunk_keys % 64 == 0 && pipelined.chunk_keys % 128 != 0,
                 "the 64-key-tile plan's chunks: a multiple of 64, not of 128 (" +
                     std::to_string(pipelined.chunk_keys) + ")");
  GLIMPSE_EXPECT(pipelined_128.chunk_keys % 128 == 0,
                 "the 128-key-tile plan's chunks: whole tiles (" +
                     std::to_string(pipelined_128.chunk_keys) + ")");
  ApplyPrefillPlan(pipelined, &p);
  p.kernel = PrefillKernel::kWgmmaPipelined128;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "a 64-key-tile plan launched on the 128-key-tile kernel must be refused");
  ApplyPrefillPlan(wide, &p);
  // The fp32 kernel runs 64-row blocks: it takes kMmaSync's plan and no other kernel.
  p.dtype = DType::kF32;
  p.kernel = PrefillKernel::kMmaSyncWide;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "an fp32 launch asking for the 128-row kernel must be refused");
  (void)cudaGetLastError();
}

// Which kernel runs where: wgmma only on sm_90 at head dims 64/128; the 128-row kernel where
// its shared memory fits (A100: 163 KB, H100/H200: 227 KB, sm_86/sm_89: 99 KB per block).
GLIMPSE_CUDA_TEST(PrefillKernelForFallsBackWhereTheKernelCannotRun) {
  const PrefillKernel mma = PrefillKernel::kMmaSync;
  const PrefillKernel wide = PrefillKernel::kMmaSyncWide;
  const PrefillKernel wgmma = PrefillKernel::kWgmma;
  const PrefillKernel pipelined = PrefillKernel::kWgmmaPipelined;
  const PrefillKernel pipelined_128 = PrefillKernel::kWgmmaPipelined128;
  const size_t h200 = 232448, a100 = 166912, rtx4090 = 101376;
  // Bytes: Q tile rows x (head_dim + 8) x 2 + 4 K/V tiles of 64 rows (+ 1 KiB alignment for
  // wgmma's 128-byte-swizzled tiles of 64 x head_dim).
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(mma, 128) == 64 * 136 * 2 + 4 * 64 * 136 * 2,
                 "64-row kernel, head_dim 128: 87,040 bytes");
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(wide, 128) == 128 * 136 * 2 + 4 * 64 * 136 * 2,
                 "128-row kernel, head_dim 128: 104,448 bytes");
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(wgmma, 128) == 64 * 136 * 2 + 4 * 64 * 128 * 2 + 1024,
                 "wgmma, head_dim 128: 83,968 bytes");
  // 1 KiB alignment + 3 stages of a K and a V tile (64 x head_dim, swizzled) + 6 mbarriers.
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(pipelined, 128) == 1024 + 3 * 2 * 64 * 128 * 2 + 48,
                 "pipelined wgmma, head_dim 128: 99,376 bytes");
  // 1 KiB alignment + 3 stages of a K and a V tile (128 x head_dim) + two 64-row Q tiles +
  // 6 mbarriers: 2,000 bytes short of an H200's block at head_dim 128.
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(pipelined_128, 128) ==
                     1024 + 3 * 2 * 128 * 128 * 2 + 2 * 64 * 128 * 2 + 48,
                 "pipelined wgmma with 128-key tiles, head_dim 128: 230,448 bytes");
  GLIMPSE_EXPECT(PrefillSharedMemoryBytes(pipelined_128, 64) ==
                     1024 + 3 * 2 * 128 * 64 * 2 + 2 * 64 * 64 * 2 + 48,
                 "pipelined wgmma with 128-key tiles, head_dim 64: 115,760 bytes");
  // Where each kernel runs, and what runs instead. A fallback says why (the backend logs it
  // once), naming the limit: the device, the head_dim, the page size or the shared memory; a
  // kernel that runs leaves the reason alone.
  struct Case {
    PrefillKernel requested;
    int32_t head_dim, page_size;
    int major;
    size_t smem;
    PrefillKernel runs;
    const char* what;
    const char* says = nullptr;  // a piece of the fallback's reason
  };
  const Case cases[] = {
      {pipelined_128, 128, 16, 9, h200, pipelined_128, "128-key tiles run on an H200, page 16"},
      {pipelined_128, 128, 256, 9, h200, pipelined_128, "page size 256: one 128-key box a tile"},
      {pipelined_128, 64, 24, 9, h200, pipelined_128, "page size 24: boxes of 8 keys"},
      {pipelined_128, 128, 17, 9, h200, wgmma, "page size 17: no TMA box tiles it",
       "pages of 17 tokens"},
      {pipelined_128, 128, 16, 9, 230447, pipelined, "a byte short: 64-key tiles (99 KB)",
       "230448 bytes of shared memory"},
      {pipelined_128, 128, 16, 9, 99375, mma, "a byte short of 64-key tiles' too",
       "with 64-key tiles, a block needs 99376 bytes"},
      {pipelined_128, 64, 16, 8, a100, mma, "no TMA on sm_80"},
      {pipelined_128, 32, 16, 9, h200, mma, "no wgmma kernel at head_dim 32",
       "head_dim 64 and 128"},
      {wgmma, 128, 16, 9, h200, wgmma, "wgmma runs on an H200"},
      {wgmma, 32, 16, 9, h200, mma, "no wgmma kernel at head_dim 32"},
      {wgmma, 128, 16, 8, a100, mma, "no wgmma on sm_80", "compute capability 9.0"},
      {pipelined, 128, 16, 9, h200, pipelined, "the pipelined kernel runs on an H200, page 16"},
      {pipelined, 64, 24, 9, h200, pipelined, "page size 24: boxes of 8 keys"},
      {pipelined, 128, 17, 9, h200, wgmma, "page size 17: no TMA box tiles it"},
      {pipelined, 128, 4, 9, h200, wgmma, "page size 4: boxes under the 8-row swizzle atom",
       "pages of 4 tokens"},
      {pipelined, 128, 16, 8, a100, mma, "no TMA on sm_80"},
      {wide, 128, 16, 8, a100, wide, "128 rows fit an A100's block"},
      {wide, 128, 16, 8, rtx4090, mma, "128 rows at head_dim 128 do not fit 99 KB",
       "104448 bytes of shared memory"},
      {wide, 64, 16, 8, rtx4090, wide, "at head_dim 64 they do"},
      {mma, 128, 16, 8, rtx4090, mma, "the default runs everywhere"},
  };
  for (const Case& c : cases) {
    std::string why = "unchanged";
    const PrefillKernel ran =
        PrefillKernelFor(c.requested, c.head_dim, c.page_size, c.major, c.smem, &why);
    GLIMPSE_EXPECT(ran == c.runs, c.what);
    if (c.says != nullptr) {
      GLIMPSE_EXPECT(
          why.find(c.says) != std::string::npos,
          std::string(c.what) + ": the fallback says why ('" + c.says + "'): got '" + why + "'");
    }
    if (c.runs == c.requested) {
      GLIMPSE_EXPECT(why == "unchanged", std::string(c.what) +
                                             ": a kernel that runs gives no "
                                             "reason, got '" +
                                             why + "'");
    }
  }
}

// True when the device runs the wgmma kernel (compute capability 9.0); says so otherwise.
bool DeviceHasWgmma() {
  int device = 0;
  cudaDeviceProp prop;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess || prop.major != 9) {
    std::printf("  skipped: the wgmma kernel needs a compute capability 9.0 device\n");
    return false;
  }
  return true;
}

GLIMPSE_CUDA_TEST(PrefillWgmmaMatchesReference) {
  if (!DeviceHasWgmma()) return;
  RunVariantCases(PrefillKernel::kWgmma, {64, 128});
}

// The pipelined kernel: the variant cases (page sizes 1 and 17 run kWgmma, as the backend
// would), then the page sizes its TMA boxes tile (8 to 64 keys per box, page sizes that are
// not powers of two), sequences of many tiles around the 3-stage ring, and last tiles that
// end mid-tile, which the producer copies with cp.async.
GLIMPSE_CUDA_TEST(PrefillWgmmaPipelinedMatchesReference) {
  if (!DeviceHasWgmma()) return;
  const PrefillKernel pipelined = PrefillKernel::kWgmmaPipelined;
  RunVariantCases(pipelined, {64, 128});
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  const AttentionMaskMode tree = AttentionMaskMode::kTree;
  for (const int32_t page_size : {8, 24, 32, 48, 64, 128}) {
    RunCase(causal, 128, 4, 2, page_size, {{150, 150}, {40, 700}, {1, 65}}, 1, pipelined);
    RunCase(tree, 64, 2, 2, page_size, {{20, 20 + 250}, {64, 64 + 64}}, 1, pipelined);
  }
  RunCase(causal, 64, 1, 1, 16, {{3000, 3000}}, 1, pipelined);  // 47 tiles per block at most
  RunCase(causal, 128, 8, 1, 16, {{7, 4000}}, 132, pipelined);  // split KV, few rows
}

// The pipelined kernel with 128-key tiles and Q in shared memory: the same cases as the
// 64-key one, at page sizes whose boxes are 8 to 128 keys (256: one box per tile), with last
// tiles ending mid-tile on either side of 64 keys (150: 22 keys into the second tile; 700:
// 60 keys into the sixth), a block whose second consumer has no rows (65 packed rows) and one
// whose 128 rows end on a page boundary, and a split whose chunks are whole 128-key tiles.
GLIMPSE_CUDA_TEST(PrefillWgmmaPipelined128MatchesReference) {
  if (!DeviceHasWgmma()) return;
  const PrefillKernel pipelined_128 = PrefillKernel::kWgmmaPipelined128;
  RunVariantCases(pipelined_128, {64, 128});
  const AttentionMaskMode causal = AttentionMaskMode::kCausal;
  const AttentionMaskMode tree = AttentionMaskMode::kTree;
  for (const int32_t page_size : {8, 24, 48, 128, 256}) {
    RunCase(causal, 128, 4, 2, page_size, {{150, 150}, {40, 700}, {1, 65}}, 1, pipelined_128);
    RunCase(tree, 64, 2, 2, page_size, {{20, 20 + 250}, {64, 64 + 64}}, 1, pipelined_128);
  }
  RunCase(causal, 64, 1, 1, 16, {{65, 65}, {128, 256}}, 1, pipelined_128);
  RunCase(causal, 64, 1, 1, 16, {{1500, 1500}}, 1, pipelined_128);  // 12 tiles, 4 ring rounds
  RunCase(causal, 128, 8, 1, 16, {{7, 4000}}, 132, pipelined_128);  // split KV, few rows
}

GLIMPSE_CUDA_TEST(PrefillWgmmaRefusesHeadDim32) {
  if (!DeviceHasWgmma()) return;
  PrefillAttentionParams p;
  p.kv.num_kv_heads = 1;
  p.kv.head_dim = 32;
  p.kv.page_size = 16;
  p.num_qo_heads = 1;
  p.chunk_keys = 64;
  p.kernel = PrefillKernel::kWgmma;
  DeviceArray<int32_t> scratch;
  GLIMPSE_ASSERT_CUDA(scratch.Allocate(64));
  PointArraysAt(scratch.get(), &p);
  p.num_work_items = 1;
  GLIMPSE_EXPECT(LaunchPrefillAttention(p, nullptr) == cudaErrorInvalidValue,
                 "kWgmma with head_dim 32 must be refused");
  (void)cudaGetLastError();
}

}  // namespace
}  // namespace glimpse::kernels::cuda
