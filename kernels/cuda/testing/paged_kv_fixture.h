// Host-side random paged KV caches and a float64 attention reference for the kernel tests.
// Pages are scattered over a shuffled pool with spare (unreferenced, random) blocks, so a
// kernel that ignores the page table or reads past a sequence fails.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_PAGED_KV_FIXTURE_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_PAGED_KV_FIXTURE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "kernels/cuda/attention_common.h"
#include "kernels/cuda/dtype.h"
#include "kernels/cuda/kv_layout.h"
#include "kernels/cuda/testing/test_harness.h"

namespace glimpse::kernels::cuda::testing {

struct HostPagedKv {
  int32_t num_kv_heads = 0;
  int32_t page_size = 0;
  int32_t head_dim = 0;
  int32_t num_blocks = 0;
  std::vector<int32_t> kv_len;          // [num_seqs]
  std::vector<int32_t> indptr;          // [num_seqs + 1]
  std::vector<int32_t> indices;         // [indptr.back()]
  std::vector<int32_t> last_page_len;   // [num_seqs]
  std::vector<float> k;                 // [num_blocks][H][P][D], values exact in the dtype
  std::vector<float> v;

  int32_t num_seqs() const { return static_cast<int32_t>(kv_len.size()); }
  int64_t Offset(int32_t s, int32_t h, int32_t j) const {
    const int32_t page = indices[indptr[s] + j / page_size];
    return KvOffset(page, h, j % page_size, num_kv_heads, page_size, head_dim);
  }
  const float* Key(int32_t s, int32_t h, int32_t j) const { return &k[Offset(s, h, j)]; }
  const float* Value(int32_t s, int32_t h, int32_t j) const { return &v[Offset(s, h, j)]; }
};

inline HostPagedKv MakeRandomPagedKv(const std::vector<int32_t>& kv_lens, int32_t num_kv_heads,
                                     int32_t page_size, int32_t head_dim, DType dtype) {
  HostPagedKv kv;
  kv.num_kv_heads = num_kv_heads;
  kv.page_size = page_size;
  kv.head_dim = head_dim;
  kv.kv_len = kv_lens;
  kv.indptr.push_back(0);
  for (const int32_t len : kv_lens) {
    const int32_t pages = (len + page_size - 1) / page_size;
    kv.indptr.push_back(kv.indptr.back() + pages);
    kv.last_page_len.push_back(len == 0 ? 0 : len - (pages - 1) * page_size);
  }
  const int32_t used = kv.indptr.back();
  kv.num_blocks = used + 3;
  std::vector<int32_t> pool(kv.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), Rng());
  kv.indices.assign(pool.begin(), pool.begin() + used);
  const size_t n = static_cast<size_t>(kv.num_blocks) * num_kv_heads * page_size * head_dim;
  kv.k = RandomNormal(n, 0.0f, 1.0f);
  kv.v = RandomNormal(n, 0.0f, 1.0f);
  if (dtype == DType::kBF16) {
    kv.k = RoundBf16(kv.k);
    kv.v = RoundBf16(kv.v);
  }
  return kv;
}

// The KV cache and page table in device memory.
struct DevicePagedKv {
  DeviceArray<float> k_f32;
  DeviceArray<float> v_f32;
  DeviceArray<uint16_t> k_bf16;
  DeviceArray<uint16_t> v_bf16;
  DeviceArray<int32_t> indptr;
  DeviceArray<int32_t> indices;
  DeviceArray<int32_t> last_page_len;
  PagedKv view;

  cudaError_t Upload(const HostPagedKv& host, DType dtype) {
    cudaError_t err = cudaSuccess;
    if (dtype == DType::kF32) {
      if ((err = k_f32.Upload(host.k)) != cudaSuccess) return err;
      if ((err = v_f32.Upload(host.v)) != cudaSuccess) return err;
      view.k_cache = k_f32.get();
      view.v_cache = v_f32.get();
    } else {
      if ((err = k_bf16.Upload(ToBf16(host.k))) != cudaSuccess) return err;
      if ((err = v_bf16.Upload(ToBf16(host.v))) != cudaSuccess) return err;
      view.k_cache = k_bf16.get();
      view.v_cache = v_bf16.get();
    }
    if ((err = indptr.Upload(host.indptr)) != cudaSuccess) return err;
    // An empty indices array would be a null pointer; keep one dummy entry.
    std::vector<int32_t> idx = host.indices;
    if (idx.empty()) idx.push_back(0);
    if ((err = indices.Upload(idx)) != cudaSuccess) return err;
    if ((err = last_page_len.Upload(host.last_page_len)) != cudaSuccess) return err;
    view.kv_indptr = indptr.get();
    view.kv_indices = indices.get();
    view.kv_last_page_len = last_page_len.get();
    view.num_kv_heads = host.num_kv_heads;
    view.page_size = host.page_size;
    view.head_dim = host.head_dim;
    return cudaSuccess;
  }
};

// softmax(scale * q·k_j) over the keys j < kv_len(s) with visible(j), weighted sum of v_j, in
// float64. out: [head_dim]; lse: natural log-sum-exp of the scaled scores (-inf and out = 0
// when nothing is visible).
inline void ReferenceAttendOne(const HostPagedKv& kv, int32_t s, int32_t kv_head,
                               const float* q, double scale,
                               const std::function<bool(int32_t)>& visible, double* out,
                               double* lse) {
  const int32_t d_count = kv.head_dim;
  std::vector<double> scores;
  std::vector<int32_t> keys;
  double mx = -INFINITY;
  for (int32_t j = 0; j < kv.kv_len[s]; ++j) {
    if (!visible(j)) continue;
    const float* key = kv.Key(s, kv_head, j);
    double dot = 0.0;
    for (int32_t d = 0; d < d_count; ++d) dot += static_cast<double>(q[d]) * key[d];
    scores.push_back(dot * scale);
    keys.push_back(j);
    mx = std::max(mx, dot * scale);
  }
  for (int32_t d = 0; d < d_count; ++d) out[d] = 0.0;
  if (keys.empty()) {
    *lse = -INFINITY;
    return;
  }
  double sum = 0.0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const double p = std::exp(scores[i] - mx);
    sum += p;
    const float* val = kv.Value(s, kv_head, keys[i]);
    for (int32_t d = 0; d < d_count; ++d) out[d] += p * val[d];
  }
  for (int32_t d = 0; d < d_count; ++d) out[d] /= sum;
  *lse = mx + std::log(sum);
}

// Uploads activations in the given dtype (bf16 as bit patterns). `host` must already be
// exact in that dtype (RoundBf16) for the reference to see the same values.
struct DeviceActivations {
  DeviceArray<float> f32;
  DeviceArray<uint16_t> bf16;
  void* ptr = nullptr;
  cudaError_t Upload(const std::vector<float>& host, DType dtype) {
    cudaError_t err;
    if (dtype == DType::kF32) {
      err = f32.Upload(host);
      ptr = f32.get();
    } else {
      err = bf16.Upload(ToBf16(host));
      ptr = bf16.get();
    }
    return err;
  }
  cudaError_t AllocatePoisoned(size_t n, DType dtype) {
    cudaError_t err;
    if (dtype == DType::kF32) {
      err = f32.Allocate(n);
      ptr = f32.get();
    } else {
      err = bf16.Allocate(n);
      ptr = bf16.get();
    }
    return err;
  }
  cudaError_t Download(std::vector<float>* host, DType dtype) const {
    if (dtype == DType::kF32) return f32.Download(host);
    std::vector<uint16_t> bits;
    const cudaError_t err = bf16.Download(&bits);
    *host = Bf16ToFloat(bits);
    return err;
  }
};

inline std::vector<float> RandomActivations(size_t n, DType dtype, float stddev = 1.0f) {
  std::vector<float> x = RandomNormal(n, 0.0f, stddev);
  return dtype == DType::kBF16 ? RoundBf16(x) : x;
}

// After a split launch that merged in the kernel (decode or prefill), over sequences whose
// query rows are qo_indptr[s] .. qo_indptr[s + 1] and whose KV holds kv_lens[s] keys: the
// partial-state lse slots of chunk 0 (the workspace [num_chunks][rows][heads][head_dim] of o,
// then of lse, poisoned with NaN) written for sequences of one chunk, which must write o
// directly instead. 0 is the only right answer.
inline int64_t PartialStatesOfOneChunkSequences(const std::vector<float>& workspace,
                                                int32_t num_chunks, int32_t chunk_keys,
                                                const std::vector<int32_t>& qo_indptr,
                                                const std::vector<int32_t>& kv_lens,
                                                int32_t num_qo_heads, int32_t head_dim) {
  if (num_chunks == 1) return 0;
  const size_t lse_begin =
      static_cast<size_t>(num_chunks) * qo_indptr.back() * num_qo_heads * head_dim;
  int64_t written = 0;
  for (size_t s = 0; s < kv_lens.size(); ++s) {
    if (NumKvChunks(kv_lens[s], chunk_keys) > 1) continue;
    for (int64_t i = int64_t{qo_indptr[s]} * num_qo_heads;
         i < int64_t{qo_indptr[s + 1]} * num_qo_heads; ++i) {
      written += !std::isnan(workspace[lse_begin + i]);
    }
  }
  return written;
}

// Merge counters not back at 0 after a launch (each launch must leave them all 0).
inline int64_t NonZeroCounters(const std::vector<int32_t>& counters) {
  return std::count_if(counters.begin(), counters.end(), [](int32_t c) { return c != 0; });
}

inline const char* DTypeName(DType dtype) { return dtype == DType::kF32 ? "f32" : "bf16"; }

inline Tolerance ToleranceFor(DType dtype) {
  return dtype == DType::kF32 ? Tolerance::Fp32() : Tolerance::Bf16();
}

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_PAGED_KV_FIXTURE_H_
