#include <climits>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/topk_rows.h"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;  // one 8-bit digit of a 32-bit key
constexpr int kScanWarps = kBins / 32;

// An order-preserving key: for floats a, b above -inf, a > b iff Key(a) > Key(b), and a == b
// iff the keys are equal (-0 is folded into +0, as the comparisons see them). 0 marks what is
// never chosen (NaN, -inf); every other value maps above it.
__device__ __forceinline__ uint32_t Key(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u || u == 0xff800000u) return 0;  // NaN, -inf
  if (u == 0x80000000u) u = 0;                                        // -0 → +0
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

// exp((v - max) / temperature) in double, rounded to fp32 once: the fp32 exp the host sums,
// correctly rounded. The difference and the division are fp32, as on the host.
__device__ __forceinline__ double Weight(float v, float max, float temperature) {
  return static_cast<float>(exp(static_cast<double>((v - max) / temperature)));
}

// The row's softmax normalizer (topk_rows.h), written by thread 0, and its sum at temperature
// 1 when row_exp_sum_t1 is not null. Every thread calls it.
__device__ void WriteRowNormalizer(const float* __restrict__ row, int64_t cols, float temperature,
                                   float* __restrict__ row_max, double* __restrict__ row_exp_sum,
                                   double* __restrict__ row_exp_sum_t1) {
  __shared__ float max_scratch[32];
  __shared__ double sum_scratch[32];
  float max = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) max = fmaxf(max, row[c]);  // skips NaN
  max = internal::BlockMax(max, max_scratch);
  const bool at_1 = row_exp_sum_t1 != nullptr;
  double sum = 0.0;
  double sum_t1 = 0.0;
  if (max == INFINITY) {
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) sum += row[c] == INFINITY ? 1.0 : 0.0;
    sum_t1 = sum;
  } else if (max != -INFINITY) {
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float v = row[c];
      if (v > -INFINITY) {  // skips -inf and NaN
        sum += Weight(v, max, temperature);
        if (at_1) sum_t1 += Weight(v, max, 1.0f);
      }
    }
  }
  sum = internal::BlockSum(sum, sum_scratch);
  if (at_1) sum_t1 = internal::BlockSum(sum_t1, sum_scratch);  // uniform branch
  if (threadIdx.x == 0) {
    row_max[blockIdx.x] = max;
    row_exp_sum[blockIdx.x] = sum;
    if (at_1) row_exp_sum_t1[blockIdx.x] = sum_t1;
  }
}

// Grid: one block per row.
__global__ void __launch_bounds__(kThreads)
    TopKRowsKernel(const float* __restrict__ x, int64_t cols, int32_t k,
                   int32_t* __restrict__ count, int32_t* __restrict__ index,
                   float* __restrict__ value, float* __restrict__ row_max,
                   double* __restrict__ row_exp_sum, const float* __restrict__ temperature,
                   double* __restrict__ row_exp_sum_t1) {
  __shared__ uint32_t histogram[kBins];
  __shared__ uint32_t scan_totals[kScanWarps];
  __shared__ uint32_t chosen_digit, chosen_rank, num_candidates;
  __shared__ uint32_t warp_greater[kWarps], warp_equal[kWarps];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const uint32_t wanted = static_cast<uint32_t>(k);
  if (row_max != nullptr) {
    WriteRowNormalizer(row, cols, temperature == nullptr ? 1.0f : temperature[blockIdx.x], row_max,
                       row_exp_sum, row_exp_sum_t1);
  }

  // 1. Radix select, most significant digit first: the k-th largest key (`threshold`) and how
  //    many of the keys equal to it are taken (`take_equal`, the lowest columns among them).
  //    With no more than k candidates at all, every candidate is taken (threshold 0).
  uint32_t prefix = 0;
  uint32_t prefix_mask = 0;
  uint32_t rank = wanted;  // the wanted key is the rank-th largest of those matching prefix
  bool take_all = false;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = static_cast<int>(threadIdx.x); b < kBins; b += kThreads) histogram[b] = 0;
    __syncthreads();
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const uint32_t key = Key(row[c]);
      if (key != 0 && (key & prefix_mask) == prefix) {
        atomicAdd(&histogram[(key >> shift) & 0xffu], 1u);
      }
    }
    __syncthreads();
    // Thread t < 256 counts the keys whose digit is >= 255 - t (an inclusive scan over the
    // digits from the largest down); the digit where that count first reaches `rank` is the
    // wanted key's.
    uint32_t own = 0;
    uint32_t at_least = 0;
    if (threadIdx.x < kBins) {
      own = histogram[kBins - 1 - threadIdx.x];
      at_least = own;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const uint32_t below = __shfl_up_sync(internal::kFullMask, at_least, offset);
        if (lane >= offset) at_least += below;
      }
      if (lane == 31) scan_totals[warp] = at_least;
    }
    __syncthreads();
    if (threadIdx.x < kBins) {
      for (int w = 0; w < warp; ++w) at_least += scan_totals[w];
      const uint32_t above = at_least - own;
      if (above < rank && rank <= at_least) {
        chosen_digit = static_cast<uint32_t>(kBins - 1) - threadIdx.x;
        chosen_rank = rank - above;
      }
      if (shift == 24 && threadIdx.x == kBins - 1) num_candidates = at_least;
    }
    __syncthreads();
    if (shift == 24 && num_candidates <= wanted) {  // the same for every thread
      take_all = true;
      break;
    }
    prefix |= chosen_digit << shift;
    prefix_mask |= 0xffu << shift;
    rank = chosen_rank;
  }
  const uint32_t threshold = take_all ? 0 : prefix;
  const uint32_t take_equal = take_all ? 0 : rank;

  // 2. Write the chosen columns in column order. Warp w owns a contiguous chunk of the row;
  //    it counts its chosen entries, then writes them after those of the warps before it.
  const int64_t chunk = ((cols + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int64_t begin = warp * chunk;
  const int64_t end = begin + chunk < cols ? begin + chunk : cols;
  uint32_t greater = 0;
  uint32_t equal = 0;
  for (int64_t base = begin; base < end; base += 32) {
    const int64_t c = base + lane;
    const uint32_t key = c < end ? Key(row[c]) : 0;
    greater += __popc(__ballot_sync(internal::kFullMask, key > threshold));
    equal += __popc(__ballot_sync(internal::kFullMask, threshold != 0 && key == threshold));
  }
  if (lane == 0) {
    warp_greater[warp] = greater;
    warp_equal[warp] = equal;
  }
  __syncthreads();
  uint32_t equal_before = 0;  // keys equal to the threshold in lower columns
  uint32_t written = 0;       // entries chosen in lower columns
  for (int w = 0; w < warp; ++w) {
    written += warp_greater[w];
    equal_before += warp_equal[w];
  }
  written += equal_before < take_equal ? equal_before : take_equal;
  const uint32_t lanes_below = (1u << lane) - 1u;
  int32_t* row_index = index + static_cast<int64_t>(blockIdx.x) * k;
  float* row_value = value == nullptr ? nullptr : value + static_cast<int64_t>(blockIdx.x) * k;
  for (int64_t base = begin; base < end; base += 32) {
    const int64_t c = base + lane;
    const float v = c < end ? row[c] : 0.0f;
    const uint32_t key = c < end ? Key(v) : 0;
    const bool is_equal = threshold != 0 && key == threshold;
    const uint32_t equal_mask = __ballot_sync(internal::kFullMask, is_equal);
    const bool take = key > threshold ||
                      (is_equal && equal_before + __popc(equal_mask & lanes_below) < take_equal);
    const uint32_t take_mask = __ballot_sync(internal::kFullMask, take);
    if (take) {
      const uint32_t slot = written + __popc(take_mask & lanes_below);
      row_index[slot] = static_cast<int32_t>(c);
      if (row_value != nullptr) row_value[slot] = v;
    }
    written += __popc(take_mask);
    equal_before += __popc(equal_mask);
  }
  if (threadIdx.x == 0) {
    count[blockIdx.x] = static_cast<int32_t>(take_all ? num_candidates : wanted);
  }
}

}  // namespace

cudaError_t LaunchTopKRows(const TopKRowsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_rows <= INT_MAX &&
                                 params.cols > 0 && params.cols < INT_MAX && params.k >= 1);
  if (params.num_rows == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.count != nullptr &&
                                 params.index != nullptr &&
                                 (params.row_max == nullptr) == (params.row_exp_sum == nullptr) &&
                                 (params.temperature == nullptr || params.row_max != nullptr) &&
                                 (params.row_exp_sum_t1 == nullptr || params.row_max != nullptr));
  TopKRowsKernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(
      params.x, params.cols, params.k, params.count, params.index, params.value, params.row_max,
      params.row_exp_sum, params.temperature, params.row_exp_sum_t1);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
