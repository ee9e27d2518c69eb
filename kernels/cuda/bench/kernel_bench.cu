// Kernel benchmarks for kernels/cuda (H200 targets: performance.md §5.1, issue #5). Prints a
// table and writes JSON:
//
//   kernel_bench [--smoke] [--kernels=all|base|experimental] [JSON_PATH]
//                                            (default JSON_PATH: kernel_bench.json)
//
// --kernels=base times everything but the kernels never yet run on a GPU (the wgmma attention
// kernels, the tensor-core decode kernel), --kernels=experimental only those (with the decode
// steps their tree rows are compared with): gpu_check.sh runs the two in
// separate processes, so that a first run of the wgmma kernels that faults or hangs cannot
// take the other figures with it.
//
// Measures the machine's own ceilings first — device-to-device copy bandwidth (cudaMemcpyAsync
// and a copy kernel, bytes read + written), cuBLAS bf16 GEMM TFLOP/s and cuBLAS fp32 GEMM
// TFLOP/s (fp32 compute, no TF32: the ceiling of the fp32 cache's CUDA-core attention) — and
// states every result as a fraction of them. Timing: CUDA events around each call, L2 flushed
// before each timed call (a 256 MiB write), warm-up first, median of repeats. Inputs are random
// (never zeros). Never fails on time; exits nonzero only when a CUDA call fails. "SKIPPED: no CUDA
// device" + exit 0 without a GPU.
//
// --smoke runs every benchmark once at toy sizes and fails unless every row has a finite
// positive time: a check that the benchmark itself works (CI runs it on the CPU emulation of
// CUDA, so a GPU session's minutes are not spent on a broken benchmark), not a measurement.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cuda/argmax_rows.h"
#include "kernels/cuda/paged_decode_attention.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/topk_rows.h"

namespace glimpse::kernels::cuda {
namespace {

#define BENCH_CHECK(expr)                                                                   \
  do {                                                                                      \
    const cudaError_t bench_err_ = (expr);                                                  \
    if (bench_err_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr,                  \
                   cudaGetErrorString(bench_err_));                                         \
      return false;                                                                         \
    }                                                                                       \
  } while (0)

#define BLAS_CHECK(expr)                                                                    \
  do {                                                                                      \
    const cublasStatus_t bench_st_ = (expr);                                                \
    if (bench_st_ != CUBLAS_STATUS_SUCCESS) {                                               \
      std::fprintf(stderr, "%s:%d: %s -> cublas status %d\n", __FILE__, __LINE__, #expr,    \
                   static_cast<int>(bench_st_));                                            \
      return false;                                                                         \
    }                                                                                       \
  } while (0)

// The sizes and repeats of one run: the real benchmark, or --smoke's toy version of it.
struct Scale {
  int warmup = 3;
  int repeats = 20;
  size_t flush_bytes = size_t{256} << 20;  // written before each timed call to flush L2
  size_t copy_bytes = size_t{2} << 30;     // D2D copy ceiling
  int gemm_m = 8192;                       // cuBLAS ceiling: m^3 bf16 GEMM
  int64_t pool_tokens = int64_t{128} * 32768;
  std::vector<int32_t> decode_batches = {1, 8, 32, 128};
  std::vector<int32_t> decode_contexts = {512, 2048, 8192, 32768};
  std::vector<int32_t> tree_batches = {1, 16, 64};
  std::vector<int32_t> tree_contexts = {1024, 8192};
  std::vector<int32_t> tree_q_lens = {1, 4, 8, 16, 64};
  std::vector<int32_t> prefill_lengths = {1024, 4096, 16384};
  // K5: one layer's q/k/v and gate/up projections (Llama-3.1-8B: dim 4096, GQA 32/8 at head
  // dim 128, FFN 14336) at these input rows (decode batch sizes).
  int proj_dim = 4096;
  int proj_kv = 1024;
  int proj_ffn = 14336;
  std::vector<int32_t> proj_rows = {1, 8, 64};
  // K6: a step's logits rows (Llama-3's vocabulary) reduced on the device or copied out, at
  // these rows (decode batch sizes), the top-k one keeping logits_top_k candidates a row.
  int64_t vocab = 128256;
  std::vector<int32_t> logits_rows = {1, 8, 64};
  int32_t logits_top_k = 64;

  static Scale Smoke() {
    Scale s;
    s.warmup = 1;
    s.repeats = 1;
    s.flush_bytes = size_t{1} << 20;
    s.copy_bytes = size_t{4} << 20;
    s.gemm_m = 128;
    s.pool_tokens = 4096;
    s.decode_batches = {1, 3};
    s.decode_contexts = {100, 700};
    s.tree_batches = {2};
    s.tree_contexts = {300};
    s.tree_q_lens = {1, 16, 64};
    s.prefill_lengths = {200};
    s.proj_dim = 256;
    s.proj_kv = 64;
    s.proj_ffn = 512;
    s.proj_rows = {1, 3};
    s.vocab = 1000;
    s.logits_rows = {1, 3};
    return s;
  }
};

// "2 GiB", "4 MiB": a byte count for row labels.
std::string Bytes(size_t bytes) {
  char text[32];
  if (bytes >= (size_t{1} << 30)) {
    std::snprintf(text, sizeof(text), "%zu GiB", bytes >> 30);
  } else {
    std::snprintf(text, sizeof(text), "%zu MiB", bytes >> 20);
  }
  return text;
}

// A uniform value in [-1, 1) (steps of 2^-23) hashed from element index i and the seed.
__device__ float HashedUniform(size_t i, uint64_t seed) {
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return static_cast<float>(h & 0xFFFFFF) / 8388608.0f - 1.0f;
}

__global__ void FillRandomBf16(__nv_bfloat16* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] = __float2bfloat16(HashedUniform(i, seed));
  }
}

// Uniform fp32 values in [-8, 8): logits-like rows without ties to speak of.
__global__ void FillRandomFloat(float* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] = 8.0f * HashedUniform(i, seed);
  }
}

__global__ void CopyKernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

struct Row {
  std::string kernel;
  std::string shape;
  double us = 0;
  double metric = 0;        // GB/s or TFLOP/s
  std::string metric_unit;
  double fraction = 0;      // of the measured ceiling
  std::string note;
};

struct Bench {
  Scale scale;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  void* flush = nullptr;
  int num_sms = 0;
  int64_t l2_cache_bytes = 0;  // the plans' launch order keeps a pass's KV within half of it
  bool wgmma = false;     // the device runs the wgmma attention kernel (compute capability 9.0)
  bool base_rows = true;  // --kernels: time the kernels run on GPUs before
  bool experimental_rows = true;  //   ... and those not yet (wgmma where the device has it)
  double bw_gbs = 0;              // measured D2D copy-kernel bandwidth (read + write)
  double gemm_tflops = 0;         // measured cuBLAS bf16 GEMM
  double sgemm_tflops = 0;        // measured cuBLAS fp32 GEMM (fp32 compute, no TF32)
  std::vector<Row> rows;

  // A row whose work is `bytes` moved in `us`: GB/s, and its fraction of the D2D bandwidth.
  void AddBandwidthRow(std::string kernel, std::string shape, double us, double bytes,
                       std::string note) {
    const double gbs = bytes / (us * 1e-6) / 1e9;
    rows.push_back(
        {std::move(kernel), std::move(shape), us, gbs, "GB/s", gbs / bw_gbs, std::move(note)});
  }

  // Median microseconds of `fn` (a callable returning cudaError_t), L2 flushed before each.
  template <typename Fn>
  bool Time(Fn fn, double* median_us, bool flush_l2 = true) {
    std::vector<float> times;
    for (int i = 0; i < scale.warmup + scale.repeats; ++i) {
      if (flush_l2) BENCH_CHECK(cudaMemsetAsync(flush, i & 0xFF, scale.flush_bytes, stream));
      BENCH_CHECK(cudaEventRecord(start, stream));
      BENCH_CHECK(fn());
      BENCH_CHECK(cudaEventRecord(stop, stream));
      BENCH_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      BENCH_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i >= scale.warmup) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    *median_us = 1000.0 * times[times.size() / 2];
    return true;
  }
};

// An m^3 GEMM of `type` (CUDA_R_16BF or CUDA_R_32F) with fp32 compute (no TF32): the tensor-
// core ceiling of the bf16 kernels, or the CUDA-core one of the fp32 kernels. Inputs are
// random bf16 values, read in pairs as fp32 for CUDA_R_32F (finite, within ±1).
bool TimeGemm(Bench& b, cublasHandle_t handle, cudaDataType_t type, const char* name,
              double* tflops) {
  const int m = b.scale.gemm_m;
  const size_t bytes = (type == CUDA_R_32F ? size_t{4} : size_t{2}) * m * m;
  void* a = nullptr;
  void* bm = nullptr;
  void* c = nullptr;
  BENCH_CHECK(cudaMalloc(&a, bytes));
  BENCH_CHECK(cudaMalloc(&bm, bytes));
  BENCH_CHECK(cudaMalloc(&c, bytes));
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(static_cast<__nv_bfloat16*>(a), bytes / 2, 2);
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(static_cast<__nv_bfloat16*>(bm), bytes / 2, 3);
  BENCH_CHECK(cudaGetLastError());
  const float alpha = 1.0f;
  const float beta = 0.0f;
  cublasStatus_t blas_status = CUBLAS_STATUS_SUCCESS;
  double us = 0;
  if (!b.Time(
          [&] {
            blas_status =
                cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, m, m, &alpha, a, type, m, bm,
                             type, m, &beta, c, type, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            return blas_status == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
          },
          &us, false)) {
    return false;
  }
  *tflops = 2.0 * m * m * static_cast<double>(m) / (us * 1e-6) / 1e12;
  b.rows.push_back({name, std::to_string(m) + "^3", us, *tflops, "TFLOP/s", 1.0,
                    type == CUDA_R_32F ? "fp32 ceiling (CUDA cores)" : "GEMM ceiling"});
  BENCH_CHECK(cudaFree(a));
  BENCH_CHECK(cudaFree(bm));
  BENCH_CHECK(cudaFree(c));
  return true;
}

bool MeasureCeilings(Bench& b) {
  const size_t bytes = b.scale.copy_bytes;
  void* src = nullptr;
  void* dst = nullptr;
  BENCH_CHECK(cudaMalloc(&src, bytes));
  BENCH_CHECK(cudaMalloc(&dst, bytes));
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(static_cast<__nv_bfloat16*>(src), bytes / 2, 1);
  BENCH_CHECK(cudaGetLastError());
  double us = 0;
  if (!b.Time([&] { return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                           b.stream); },
              &us, false)) {
    return false;
  }
  const double memcpy_gbs = 2.0 * bytes / (us * 1e-6) / 1e9;
  b.rows.push_back({"d2d_copy", "cudaMemcpyAsync " + Bytes(bytes), us, memcpy_gbs, "GB/s", 1.0,
                    "read + write counted"});
  const size_t n = bytes / 16;
  if (!b.Time([&] {
        CopyKernel<<<b.num_sms * 8, 512, 0, b.stream>>>(static_cast<const uint4*>(src),
                                                        static_cast<uint4*>(dst), n);
        return cudaGetLastError();
      },
              &us, false)) {
    return false;
  }
  b.bw_gbs = 2.0 * bytes / (us * 1e-6) / 1e9;
  b.bw_gbs = std::max(b.bw_gbs, memcpy_gbs);
  b.rows.push_back({"d2d_copy", "copy kernel " + Bytes(bytes) + " (16-byte)", us,
                    2.0 * bytes / (us * 1e-6) / 1e9, "GB/s", 1.0,
                    "BW ceiling = max of the two copies"});
  BENCH_CHECK(cudaFree(src));
  BENCH_CHECK(cudaFree(dst));

  cublasHandle_t handle = nullptr;
  BLAS_CHECK(cublasCreate(&handle));
  BLAS_CHECK(cublasSetStream(handle, b.stream));
  const bool ok = TimeGemm(b, handle, CUDA_R_16BF, "cublas_gemm_bf16", &b.gemm_tflops) &&
                  TimeGemm(b, handle, CUDA_R_32F, "cublas_gemm_fp32", &b.sgemm_tflops);
  BLAS_CHECK(cublasDestroy(handle));
  return ok;
}

// A paged KV pool (bf16) big enough for the largest case, pages handed out in shuffled order.
struct KvPool {
  static constexpr int kHkv = 8;
  static constexpr int kHeadDim = 128;
  static constexpr int kPage = 16;
  __nv_bfloat16* k = nullptr;
  __nv_bfloat16* v = nullptr;
  int64_t num_pages = 0;
  std::vector<int32_t> order;

  bool Init(Bench& b, int64_t max_tokens) {
    num_pages = max_tokens / kPage + 64;
    const size_t n = static_cast<size_t>(num_pages) * kHkv * kPage * kHeadDim;
    BENCH_CHECK(cudaMalloc(&k, n * 2));
    BENCH_CHECK(cudaMalloc(&v, n * 2));
    FillRandomBf16<<<4096, 256, 0, b.stream>>>(k, n, 11);
    FillRandomBf16<<<4096, 256, 0, b.stream>>>(v, n, 12);
    BENCH_CHECK(cudaGetLastError());
    order.resize(num_pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(5));
    return true;
  }

  // The same memory read as an fp32 pool of half the pages (the fp32 attention kernel's
  // cache): each pair of random bf16 values is one finite fp32 value within ±1.
  KvPool Fp32View() const {
    KvPool view = *this;
    view.num_pages = num_pages / 2;
    view.order.clear();
    for (const int32_t page : order) {
      if (page < view.num_pages) view.order.push_back(page);
    }
    return view;
  }
};

struct DeviceTable {
  int32_t* indptr = nullptr;
  int32_t* indices = nullptr;
  int32_t* last = nullptr;
  std::vector<int32_t> h_indptr, h_last;
  bool Build(const KvPool& pool, const std::vector<int32_t>& kv_lens) {
    h_indptr = {0};
    h_last.clear();
    std::vector<int32_t> idx;
    for (const int32_t len : kv_lens) {
      const int32_t pages = (len + KvPool::kPage - 1) / KvPool::kPage;
      for (int32_t p = 0; p < pages; ++p) idx.push_back(pool.order[idx.size()]);
      h_indptr.push_back(static_cast<int32_t>(idx.size()));
      h_last.push_back(len - (pages - 1) * KvPool::kPage);
    }
    BENCH_CHECK(cudaMalloc(&indptr, h_indptr.size() * 4));
    BENCH_CHECK(cudaMalloc(&indices, idx.size() * 4));
    BENCH_CHECK(cudaMalloc(&last, h_last.size() * 4));
    BENCH_CHECK(cudaMemcpy(indptr, h_indptr.data(), h_indptr.size() * 4, cudaMemcpyHostToDevice));
    BENCH_CHECK(cudaMemcpy(indices, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
    BENCH_CHECK(cudaMemcpy(last, h_last.data(), h_last.size() * 4, cudaMemcpyHostToDevice));
    return true;
  }
  void Free() {
    cudaFree(indptr);
    cudaFree(indices);
    cudaFree(last);
  }
  PagedKv View(const KvPool& pool) const {
    PagedKv kv;
    kv.k_cache = pool.k;
    kv.v_cache = pool.v;
    kv.kv_indptr = indptr;
    kv.kv_indices = indices;
    kv.kv_last_page_len = last;
    kv.num_kv_heads = KvPool::kHkv;
    kv.page_size = KvPool::kPage;
    kv.head_dim = KvPool::kHeadDim;
    return kv;
  }
};

// Paged decode, GQA 32/8, d 128, page 16, on `kernel` (rows paged_decode / paged_decode_mma).
// A split plan's chunks merge in the kernel's last block per (sequence, kv head), as the
// backend runs it, or with merge_launch in a second launch (rows "<name>_merge_launch", the
// way before 2026-11-30). Returns the median time in *us.
bool BenchDecode(Bench& b, const KvPool& pool, int32_t batch, int32_t ctx, double* us_out,
                 DecodeKernel kernel = DecodeKernel::kCudaCores, bool merge_launch = false) {
  constexpr int kHq = 32;
  DeviceTable table;
  if (!table.Build(pool, std::vector<int32_t>(batch, ctx))) return false;
  const PagedDecodePlan plan =
      PlanPagedDecode(table.h_indptr.data(), batch, KvPool::kHkv, KvPool::kPage, b.num_sms);
  void *q = nullptr, *o = nullptr, *ws = nullptr;
  int32_t* counters = nullptr;
  const size_t q_bytes = size_t{2} * batch * kHq * KvPool::kHeadDim;
  const size_t ws_bytes = PagedDecodeWorkspaceBytes(plan, batch, kHq, KvPool::kHeadDim);
  const size_t counter_bytes = sizeof(int32_t) * batch * KvPool::kHkv;
  BENCH_CHECK(cudaMalloc(&q, q_bytes));
  BENCH_CHECK(cudaMalloc(&o, q_bytes));
  if (ws_bytes > 0) BENCH_CHECK(cudaMalloc(&ws, ws_bytes));
  BENCH_CHECK(cudaMalloc(&counters, counter_bytes));
  BENCH_CHECK(cudaMemset(counters, 0, counter_bytes));
  FillRandomBf16<<<64, 256, 0, b.stream>>>(static_cast<__nv_bfloat16*>(q), q_bytes / 2, 7);
  PagedDecodeParams p;
  p.kernel = kernel;
  p.dtype = DType::kBF16;
  p.q = q;
  p.o = o;
  p.kv = table.View(pool);
  p.batch = batch;
  p.num_qo_heads = kHq;
  p.sm_scale = 0.08838834764f;
  p.plan = plan;
  p.workspace = ws;
  p.workspace_bytes = ws_bytes;
  p.merge_counters = merge_launch ? nullptr : counters;
  double us = 0;
  if (!b.Time([&] { return LaunchPagedDecode(p, b.stream); }, &us)) return false;
  const double kv_bytes = 2.0 * 2 * batch * static_cast<double>(ctx) * KvPool::kHkv *
                          KvPool::kHeadDim;
  const double bytes = kv_bytes + 2.0 * q_bytes;
  const double ideal_us = bytes / (b.bw_gbs * 1e9) * 1e6;
  char shape[128];
  std::snprintf(shape, sizeof(shape), "B=%d L=%d chunks=%d KV=%.0fMiB", batch, ctx,
                plan.num_chunks, kv_bytes / (1 << 20));
  const char* target = kv_bytes >= 64.0 * (1 << 20)       ? "target >= 0.80 of BW"
                       : (batch == 1 && ctx == 8192)       ? "target >= 0.60 of BW"
                                                           : "target t <= max(ideal/0.8, ideal+5us)";
  char note[160];
  std::snprintf(note, sizeof(note), "%s; ideal %.1f us", target, ideal_us);
  b.AddBandwidthRow(
      std::string(kernel == DecodeKernel::kMmaSync ? "paged_decode_mma" : "paged_decode") +
          (merge_launch ? "_merge_launch" : ""),
      shape, us, bytes, note);
  *us_out = us;
  cudaFree(q);
  cudaFree(o);
  if (ws != nullptr) cudaFree(ws);
  cudaFree(counters);
  table.Free();
  return true;
}

// Tensor-core attention over the paged KV: causal prefill (batch 1, qo = kv = ctx) or tree
// verification (q_len nodes per sequence, chain masks of depth q_len: the mask shape does
// not change the work). With dtype kF32 (pool: KvPool::Fp32View), the fp32 CUDA-core kernel
// on fp32 q, o and cache, against the fp32 GEMM ceiling. Returns the median time in *us.
// head_major: launch the blocks kv head by kv head (heads_per_pass 1, the launch order before
// the plan interleaved the heads), for a row "<name>_head_major" beside the plan's order.
// A split plan's chunks merge in the kernel's last block per tile, as the backend runs it, or
// with merge_launch in a second launch.
bool BenchTensorCore(Bench& b, const KvPool& pool, AttentionMaskMode mode, int32_t batch,
                     int32_t ctx, int32_t q_len, double* us_out,
                     PrefillKernel kernel = PrefillKernel::kMmaSync, DType dtype = DType::kBF16,
                     bool head_major = false, bool merge_launch = false) {
  const bool fp32 = dtype == DType::kF32;
  constexpr int kHq = 32;
  DeviceTable table;
  if (!table.Build(pool, std::vector<int32_t>(batch, ctx))) return false;
  std::vector<int32_t> qo_indptr(batch + 1);
  for (int32_t s = 0; s <= batch; ++s) qo_indptr[s] = s * q_len;
  const int32_t total_q = batch * q_len;
  PrefillPlanInput in;
  in.qo_indptr = qo_indptr.data();
  in.kv_indptr = table.h_indptr.data();
  in.kv_last_page_len = table.h_last.data();
  in.num_seqs = batch;
  in.num_qo_heads = kHq;
  in.num_kv_heads = KvPool::kHkv;
  in.page_size = KvPool::kPage;
  in.mask_mode = mode;
  in.num_sms = b.num_sms;
  in.kernel = kernel;
  in.kv_bytes_per_key = 2 * KvPool::kHeadDim * (fp32 ? 4 : 2);
  in.l2_cache_bytes = b.l2_cache_bytes;
  PrefillPlan plan;
  BENCH_CHECK(PlanPrefillAttention(in, &plan));
  // Chain masks for the tree mode (q_len <= 64 nodes); unused by the causal mode, whose q_len
  // may exceed the 64 bits of a mask.
  std::vector<uint64_t> masks(total_q, 0);
  if (mode == AttentionMaskMode::kTree) {
    for (int32_t i = 0; i < total_q; ++i) {
      const int32_t node = i % q_len;
      masks[i] = node >= 63 ? ~uint64_t{0} : (uint64_t{1} << (node + 1)) - 1;
    }
  }
  void *q = nullptr, *o = nullptr, *ws = nullptr;
  int32_t *d_qo = nullptr, *d_work = nullptr, *d_counters = nullptr;
  uint64_t* d_masks = nullptr;
  const size_t q_bytes = (fp32 ? size_t{4} : size_t{2}) * total_q * kHq * KvPool::kHeadDim;
  const size_t ws_bytes = PrefillWorkspaceBytes(plan, kHq, KvPool::kHeadDim);
  BENCH_CHECK(cudaMalloc(&q, q_bytes));
  BENCH_CHECK(cudaMalloc(&o, q_bytes));
  if (ws_bytes > 0) BENCH_CHECK(cudaMalloc(&ws, ws_bytes));
  BENCH_CHECK(cudaMalloc(&d_qo, qo_indptr.size() * 4));
  BENCH_CHECK(cudaMalloc(&d_work, plan.work_items.size() * 4));
  BENCH_CHECK(cudaMalloc(&d_masks, masks.size() * 8));
  const int64_t num_counters = PrefillMergeCounters(total_q, kHq);
  BENCH_CHECK(cudaMalloc(&d_counters, num_counters * 4));
  BENCH_CHECK(cudaMemset(d_counters, 0, num_counters * 4));
  BENCH_CHECK(cudaMemcpy(d_qo, qo_indptr.data(), qo_indptr.size() * 4, cudaMemcpyHostToDevice));
  BENCH_CHECK(cudaMemcpy(d_work, plan.work_items.data(), plan.work_items.size() * 4,
                         cudaMemcpyHostToDevice));
  BENCH_CHECK(cudaMemcpy(d_masks, masks.data(), masks.size() * 8, cudaMemcpyHostToDevice));
  FillRandomBf16<<<256, 256, 0, b.stream>>>(static_cast<__nv_bfloat16*>(q), q_bytes / 2, 9);
  PrefillAttentionParams p;
  p.dtype = dtype;
  p.q = q;
  p.o = o;
  p.kv = table.View(pool);
  p.qo_indptr = d_qo;
  p.num_seqs = batch;
  p.num_qo_heads = kHq;
  p.sm_scale = 0.08838834764f;
  p.mask_mode = mode;
  p.kernel = kernel;
  p.tree_mask = d_masks;
  ApplyPrefillPlan(plan, &p);
  if (head_major) p.heads_per_pass = 1;
  p.work_items = d_work;
  p.workspace = ws;
  p.workspace_bytes = ws_bytes;
  if (!merge_launch) {
    p.merge_counters = d_counters;
    p.num_merge_counters = num_counters;
  }
  double us = 0;
  if (!b.Time([&] { return LaunchPrefillAttention(p, b.stream); }, &us)) return false;
  *us_out = us;
  char shape[128];
  if (mode == AttentionMaskMode::kCausal) {
    // Causal FLOPs: 2 matmuls * 2 FLOP * Hq * d * (L^2 / 2) for qo = kv = L.
    const double flops = 2.0 * kHq * KvPool::kHeadDim * static_cast<double>(ctx) * ctx;
    const double tflops = flops / (us * 1e-6) / 1e12;
    std::snprintf(shape, sizeof(shape), "causal L=%d GQA 32/8 d=128", ctx);
    const std::string name =
        std::string(fp32                                          ? "prefill_attn_fp32"
                    : kernel == PrefillKernel::kWgmma             ? "prefill_attn_wgmma"
                    : kernel == PrefillKernel::kWgmmaPipelined    ? "prefill_attn_pipelined"
                    : kernel == PrefillKernel::kWgmmaPipelined128 ? "prefill_attn_pipelined_128"
                    : kernel == PrefillKernel::kMmaSyncWide       ? "prefill_attn_wide"
                                                                  : "prefill_attention") +
        (head_major ? "_head_major" : "");
    if (fp32) {
      b.rows.push_back({name, shape, us, tflops, "TFLOP/s", tflops / b.sgemm_tflops,
                        "fp32 cache, CUDA cores; fraction of the fp32 GEMM"});
    } else {
      b.rows.push_back(
          {name, shape, us, tflops, "TFLOP/s", tflops / b.gemm_tflops, "milestone >= 300 TFLOP/s"});
    }
  }
  cudaFree(q);
  cudaFree(o);
  if (ws != nullptr) cudaFree(ws);
  cudaFree(d_qo);
  cudaFree(d_work);
  cudaFree(d_masks);
  cudaFree(d_counters);
  table.Free();
  return true;
}

// K5: one layer's q/k/v and gate/up products (bf16 weights and inputs, fp32 outputs) at
// `rows` input rows, timed two ways: one cublasGemmEx per matrix (five calls), and as the CUDA
// backend joins them (PlanProjectionGemms, cuda_backend_matmul.cc; the model packs q|k|v and
// gate|up together and places their outputs side by side): for one row one GEMM over q|k|v
// and one over gate|up (two calls), for more rows q alone, then k and v and gate and up as
// strided batches (three calls). Both stream the same weight bytes; the fraction is of the
// measured bandwidth for them.
bool BenchProjections(Bench& b, int32_t rows) {
  const int dim = b.scale.proj_dim;
  const int q = dim;
  const int kv = b.scale.proj_kv;
  const int ffn = b.scale.proj_ffn;
  const size_t qkv_rows = static_cast<size_t>(q) + 2 * kv;
  const size_t gu_rows = 2 * static_cast<size_t>(ffn);
  __nv_bfloat16* qkv_w = nullptr;
  __nv_bfloat16* gu_w = nullptr;
  __nv_bfloat16* x = nullptr;
  float* qkv_y = nullptr;
  float* gu_y = nullptr;
  BENCH_CHECK(cudaMalloc(&qkv_w, qkv_rows * dim * 2));
  BENCH_CHECK(cudaMalloc(&gu_w, gu_rows * dim * 2));
  BENCH_CHECK(cudaMalloc(&x, static_cast<size_t>(rows) * dim * 2));
  BENCH_CHECK(cudaMalloc(&qkv_y, qkv_rows * rows * 4));
  BENCH_CHECK(cudaMalloc(&gu_y, gu_rows * rows * 4));
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(qkv_w, qkv_rows * dim, 11);
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(gu_w, gu_rows * dim, 12);
  FillRandomBf16<<<1024, 256, 0, b.stream>>>(x, static_cast<size_t>(rows) * dim, 13);
  BENCH_CHECK(cudaGetLastError());
  cublasHandle_t handle = nullptr;
  BLAS_CHECK(cublasCreate(&handle));
  BLAS_CHECK(cublasSetStream(handle, b.stream));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  // y[rows][n] = x W[n][dim]ᵀ (as EnqueueProjectionGemm calls it), `batch` problems apart by
  // w_stride / y_stride elements.
  auto gemm = [&](const __nv_bfloat16* w, int n, float* y, int batch, int64_t w_stride,
                  int64_t y_stride) {
    return batch == 1 ? cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, dim, &alpha, w,
                                     CUDA_R_16BF, dim, x, CUDA_R_16BF, dim, &beta, y, CUDA_R_32F, n,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
                      : cublasGemmStridedBatchedEx(
                            handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, dim, &alpha, w, CUDA_R_16BF,
                            dim, w_stride, x, CUDA_R_16BF, dim, 0, &beta, y, CUDA_R_32F, n,
                            y_stride, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  const __nv_bfloat16* k_w = qkv_w + static_cast<size_t>(q) * dim;
  const __nv_bfloat16* v_w = k_w + static_cast<size_t>(kv) * dim;
  const __nv_bfloat16* up_w = gu_w + static_cast<size_t>(ffn) * dim;
  float* k_y = qkv_y + static_cast<size_t>(rows) * q;
  float* v_y = k_y + static_cast<size_t>(rows) * kv;
  float* up_y = gu_y + static_cast<size_t>(rows) * ffn;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  auto keep = [&](cublasStatus_t st) {
    if (status == CUBLAS_STATUS_SUCCESS) status = st;
  };
  auto result = [&] { return status == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown; };
  double separate_us = 0;
  double joined_us = 0;
  if (!b.Time(
          [&] {
            keep(gemm(qkv_w, q, qkv_y, 1, 0, 0));
            keep(gemm(k_w, kv, k_y, 1, 0, 0));
            keep(gemm(v_w, kv, v_y, 1, 0, 0));
            keep(gemm(gu_w, ffn, gu_y, 1, 0, 0));
            keep(gemm(up_w, ffn, up_y, 1, 0, 0));
            return result();
          },
          &separate_us) ||
      !b.Time(
          [&] {
            if (rows == 1) {
              keep(gemm(qkv_w, static_cast<int>(qkv_rows), qkv_y, 1, 0, 0));
              keep(gemm(gu_w, static_cast<int>(gu_rows), gu_y, 1, 0, 0));
            } else {
              keep(gemm(qkv_w, q, qkv_y, 1, 0, 0));
              keep(gemm(k_w, kv, k_y, 2, static_cast<int64_t>(kv) * dim,
                        static_cast<int64_t>(rows) * kv));
              keep(gemm(gu_w, ffn, gu_y, 2, static_cast<int64_t>(ffn) * dim,
                        static_cast<int64_t>(rows) * ffn));
            }
            return result();
          },
          &joined_us)) {
    return false;
  }
  BLAS_CHECK(status);
  const double bytes = static_cast<double>(qkv_rows + gu_rows) * dim * 2 +
                       static_cast<double>(rows) * dim * 2 +
                       static_cast<double>(qkv_rows + gu_rows) * rows * 4;
  char shape[128];
  std::snprintf(shape, sizeof(shape), "rows=%d dim=%d q=%d kv=%d ffn=%d", rows, dim, q, kv, ffn);
  for (const auto& [name, us, note] :
       {std::tuple<const char*, double, const char*>{"projections", separate_us,
                                                     "5 cublasGemmEx (one per matrix)"},
        {"projections_joined", joined_us,
         rows == 1 ? "2 calls: q|k|v, gate|up" : "3 calls: q; k,v and gate,up strided-batched"}}) {
    b.AddBandwidthRow(name, shape, us, bytes, note);
  }
  BLAS_CHECK(cublasDestroy(handle));
  BENCH_CHECK(cudaFree(qkv_w));
  BENCH_CHECK(cudaFree(gu_w));
  BENCH_CHECK(cudaFree(x));
  BENCH_CHECK(cudaFree(qkv_y));
  BENCH_CHECK(cudaFree(gu_y));
  return true;
}

// K6: what a decode step brings back of its logits rows (`rows` x vocab fp32, on the device):
// the rows themselves copied to pinned host memory (a step whose rows are sampled on the
// host), each row's argmax (ArgMaxRows, greedy steps) or its k most likely entries (TopKRows,
// top-k steps; also with the rows' softmax normalizers, as for logprobs; and at temperature
// 0.8 with the sums at 1 besides, as for a top-p row with logprobs), each with its copy of
// the result to the host. GB/s of the rows' bytes read
// once; the fraction is of the measured D2D bandwidth (for the host copy only a scale: it
// crosses the host link).
bool BenchLogitsReductions(Bench& b, int32_t rows) {
  const int64_t vocab = b.scale.vocab;
  const int32_t k = b.scale.logits_top_k;
  const size_t elements = static_cast<size_t>(rows) * vocab;
  float* x = nullptr;
  int32_t* index = nullptr;
  float* value = nullptr;
  int32_t* count = nullptr;
  float* row_max = nullptr;
  double* row_exp_sum = nullptr;
  double* row_exp_sum_t1 = nullptr;
  float* temperature = nullptr;
  void* host = nullptr;
  BENCH_CHECK(cudaMalloc(&x, elements * 4));
  BENCH_CHECK(cudaMalloc(&row_max, static_cast<size_t>(rows) * 4));
  BENCH_CHECK(cudaMalloc(&row_exp_sum, static_cast<size_t>(rows) * 8));
  BENCH_CHECK(cudaMalloc(&row_exp_sum_t1, static_cast<size_t>(rows) * 8));
  BENCH_CHECK(cudaMalloc(&temperature, static_cast<size_t>(rows) * 4));
  {
    const std::vector<float> temperatures(static_cast<size_t>(rows), 0.8f);
    BENCH_CHECK(cudaMemcpy(temperature, temperatures.data(), temperatures.size() * 4,
                           cudaMemcpyHostToDevice));
  }
  BENCH_CHECK(cudaMalloc(&index, static_cast<size_t>(rows) * k * 4));
  BENCH_CHECK(cudaMalloc(&value, static_cast<size_t>(rows) * k * 4));
  BENCH_CHECK(cudaMalloc(&count, static_cast<size_t>(rows) * 4));
  BENCH_CHECK(cudaHostAlloc(&host, elements * 4, cudaHostAllocDefault));
  FillRandomFloat<<<1024, 256, 0, b.stream>>>(x, elements, 21);
  BENCH_CHECK(cudaGetLastError());
  ArgMaxRowsParams argmax;
  argmax.x = x;
  argmax.num_rows = rows;
  argmax.cols = vocab;
  argmax.index = index;
  argmax.value = value;
  // Split over several blocks a row when the rows are few (ArgMaxRowsSplits, as the backend);
  // the partial maxima and counters start zero and every launch leaves them so.
  argmax.splits = ArgMaxRowsSplits(rows, vocab, b.num_sms);
  unsigned long long* argmax_partial = nullptr;
  unsigned int* argmax_counters = nullptr;
  BENCH_CHECK(cudaMalloc(&argmax_partial, static_cast<size_t>(rows) * 8));
  BENCH_CHECK(cudaMalloc(&argmax_counters, static_cast<size_t>(rows) * 4));
  BENCH_CHECK(cudaMemset(argmax_partial, 0, static_cast<size_t>(rows) * 8));
  BENCH_CHECK(cudaMemset(argmax_counters, 0, static_cast<size_t>(rows) * 4));
  argmax.partial = argmax_partial;
  argmax.counters = argmax_counters;
  TopKRowsParams top;
  top.x = x;
  top.num_rows = rows;
  top.cols = vocab;
  top.k = k;
  top.count = count;
  top.index = index;
  top.value = value;
  // Split over several blocks a row when the rows are few (TopKRowsSplits, as the backend).
  top.splits = TopKRowsSplits(rows, vocab, k, b.num_sms);
  top.workspace_bytes = TopKRowsWorkspaceBytes(rows, top.splits, k);
  void* workspace = nullptr;
  if (top.workspace_bytes > 0) BENCH_CHECK(cudaMalloc(&workspace, top.workspace_bytes));
  top.workspace = workspace;
  auto* host_bytes = static_cast<char*>(host);
  const size_t pair_bytes = static_cast<size_t>(rows) * k * 4;
  double copy_us = 0;
  double argmax_us = 0;
  double argmax_unsplit_us = 0;
  double topk_us = 0;
  double topk_normalizers_us = 0;
  double topk_sums_t1_us = 0;
  double topk_unsplit_us = 0;
  double topk_sums_t1_unsplit_us = 0;
  // TopKRows and its copies to the host; with the normalizers when `normalizers`, and with
  // them at temperature 0.8 and the sums at 1 besides when `sums_t1`; one block a row when
  // `unsplit`.
  auto topk_step = [&](bool normalizers, bool sums_t1 = false, bool unsplit = false) {
    TopKRowsParams p = top;
    if (unsplit) p.splits = 1;
    if (normalizers) {
      p.row_max = row_max;
      p.row_exp_sum = row_exp_sum;
    }
    if (sums_t1) {
      p.temperature = temperature;
      p.row_exp_sum_t1 = row_exp_sum_t1;
    }
    cudaError_t err = LaunchTopKRows(p, b.stream);
    if (err == cudaSuccess) {
      err = cudaMemcpyAsync(host_bytes, count, static_cast<size_t>(rows) * 4,
                            cudaMemcpyDeviceToHost, b.stream);
    }
    if (err == cudaSuccess) {
      err = cudaMemcpyAsync(host_bytes + rows * 4, index, pair_bytes, cudaMemcpyDeviceToHost,
                            b.stream);
    }
    if (err == cudaSuccess) {
      err = cudaMemcpyAsync(host_bytes + rows * 4 + pair_bytes, value, pair_bytes,
                            cudaMemcpyDeviceToHost, b.stream);
    }
    if (err == cudaSuccess && normalizers) {
      err = cudaMemcpyAsync(host_bytes + rows * 4 + 2 * pair_bytes, row_exp_sum,
                            static_cast<size_t>(rows) * 8, cudaMemcpyDeviceToHost, b.stream);
    }
    if (err == cudaSuccess && normalizers) {
      err = cudaMemcpyAsync(host_bytes + rows * 12 + 2 * pair_bytes, row_max,
                            static_cast<size_t>(rows) * 4, cudaMemcpyDeviceToHost, b.stream);
    }
    if (err == cudaSuccess && sums_t1) {
      err = cudaMemcpyAsync(host_bytes + rows * 16 + 2 * pair_bytes, row_exp_sum_t1,
                            static_cast<size_t>(rows) * 8, cudaMemcpyDeviceToHost, b.stream);
    }
    return err;
  };
  // ArgMaxRows and its copy to the host; one block a row when `unsplit`.
  auto argmax_step = [&](bool unsplit) {
    ArgMaxRowsParams p = argmax;
    if (unsplit) p.splits = 1;
    cudaError_t err = LaunchArgMaxRows(p, b.stream);
    if (err == cudaSuccess) {
      err = cudaMemcpyAsync(host_bytes, index, static_cast<size_t>(rows) * 4,
                            cudaMemcpyDeviceToHost, b.stream);
    }
    return err;
  };
  if (!b.Time(
          [&] { return cudaMemcpyAsync(host, x, elements * 4, cudaMemcpyDeviceToHost, b.stream); },
          &copy_us) ||
      !b.Time([&] { return argmax_step(false); }, &argmax_us) ||
      !b.Time([&] { return argmax_step(true); }, &argmax_unsplit_us) ||
      !b.Time([&] { return topk_step(false); }, &topk_us) ||
      !b.Time([&] { return topk_step(true); }, &topk_normalizers_us) ||
      !b.Time([&] { return topk_step(true, true); }, &topk_sums_t1_us) ||
      !b.Time([&] { return topk_step(false, false, true); }, &topk_unsplit_us) ||
      !b.Time([&] { return topk_step(true, true, true); }, &topk_sums_t1_unsplit_us)) {
    return false;
  }
  char shape[128];
  std::snprintf(shape, sizeof(shape), "rows=%d vocab=%lld k=%d", rows,
                static_cast<long long>(vocab), k);
  const std::string topk_note = "TopKRows (" + std::to_string(top.splits) +
                                " blocks a row: TopKRowsSplits) + count and k pairs a row to "
                                "the host";
  const std::string argmax_note = "ArgMaxRows (" + std::to_string(argmax.splits) +
                                  " blocks a row: ArgMaxRowsSplits) + 4 bytes a row to the host";
  const double bytes = static_cast<double>(elements) * 4;
  for (const auto& [name, us, note] :
       {std::tuple<const char*, double, const char*>{"logits_to_host", copy_us,
                                                     "rows to pinned host memory"},
        {"argmax_rows", argmax_us, argmax_note.c_str()},
        {"argmax_rows_unsplit", argmax_unsplit_us,
         "as argmax_rows, one block a row (splits=1; the kernel before 2026-12-02)"},
        {"topk_rows", topk_us, topk_note.c_str()},
        {"topk_normalizers", topk_normalizers_us,
         "as topk_rows, with each row's softmax normalizer (logprobs)"},
        {"topk_sums_t1", topk_sums_t1_us,
         "as topk_normalizers at temperature 0.8, with the sums at 1 (top-p + logprobs)"},
        {"topk_rows_unsplit", topk_unsplit_us, "as topk_rows, one block a row (splits=1)"},
        {"topk_sums_t1_unsplit", topk_sums_t1_unsplit_us,
         "as topk_sums_t1, one block a row (splits=1)"}}) {
    b.AddBandwidthRow(name, shape, us, bytes, note);
  }
  BENCH_CHECK(cudaFree(x));
  BENCH_CHECK(cudaFree(index));
  BENCH_CHECK(cudaFree(value));
  BENCH_CHECK(cudaFree(count));
  BENCH_CHECK(cudaFree(argmax_partial));
  BENCH_CHECK(cudaFree(argmax_counters));
  BENCH_CHECK(cudaFree(row_max));
  BENCH_CHECK(cudaFree(row_exp_sum));
  BENCH_CHECK(cudaFree(row_exp_sum_t1));
  if (workspace != nullptr) BENCH_CHECK(cudaFree(workspace));
  BENCH_CHECK(cudaFree(temperature));
  BENCH_CHECK(cudaFreeHost(host));
  return true;
}

bool RunAll(Bench& b, const std::string& json_path) {
  if (!MeasureCeilings(b)) return false;
  KvPool pool;
  if (!pool.Init(b, b.scale.pool_tokens)) return false;
  const bool wgmma = b.wgmma && b.experimental_rows;
  // K2: paged decode.
  for (const int32_t batch : b.scale.decode_batches) {
    for (const int32_t ctx : b.scale.decode_contexts) {
      double us = 0;
      if (b.base_rows && !BenchDecode(b, pool, batch, ctx, &us)) return false;
      if (b.experimental_rows && !BenchDecode(b, pool, batch, ctx, &us, DecodeKernel::kMmaSync)) {
        return false;
      }
      // What merging split chunks in the kernel saves where the split is deepest: the same
      // call with the merge as a second launch.
      if (b.base_rows && batch == 1 &&
          !BenchDecode(b, pool, batch, ctx, &us, DecodeKernel::kCudaCores, true)) {
        return false;
      }
    }
  }
  // K4: tree verification vs a plain decode step at the same KV.
  for (const int32_t batch : b.scale.tree_batches) {
    for (const int32_t ctx : b.scale.tree_contexts) {
      if (!b.base_rows && !wgmma) continue;
      double decode_us = 0;
      if (!BenchDecode(b, pool, batch, ctx, &decode_us)) return false;
      b.rows.pop_back();  // already reported above or not part of K2's grid
      for (const int32_t q_len : b.scale.tree_q_lens) {
        char shape[128];
        std::snprintf(shape, sizeof(shape), "B=%d L=%d q_len=%d", batch, ctx, q_len);
        const char* target = q_len <= 16 ? "target <= 1.3x decode" : "target <= 2x decode";
        struct TreeKernel {
          PrefillKernel kernel;
          const char* name;
          bool run;
        };
        const TreeKernel kernels[] = {
            {PrefillKernel::kMmaSync, q_len == 1 ? "tc_decode" : "tree_verify", b.base_rows},
            {PrefillKernel::kMmaSyncWide, "tree_verify_wide", b.base_rows && q_len > 1},
            {PrefillKernel::kWgmma, "tree_verify_wgmma", wgmma && q_len > 1},
            {PrefillKernel::kWgmmaPipelined, "tree_verify_pipelined", wgmma && q_len > 1},
            {PrefillKernel::kWgmmaPipelined128, "tree_verify_pipelined_128", wgmma && q_len > 1},
        };
        for (const TreeKernel& k : kernels) {
          if (!k.run) continue;
          double us = 0;
          if (!BenchTensorCore(b, pool, AttentionMaskMode::kTree, batch, ctx, q_len, &us,
                               k.kernel)) {
            return false;
          }
          b.rows.push_back({k.name, shape, us, us / decode_us, "x decode", 0.0, target});
        }
        // What merging split chunks in the kernel saves where the split is deepest (the
        // fewest sequences): the same call with the merge as a second launch.
        double merge_launch_us = 0;
        if (b.base_rows && q_len > 1 && batch == b.scale.tree_batches.front()) {
          if (!BenchTensorCore(b, pool, AttentionMaskMode::kTree, batch, ctx, q_len,
                               &merge_launch_us, PrefillKernel::kMmaSync, DType::kBF16,
                               /*head_major=*/false, /*merge_launch=*/true)) {
            return false;
          }
          b.rows.push_back({"tree_verify_merge_launch", shape, merge_launch_us,
                            merge_launch_us / decode_us, "x decode", 0.0, target});
        }
      }
    }
  }
  // K3: prefill attention.
  for (const int32_t ctx : b.scale.prefill_lengths) {
    const std::pair<PrefillKernel, bool> kernels[] = {
        {PrefillKernel::kMmaSync, b.base_rows},
        {PrefillKernel::kMmaSyncWide, b.base_rows},
        {PrefillKernel::kWgmma, wgmma},
        {PrefillKernel::kWgmmaPipelined, wgmma},
        {PrefillKernel::kWgmmaPipelined128, wgmma},
    };
    for (const auto& [kernel, run] : kernels) {
      double us = 0;
      if (run && !BenchTensorCore(b, pool, AttentionMaskMode::kCausal, 1, ctx, ctx, &us, kernel)) {
        return false;
      }
      // The launch order's effect, where the tail of a 128-row kernel's blocks is longest
      // (two blocks per SM, few waves): the same kernel launched kv head by kv head.
      const bool order_row =
          kernel == PrefillKernel::kMmaSyncWide || kernel == PrefillKernel::kWgmmaPipelined;
      if (run && order_row && ctx <= 4096 &&
          !BenchTensorCore(b, pool, AttentionMaskMode::kCausal, 1, ctx, ctx, &us, kernel,
                           DType::kBF16, /*head_major=*/true)) {
        return false;
      }
    }
    double us = 0;
    if (b.base_rows && !BenchTensorCore(b, pool.Fp32View(), AttentionMaskMode::kCausal, 1, ctx, ctx,
                                        &us, PrefillKernel::kMmaSync, DType::kF32)) {
      return false;
    }
  }
  cudaFree(pool.k);
  cudaFree(pool.v);
  // K5: the projections around the attention (end to end, not a target of their own).
  for (const int32_t rows : b.scale.proj_rows) {
    if (b.base_rows && !BenchProjections(b, rows)) return false;
  }
  // K6: the logits rows' way back to the host (end to end, not a target of their own).
  for (const int32_t rows : b.scale.logits_rows) {
    if (b.base_rows && !BenchLogitsReductions(b, rows)) return false;
  }

  std::ostringstream json;
  json << "{\n  \"ceilings\": {\"d2d_bandwidth_gbs\": " << b.bw_gbs
       << ", \"bf16_gemm_tflops\": " << b.gemm_tflops
       << ", \"fp32_gemm_tflops\": " << b.sgemm_tflops << "},\n  \"results\": [";
  for (size_t i = 0; i < b.rows.size(); ++i) {
    const Row& r = b.rows[i];
    json << (i ? "," : "") << "\n    {\"kernel\": \"" << r.kernel << "\", \"shape\": \""
         << r.shape << "\", \"us\": " << r.us << ", \"" << r.metric_unit
         << "\": " << r.metric << ", \"fraction_of_ceiling\": " << r.fraction
         << ", \"note\": \"" << r.note << "\"}";
  }
  json << "\n  ]\n}\n";
  std::ofstream(json_path) << json.str();
  std::printf("\n%-18s %-40s %10s %12s %8s  %s\n", "kernel", "shape", "us", "metric", "frac",
              "note");
  for (const Row& r : b.rows) {
    std::printf("%-18s %-40s %10.1f %8.2f %-8s %5.2f  %s\n", r.kernel.c_str(), r.shape.c_str(),
                r.us, r.metric, r.metric_unit.c_str(), r.fraction, r.note.c_str());
  }
  std::printf(
      "ceilings: D2D %.0f GB/s, cuBLAS bf16 GEMM %.0f TFLOP/s, fp32 GEMM %.1f TFLOP/s; "
      "JSON: %s\n",
      b.bw_gbs, b.gemm_tflops, b.sgemm_tflops, json_path.c_str());
  return true;
}

}  // namespace
}  // namespace glimpse::kernels::cuda

int main(int argc, char** argv) {
  using namespace glimpse::kernels::cuda;
  bool smoke = false;
  std::string kernels = "all";
  std::string json_path = "kernel_bench.json";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") {
      smoke = true;
    } else if (arg == "--kernels=all" || arg == "--kernels=base" ||
               arg == "--kernels=experimental") {
      kernels = arg.substr(10);
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr,
                   "usage: kernel_bench [--smoke] [--kernels=all|base|experimental] [JSON_PATH]; "
                   "unknown flag %s\n",
                   arg.c_str());
      return 2;
    } else {
      json_path = arg;
    }
  }
  int num_devices = 0;
  if (cudaGetDeviceCount(&num_devices) != cudaSuccess || num_devices == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  Bench b;
  if (smoke) b.scale = Scale::Smoke();
  b.base_rows = kernels != "experimental";
  b.experimental_rows = kernels != "base";
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  b.num_sms = prop.multiProcessorCount;
  b.l2_cache_bytes = prop.l2CacheSize;
  b.wgmma = prop.major == 9;
  int driver = 0;
  int runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("device: %s, %d SMs, L2 %d MiB, driver %d, runtime %d\n", prop.name, b.num_sms,
              prop.l2CacheSize >> 20, driver, runtime);
  if (cudaStreamCreate(&b.stream) != cudaSuccess || cudaEventCreate(&b.start) != cudaSuccess ||
      cudaEventCreate(&b.stop) != cudaSuccess ||
      cudaMalloc(&b.flush, b.scale.flush_bytes) != cudaSuccess) {
    std::fprintf(stderr, "setup failed\n");
    return 1;
  }
  const bool ok = RunAll(b, json_path);
  cudaFree(b.flush);
  cudaEventDestroy(b.start);
  cudaEventDestroy(b.stop);
  cudaStreamDestroy(b.stream);
  if (!ok) return 1;
  if (smoke) {
    // Every kernel family must have run, each row with a real time.
    for (const char* kernel : {"d2d_copy",
                               "cublas_gemm_bf16",
                               "cublas_gemm_fp32",
                               "paged_decode",
                               "paged_decode_mma",
                               "tc_decode",
                               "tree_verify",
                               "prefill_attention",
                               "prefill_attn_fp32",
                               "tree_verify_wide",
                               "prefill_attn_wide",
                               "tree_verify_wgmma",
                               "prefill_attn_wgmma",
                               "tree_verify_pipelined",
                               "prefill_attn_pipelined",
                               "tree_verify_pipelined_128",
                               "prefill_attn_pipelined_128",
                               "prefill_attn_wide_head_major",
                               "prefill_attn_pipelined_head_major",
                               "paged_decode_merge_launch",
                               "tree_verify_merge_launch",
                               "projections",
                               "projections_joined",
                               "logits_to_host",
                               "argmax_rows",
                               "topk_rows"}) {
      const bool present = std::any_of(b.rows.begin(), b.rows.end(),
                                       [&](const Row& r) { return r.kernel == kernel; });
      const std::string name = kernel;
      const bool wgmma_row =
          name.find("wgmma") != std::string::npos || name.find("pipelined") != std::string::npos;
      if (!present && !(wgmma_row && !b.wgmma)) {
        std::fprintf(stderr, "smoke: no %s row\n", kernel);
        return 1;
      }
    }
    for (const Row& r : b.rows) {
      if (!(r.us > 0) || !std::isfinite(r.us) || !std::isfinite(r.metric)) {
        std::fprintf(stderr, "smoke: %s %s has time %g us, metric %g\n", r.kernel.c_str(),
                     r.shape.c_str(), r.us, r.metric);
        return 1;
      }
    }
    std::printf("smoke: %zu rows, every time finite and positive\n", b.rows.size());
  }
  return 0;
}
