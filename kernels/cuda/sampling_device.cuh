// Block-wide device routines behind sampling.cu and verify_accept.cu (internal). Every
// function here must be called by all threads of a block of kSampleThreads threads; results
// are returned to every thread. Reductions use a fixed order, so results are deterministic.
#ifndef GLIMPSE_KERNELS_CUDA_SAMPLING_DEVICE_CUH_
#define GLIMPSE_KERNELS_CUDA_SAMPLING_DEVICE_CUH_

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/sampling.h"

namespace glimpse::kernels::cuda::internal {

constexpr int kSampleThreads = 512;

// Monotone map float -> uint32: a < b  <=>  FloatKey(a) < FloatKey(b) (no NaNs).
__device__ __forceinline__ uint32_t FloatKey(float x) {
  const uint32_t bits = __float_as_uint(x);
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

// Shared scratch of the routines below.
struct SampleScratch {
  float red[32];
  int32_t idx[32];
  int32_t claimed;
};

// Warp argmax: the largest value, lowest index on ties; returned to every lane.
__device__ __forceinline__ void WarpArgMax(float& v, int32_t& i) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, v, off);
    const int32_t oi = __shfl_xor_sync(kFullMask, i, off);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
}

// Block argmax: the largest value, lowest index on ties.
__device__ __forceinline__ void BlockArgMax(float& v, int32_t& i, SampleScratch& sc) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  WarpArgMax(v, i);
  __syncthreads();
  if (lane == 0) {
    sc.red[warp] = v;
    sc.idx[warp] = i;
  }
  __syncthreads();
  v = lane < kSampleThreads / 32 ? sc.red[lane] : -INFINITY;
  i = lane < kSampleThreads / 32 ? sc.idx[lane] : INT_MAX;
  WarpArgMax(v, i);
}

// Sum of exp(z' - max) over entries whose key is >= key.
__device__ __forceinline__ float MassAtLeast(const float* row, int32_t vocab, float temperature,
                                             float max_logit, uint32_t key, SampleScratch& sc) {
  float mass = 0.0f;
  for (int32_t x = threadIdx.x; x < vocab; x += kSampleThreads) {
    const float z = row[x] / temperature;
    if (FloatKey(z) >= key) mass += expf(z - max_logit);
  }
  return BlockSum(mass, sc.red);
}

// The processed distribution of one row (see SamplingRowStats). z' is always computed as
// row[x] / temperature with IEEE division, the same expression a CPU reference uses.
__device__ inline SamplingRowStats ComputeRowStats(const float* row, int32_t vocab,
                                                   float temperature, int32_t top_k,
                                                   float top_p, float min_p,
                                                   SampleScratch& sc) {
  SamplingRowStats st;
  st.greedy = temperature <= 0.0f ? 1 : 0;
  st.temperature = st.greedy ? 1.0f : temperature;
  float best = -INFINITY;
  int32_t best_idx = INT_MAX;
  for (int32_t x = threadIdx.x; x < vocab; x += kSampleThreads) {
    const float z = row[x] / st.temperature;
    if (z > best) {  // strided ascending scan: the first maximum of this thread wins
      best = z;
      best_idx = x;
    }
  }
  BlockArgMax(best, best_idx, sc);
  st.max_logit = best;
  st.argmax = best_idx;
  if (st.greedy) {
    st.threshold_key = FloatKey(best);
    st.sum_exp = 1.0f;
    return st;
  }
  uint32_t threshold = 0;
  if (top_k > 0 && top_k < vocab) {
    // Largest key t with #{key >= t} >= k, built bit by bit from the top: the k-th largest.
    // TODO(#5): 8-bit radix histograms would need 4 passes over the row instead of 32.
    uint32_t t = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = t | (1u << bit);
      float count = 0.0f;
      for (int32_t x = threadIdx.x; x < vocab; x += kSampleThreads) {
        count += FloatKey(row[x] / st.temperature) >= cand ? 1.0f : 0.0f;
      }
      count = BlockSum(count, sc.red);
      if (count >= static_cast<float>(top_k)) t = cand;
    }
    threshold = t;
  }
  if (top_p < 1.0f) {
    const float total = MassAtLeast(row, vocab, st.temperature, best, threshold, sc);
    const float target = top_p * total;
    uint32_t t = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t cand = t | (1u << bit);
      const uint32_t key = cand > threshold ? cand : threshold;
      if (MassAtLeast(row, vocab, st.temperature, best, key, sc) >= target) t = cand;
    }
    threshold = t > threshold ? t : threshold;
  }
  if (min_p > 0.0f) {
    const uint32_t key = FloatKey(best + logf(min_p));
    threshold = key > threshold ? key : threshold;
  }
  // The argmax is always kept (as in vLLM). Valid parameters never need this; top_p <= 0
  // (target mass 0 selects the empty set) or min_p > 1 would otherwise keep nothing: sum_exp
  // 0, NaN probabilities and a -1 token.
  const uint32_t best_key = FloatKey(best);
  threshold = threshold < best_key ? threshold : best_key;
  st.threshold_key = threshold;
  st.sum_exp = MassAtLeast(row, vocab, st.temperature, best, threshold, sc);
  return st;
}

// p(x) of a processed row (one thread).
__device__ __forceinline__ float RowProb(const float* row, const SamplingRowStats& st,
                                         int32_t x) {
  if (st.greedy) return x == st.argmax ? 1.0f : 0.0f;
  const float z = row[x] / st.temperature;
  return FloatKey(z) >= st.threshold_key ? expf(z - st.max_logit) / st.sum_exp : 0.0f;
}

__device__ __forceinline__ bool IsExcluded(int32_t x, const int32_t* excluded,
                                           int32_t num_excluded) {
  for (int32_t i = 0; i < num_excluded; ++i) {
    if (excluded[i] == x) return true;
  }
  return false;
}

// Inverse-CDF draw over the kept tokens not in `excluded` (shared memory, num_excluded
// entries): the first token in vocabulary order whose cumulative mass exceeds u * total.
// Each thread owns one contiguous slice of the vocabulary; slice sums are scanned in a fixed
// order. Returns -1 when no token is left (everything kept was excluded).
__device__ inline int32_t BlockSampleRow(const float* row, int32_t vocab,
                                         const SamplingRowStats& st, float u,
                                         const int32_t* excluded, int32_t num_excluded,
                                         SampleScratch& sc) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int32_t slice = (vocab + kSampleThreads - 1) / kSampleThreads;
  const int32_t begin = min(vocab, static_cast<int32_t>(threadIdx.x) * slice);
  const int32_t end = min(vocab, begin + slice);
  float own = 0.0f;
  int32_t last_kept = -1;
  for (int32_t x = begin; x < end; ++x) {
    const float z = row[x] / st.temperature;
    const bool kept = st.greedy ? x == st.argmax : FloatKey(z) >= st.threshold_key;
    if (kept && !IsExcluded(x, excluded, num_excluded)) {
      const float w = st.greedy ? 1.0f : expf(z - st.max_logit);
      own += w;
      if (w > 0.0f) last_kept = x;  // never a zero-mass token (-inf logit, underflow)
    }
  }
  // Exclusive scan of the slice sums: inclusive within each warp, then over warp totals.
  float incl = own;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const float y = __shfl_up_sync(kFullMask, incl, off);
    if (lane >= off) incl += y;
  }
  float excl_in_warp = __shfl_up_sync(kFullMask, incl, 1);
  if (lane == 0) excl_in_warp = 0.0f;
  __syncthreads();
  if (lane == 31) sc.red[warp] = incl;
  if (threadIdx.x == 0) sc.claimed = -1;
  __syncthreads();
  if (warp == 0) {
    float w = lane < kSampleThreads / 32 ? sc.red[lane] : 0.0f;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const float y = __shfl_up_sync(kFullMask, w, off);
      if (lane >= off) w += y;
    }
    if (lane < kSampleThreads / 32) sc.idx[lane] = __float_as_int(w);  // inclusive
  }
  __syncthreads();
  const float warp_prefix = warp == 0 ? 0.0f : __int_as_float(sc.idx[warp - 1]);
  const float total = __int_as_float(sc.idx[kSampleThreads / 32 - 1]);
  const float prefix = warp_prefix + excl_in_warp;
  const float target = u * total;
  // The slice holding the target: the last slice with mass whose prefix is <= target. (Testing
  // target < prefix + own as well would leave a target that falls between two slices, through
  // rounding of the fp32 scan, unclaimed.)
  if (own > 0.0f && prefix <= target) {
    atomicMax(&sc.claimed, static_cast<int32_t>(threadIdx.x));
  }
  __syncthreads();
  const int32_t owner = sc.claimed;
  if (static_cast<int32_t>(threadIdx.x) == owner) {
    float acc = prefix;
    int32_t pick = last_kept;  // rounding fall-through: the slice's last kept token
    for (int32_t x = begin; x < end; ++x) {
      const float z = row[x] / st.temperature;
      const bool kept = st.greedy ? x == st.argmax : FloatKey(z) >= st.threshold_key;
      if (!kept || IsExcluded(x, excluded, num_excluded)) continue;
      acc += st.greedy ? 1.0f : expf(z - st.max_logit);
      if (acc > target) {
        pick = x;
        break;
      }
    }
    sc.idx[0] = pick;  // every thread read sc.idx before the barrier above
  }
  __syncthreads();
  const int32_t token = owner >= 0 ? sc.idx[0] : -1;  // -1: nothing kept is left
  __syncthreads();  // everyone has read sc.idx[0] before the scratch is reused
  return token;
}

}  // namespace glimpse::kernels::cuda::internal

#endif  // GLIMPSE_KERNELS_CUDA_SAMPLING_DEVICE_CUH_
