// Paged decode attention against a float64 reference: head dims 32/64/128, group sizes
// 1,2,3,4,7,8, page sizes 1/16/17 (partial last pages), an empty sequence, with and without
// the split-KV path, bf16 and fp32, and a bf16 cache under fp32 q and o; checks o and lse.
// Both kernels (DecodeKernel): the tensor-core one over bf16 caches, where the reference sees
// q rounded to bf16 as the kernel documents, and o is held to bf16 bounds (the probabilities
// are rounded to bf16 before P·V).
#include "kernels/cuda/paged_decode_attention.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/testing/paged_kv_fixture.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda {
namespace {

using testing::DeviceActivations;
using testing::DeviceArray;

const testing::Tolerance kLseTolerance{1e-4, 1e-4, 1e-5};
// The tensor-core kernel's lse: fp32 scores of bf16 operands, summed in a different order.
const testing::Tolerance kMmaLseTolerance{1e-3, 1e-4, 1e-5};

// Downloads o and lse and compares them with the float64 reference.
void CheckOutputs(const std::string& name, const DeviceActivations& d_o,
                  const DeviceArray<float>& d_lse, DType qo_dtype, const std::vector<double>& o_ref,
                  const std::vector<double>& lse_ref, bool mma);

// dtype: the cache's; q and o are fp32 instead when fp32_q_and_o (dtype kBF16).
// fused_merge: a split plan's chunks merge in the kernel's last block per (sequence, kv head)
// (PagedDecodeParams::merge_counters); launched twice over the same counters, which must be
// all 0 again after each launch, the second time into a freshly poisoned o. A sequence of one
// chunk then writes o directly: its partial-state slots in the workspace (poisoned, NaN) must
// be left untouched. With fp32 o and no merge launch, o's bf16 copy (PagedDecodeParams::o_bf16)
// is asked for too and must be o rounded to bf16, bitwise.
void RunCase(DType dtype, int32_t head_dim, int32_t group, int32_t num_kv_heads, int32_t page_size,
             const std::vector<int32_t>& kv_lens, int32_t num_sms, bool fp32_q_and_o = false,
             DecodeKernel kernel = DecodeKernel::kCudaCores, bool fused_merge = false) {
  const bool mma = kernel == DecodeKernel::kMmaSync;
  const DType qo_dtype = fp32_q_and_o ? DType::kF32 : dtype;
  const int32_t batch = static_cast<int32_t>(kv_lens.size());
  const int32_t num_qo_heads = num_kv_heads * group;
  testing::HostPagedKv kv =
      testing::MakeRandomPagedKv(kv_lens, num_kv_heads, page_size, head_dim, dtype);
  const PagedDecodePlan plan =
      PlanPagedDecode(kv.indptr.data(), batch, num_kv_heads, page_size, num_sms);
  std::string name = std::string(mma ? "decode (mma) " : "decode ") + testing::DTypeName(dtype) +
                     (fp32_q_and_o ? " (fp32 q, o)" : "") + " d=" + std::to_string(head_dim) +
                     " group=" + std::to_string(group) + " hkv=" + std::to_string(num_kv_heads) +
                     " page=" + std::to_string(page_size) +
                     " chunks=" + std::to_string(plan.num_chunks) +
                     (fused_merge ? " fused merge" : "") + " lens=";
  for (const int32_t len : kv_lens) name += std::to_string(len) + ",";
  const size_t q_n = static_cast<size_t>(batch) * num_qo_heads * head_dim;
  const std::vector<float> q = testing::RandomActivations(q_n, qo_dtype);
  const std::vector<float> q_seen = mma ? testing::RoundBf16(q) : q;  // what the kernel uses
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  std::vector<double> o_ref(q_n);
  std::vector<double> lse_ref(static_cast<size_t>(batch) * num_qo_heads);
  for (int32_t b = 0; b < batch; ++b) {
    for (int32_t h = 0; h < num_qo_heads; ++h) {
      const size_t row = static_cast<size_t>(b) * num_qo_heads + h;
      testing::ReferenceAttendOne(
          kv, b, h / group, &q_seen[row * head_dim], scale, [](int32_t) { return true; },
          &o_ref[row * head_dim], &lse_ref[row]);
    }
  }
  testing::DevicePagedKv d_kv;
  GLIMPSE_ASSERT_CUDA(d_kv.Upload(kv, dtype));
  DeviceActivations d_q, d_o;
  DeviceArray<float> d_lse, d_ws;
  GLIMPSE_ASSERT_CUDA(d_q.Upload(q, qo_dtype));
  GLIMPSE_ASSERT_CUDA(d_o.AllocatePoisoned(q_n, qo_dtype));
  GLIMPSE_ASSERT_CUDA(d_lse.Allocate(lse_ref.size()));
  const size_t ws_bytes = PagedDecodeWorkspaceBytes(plan, batch, num_qo_heads, head_dim);
  const size_t ws_floats = ws_bytes / sizeof(float);
  GLIMPSE_ASSERT_CUDA(d_ws.Allocate(ws_floats));  // poisoned: NaN
  PagedDecodeParams p;
  p.kernel = kernel;
  p.dtype = dtype;
  p.fp32_q_and_o = fp32_q_and_o;
  p.q = d_q.ptr;
  p.o = d_o.ptr;
  p.lse = d_lse.get();
  p.kv = d_kv.view;
  p.batch = batch;
  p.num_qo_heads = num_qo_heads;
  p.sm_scale = static_cast<float>(scale);
  p.plan = plan;
  p.workspace = d_ws.get();
  p.workspace_bytes = ws_bytes;
  const size_t num_counters = static_cast<size_t>(batch) * num_kv_heads;
  DeviceArray<int32_t> d_counters;
  GLIMPSE_ASSERT_CUDA(d_counters.Upload(std::vector<int32_t>(num_counters, 0)));
  p.merge_counters = fused_merge ? d_counters.get() : nullptr;
  const bool bf16_copy = qo_dtype == DType::kF32 && (plan.num_chunks == 1 || fused_merge);
  DeviceArray<uint16_t> d_o_bf16;
  for (int launch = 0; launch < (fused_merge ? 2 : 1); ++launch) {
    if (launch > 0) {
      GLIMPSE_ASSERT_CUDA(d_o.AllocatePoisoned(q_n, qo_dtype));
      p.o = d_o.ptr;
    }
    if (bf16_copy) {
      GLIMPSE_ASSERT_CUDA(d_o_bf16.Allocate(q_n));  // poisoned
      p.o_bf16 = d_o_bf16.get();
    }
    GLIMPSE_ASSERT_CUDA(LaunchPagedDecode(p, nullptr));
    GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
    if (bf16_copy) {
      std::vector<float> o;
      std::vector<uint16_t> copy;
      GLIMPSE_ASSERT_CUDA(d_o.Download(&o, qo_dtype));
      GLIMPSE_ASSERT_CUDA(d_o_bf16.Download(&copy));
      GLIMPSE_EXPECT(copy == testing::ToBf16(o), name + ": o's bf16 copy is not o rounded");
    }
    if (fused_merge) {
      std::vector<int32_t> counters;
      GLIMPSE_ASSERT_CUDA(d_counters.Download(&counters));
      const int64_t left = testing::NonZeroCounters(counters);
      GLIMPSE_EXPECT(left == 0, name + ": " + std::to_string(left) +
                                    " merge counters not back to 0 after launch " +
                                    std::to_string(launch));
      std::vector<float> ws;
      GLIMPSE_ASSERT_CUDA(d_ws.Download(&ws));
      std::vector<int32_t> qo_indptr(batch + 1);  // one query row per sequence
      for (int32_t b = 0; b <= batch; ++b) qo_indptr[b] = b;
      const int64_t written = testing::PartialStatesOfOneChunkSequences(
          ws, plan.num_chunks, plan.chunk_keys, qo_indptr, kv_lens, num_qo_heads, head_dim);
      GLIMPSE_EXPECT(written == 0, name + ": " + std::to_string(written) +
                                       " partial states written for one-chunk sequences");
    }
    CheckOutputs(name + (launch > 0 ? " (again)" : ""), d_o, d_lse, qo_dtype, o_ref, lse_ref, mma);
  }
}

void CheckOutputs(const std::string& name, const DeviceActivations& d_o,
                  const DeviceArray<float>& d_lse, DType qo_dtype, const std::vector<double>& o_ref,
                  const std::vector<double>& lse_ref, bool mma) {
  std::vector<float> o, lse;
  GLIMPSE_ASSERT_CUDA(d_o.Download(&o, qo_dtype));
  GLIMPSE_ASSERT_CUDA(d_lse.Download(&lse));
  // The reference reads the same (bf16-exact) cache, so fp32 outputs meet fp32 tolerances.
  GLIMPSE_EXPECT_CLOSE(name + " o", o, o_ref,
                       mma ? testing::Tolerance::Bf16() : testing::ToleranceFor(qo_dtype));
  // -inf lse (empty sequence) must match exactly; Compare treats inf - inf as NaN, so check
  // those rows separately.
  std::vector<float> lse_got;
  std::vector<double> lse_want;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      GLIMPSE_EXPECT(std::isinf(lse[i]) && lse[i] < 0, name + ": lse of an empty sequence");
    } else {
      lse_got.push_back(lse[i]);
      lse_want.push_back(lse_ref[i]);
    }
  }
  if (!lse_want.empty()) {
    GLIMPSE_EXPECT_CLOSE(name + " lse", lse_got, lse_want, mma ? kMmaLseTolerance : kLseTolerance);
  }
}

GLIMPSE_CUDA_TEST(PagedDecodeMatchesReference) {
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    for (const int32_t head_dim : {32, 64, 128}) {
      for (const int32_t group : {1, 2, 4, 8}) {
        RunCase(dtype, head_dim, group, 2, 16, {1, 37, 300, 16}, 132);
      }
    }
    // Odd group sizes, page sizes 1 and 17, an empty sequence.
    RunCase(dtype, 128, 3, 2, 17, {0, 170, 18, 1}, 132);
    RunCase(dtype, 64, 7, 2, 1, {65, 3, 129}, 132);
    RunCase(dtype, 32, 5, 3, 17, {33, 0}, 132);
  }
}

GLIMPSE_CUDA_TEST(PagedDecodeSplitKvMatchesReference) {
  for (const DType dtype : {DType::kBF16, DType::kF32}) {
    for (const bool fused : {false, true}) {
      // Batch 1 with a long context: split into many chunks, merged.
      RunCase(dtype, 128, 4, 8, 16, {5000}, 132, false, DecodeKernel::kCudaCores, fused);
      // Skewed lengths: some sequences have one chunk, others many; page 17, partial pages.
      RunCase(dtype, 64, 8, 1, 17, {3001, 20, 1200, 0}, 132, false, DecodeKernel::kCudaCores,
              fused);
      // Same shapes forced onto the single-chunk path (many SMs' worth of blocks claimed).
      RunCase(dtype, 128, 4, 8, 16, {5000}, 1, false, DecodeKernel::kCudaCores, fused);
    }
  }
  // The CUDA backend's case: fp32 q and o over a bf16 cache, the merge fused.
  RunCase(DType::kBF16, 128, 4, 8, 16, {5000, 700}, 132, true, DecodeKernel::kCudaCores, true);
}

// The CUDA backend's bf16 KV option: fp32 activations in and out, bf16 cache; with and
// without the split.
GLIMPSE_CUDA_TEST(PagedDecodeFp32ActivationsOverBf16Cache) {
  for (const int32_t head_dim : {32, 64, 128}) {
    for (const int32_t group : {1, 2, 3, 8}) {
      RunCase(DType::kBF16, head_dim, group, 2, 16, {1, 37, 300, 16}, 132, true);
    }
  }
  RunCase(DType::kBF16, 128, 4, 8, 16, {5000}, 132, true);
  RunCase(DType::kBF16, 64, 8, 1, 17, {3001, 20, 1200, 0}, 132, true);
}

// The tensor-core kernel (bf16 cache) over the same shapes, with bf16 and with fp32 q and o,
// plus page sizes whose divider is not a power of two, sequences that pass many times through
// each warp's ring, and warps left without a tile.
GLIMPSE_CUDA_TEST(PagedDecodeMmaMatchesReference) {
  const DecodeKernel mma = DecodeKernel::kMmaSync;
  for (const bool fp32_qo : {false, true}) {
    for (const int32_t head_dim : {32, 64, 128}) {
      for (const int32_t group : {1, 2, 4, 8}) {
        RunCase(DType::kBF16, head_dim, group, 2, 16, {1, 37, 300, 16}, 132, fp32_qo, mma);
      }
    }
    RunCase(DType::kBF16, 128, 3, 2, 17, {0, 170, 18, 1}, 132, fp32_qo, mma);
    RunCase(DType::kBF16, 64, 7, 2, 1, {65, 3, 129}, 132, fp32_qo, mma);
    RunCase(DType::kBF16, 32, 5, 3, 17, {33, 0}, 132, fp32_qo, mma);
    RunCase(DType::kBF16, 128, 6, 1, 3, {700, 50}, 132, fp32_qo, mma);
    RunCase(DType::kBF16, 64, 4, 2, 24, {1000, 64, 65}, 1, fp32_qo, mma);
    RunCase(DType::kBF16, 128, 8, 1, 100, {901}, 1, fp32_qo, mma);
  }
}

GLIMPSE_CUDA_TEST(PagedDecodeMmaSplitKvMatchesReference) {
  const DecodeKernel mma = DecodeKernel::kMmaSync;
  for (const bool fp32_qo : {false, true}) {
    for (const bool fused : {false, true}) {
      RunCase(DType::kBF16, 128, 4, 8, 16, {5000}, 132, fp32_qo, mma, fused);
      RunCase(DType::kBF16, 64, 8, 1, 17, {3001, 20, 1200, 0}, 132, fp32_qo, mma, fused);
      RunCase(DType::kBF16, 128, 4, 8, 16, {5000}, 1, fp32_qo, mma, fused);
    }
  }
}

// An fp32 cache has no tensor-core path: refused, nothing launched.
GLIMPSE_CUDA_TEST(PagedDecodeMmaRefusesFp32Cache) {
  testing::HostPagedKv kv = testing::MakeRandomPagedKv({40}, 1, 16, 64, DType::kF32);
  testing::DevicePagedKv d_kv;
  GLIMPSE_ASSERT_CUDA(d_kv.Upload(kv, DType::kF32));
  DeviceArray<float> d_q, d_o;
  GLIMPSE_ASSERT_CUDA(d_q.Allocate(4 * 64));
  GLIMPSE_ASSERT_CUDA(d_o.Allocate(4 * 64));
  PagedDecodeParams p;
  p.kernel = DecodeKernel::kMmaSync;
  p.dtype = DType::kF32;
  p.q = d_q.get();
  p.o = d_o.get();
  p.kv = d_kv.view;
  p.batch = 1;
  p.num_qo_heads = 4;
  p.plan = PlanPagedDecode(kv.indptr.data(), 1, 1, 16, 132);
  GLIMPSE_EXPECT(LaunchPagedDecode(p, nullptr) == cudaErrorInvalidValue,
                 "kMmaSync over an fp32 cache must be refused");
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
}

// o's bf16 copy is written where o is final: refused with a bf16 o (it would be o itself) and
// with a split merged by a second launch (which writes only o).
GLIMPSE_CUDA_TEST(PagedDecodeRefusesABf16CopyItCannotWrite) {
  testing::HostPagedKv kv = testing::MakeRandomPagedKv({5000}, 1, 16, 64, DType::kBF16);
  testing::DevicePagedKv d_kv;
  GLIMPSE_ASSERT_CUDA(d_kv.Upload(kv, DType::kBF16));
  DeviceArray<float> d_q, d_o, d_ws;
  DeviceArray<uint16_t> d_o_bf16;
  GLIMPSE_ASSERT_CUDA(d_q.Allocate(4 * 64));
  GLIMPSE_ASSERT_CUDA(d_o.Allocate(4 * 64));
  GLIMPSE_ASSERT_CUDA(d_o_bf16.Allocate(4 * 64));
  PagedDecodeParams p;
  p.dtype = DType::kBF16;
  p.fp32_q_and_o = true;
  p.q = d_q.get();
  p.o = d_o.get();
  p.o_bf16 = d_o_bf16.get();
  p.kv = d_kv.view;
  p.batch = 1;
  p.num_qo_heads = 4;
  p.plan = PlanPagedDecode(kv.indptr.data(), 1, 1, 16, 132);
  GLIMPSE_EXPECT(p.plan.num_chunks > 1, "5000 keys at batch 1 split on 132 SMs");
  const size_t ws_bytes = PagedDecodeWorkspaceBytes(p.plan, 1, 4, 64);
  GLIMPSE_ASSERT_CUDA(d_ws.Allocate(ws_bytes / sizeof(float)));
  p.workspace = d_ws.get();
  p.workspace_bytes = ws_bytes;
  GLIMPSE_EXPECT(LaunchPagedDecode(p, nullptr) == cudaErrorInvalidValue,
                 "a bf16 copy of o with the split merged by a second launch must be refused");
  p.fp32_q_and_o = false;
  p.q = d_o_bf16.get();
  p.o = d_o_bf16.get();
  p.plan = PlanPagedDecode(kv.indptr.data(), 1, 1, 16, 1);
  GLIMPSE_EXPECT(LaunchPagedDecode(p, nullptr) == cudaErrorInvalidValue,
                 "a bf16 copy of a bf16 o must be refused");
  GLIMPSE_ASSERT_CUDA(testing::SyncAndCheck());
}

}  // namespace
}  // namespace glimpse::kernels::cuda
