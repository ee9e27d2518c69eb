#include <algorithm>
#include <climits>
#include <cmath>
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

// The largest of v[0, n) (NaN ignored; -inf when there is none). Every thread calls it and
// gets it.
__device__ float RangeMax(const float* __restrict__ v, int64_t n) {
  __shared__ float max_scratch[32];
  float max = -INFINITY;
  for (int64_t c = threadIdx.x; c < n; c += kThreads) max = fmaxf(max, v[c]);  // skips NaN
  return internal::BlockMax(max, max_scratch);
}

// The softmax normalizer's sum over v[0, n) given the row's maximum `max` (topk_rows.h): at
// `temperature` into *sum and, when sum_t1 is not null, at 1 into *sum_t1. Every thread calls
// it and gets them.
__device__ void RangeExpSums(const float* __restrict__ v, int64_t n, float max, float temperature,
                             double* sum_out, double* sum_t1_out) {
  __shared__ double sum_scratch[32];
  const bool at_1 = sum_t1_out != nullptr;
  double sum = 0.0;
  double sum_t1 = 0.0;
  if (max == INFINITY) {
    for (int64_t c = threadIdx.x; c < n; c += kThreads) sum += v[c] == INFINITY ? 1.0 : 0.0;
    sum_t1 = sum;
  } else if (max != -INFINITY) {
    for (int64_t c = threadIdx.x; c < n; c += kThreads) {
      const float x = v[c];
      if (x > -INFINITY) {  // skips -inf and NaN
        sum += Weight(x, max, temperature);
        if (at_1) sum_t1 += Weight(x, max, 1.0f);
      }
    }
  }
  *sum_out = internal::BlockSum(sum, sum_scratch);
  if (at_1) *sum_t1_out = internal::BlockSum(sum_t1, sum_scratch);  // uniform branch
}

// Entries a selection reads, in column order: values[i] at column columns[i], or at
// first_column + i when columns is null (a run of a row).
struct Entries {
  const float* __restrict__ values = nullptr;
  const int32_t* __restrict__ columns = nullptr;
  int64_t n = 0;
  int64_t first_column = 0;
  __device__ int32_t Column(int64_t i) const {
    return columns != nullptr ? columns[i] : static_cast<int32_t>(first_column + i);
  }
};

// The top k of `in` (topk_rows.h's order; ties at the k-th value to the entries first in
// `in`, which are the lowest columns) written as index[j], value[j] (value may be null) for
// j < the returned count, in the order of `in`. Every thread of the block calls it and gets
// the count.
__device__ uint32_t SelectTopK(const Entries& in, int32_t k, int32_t* __restrict__ index,
                               float* __restrict__ value) {
  __shared__ uint32_t histogram[kBins];
  __shared__ uint32_t scan_totals[kScanWarps];
  __shared__ uint32_t chosen_digit, chosen_rank, num_candidates;
  __shared__ uint32_t warp_greater[kWarps], warp_equal[kWarps];
  const float* __restrict__ row = in.values;
  const int64_t cols = in.n;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const uint32_t wanted = static_cast<uint32_t>(k);

  // 1. Radix select, most significant digit first: the k-th largest key (`threshold`) and how
  //    many of the keys equal to it are taken (`take_equal`, the first of them).
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

  // 2. Write the chosen entries in order. Warp w owns a contiguous chunk of the entries; it
  //    counts its chosen ones, then writes them after those of the warps before it.
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
  uint32_t equal_before = 0;  // keys equal to the threshold in earlier entries
  uint32_t written = 0;       // entries chosen among earlier entries
  for (int w = 0; w < warp; ++w) {
    written += warp_greater[w];
    equal_before += warp_equal[w];
  }
  written += equal_before < take_equal ? equal_before : take_equal;
  const uint32_t lanes_below = (1u << lane) - 1u;
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
      index[slot] = in.Column(c);
      if (value != nullptr) value[slot] = v;
    }
    written += __popc(take_mask);
    equal_before += __popc(equal_mask);
  }
  return take_all ? num_candidates : wanted;
}

// Grid: one block per row (splits 1).
__global__ void __launch_bounds__(kThreads)
    TopKRowsKernel(const float* __restrict__ x, int64_t cols, int32_t k,
                   int32_t* __restrict__ count, int32_t* __restrict__ index,
                   float* __restrict__ value, float* __restrict__ row_max,
                   double* __restrict__ row_exp_sum, const float* __restrict__ temperature,
                   double* __restrict__ row_exp_sum_t1) {
  const int64_t r = blockIdx.x;
  const float* row = x + r * cols;
  if (row_max != nullptr) {
    const float max = RangeMax(row, cols);
    double sum = 0.0;
    double sum_t1 = 0.0;
    RangeExpSums(row, cols, max, temperature == nullptr ? 1.0f : temperature[r], &sum,
                 row_exp_sum_t1 != nullptr ? &sum_t1 : nullptr);
    if (threadIdx.x == 0) {
      row_max[r] = max;
      row_exp_sum[r] = sum;
      if (row_exp_sum_t1 != nullptr) row_exp_sum_t1[r] = sum_t1;
    }
  }
  Entries in;
  in.values = row;
  in.n = cols;
  const uint32_t n = SelectTopK(in, k, index + r * k, value == nullptr ? nullptr : value + r * k);
  if (threadIdx.x == 0) count[r] = static_cast<int32_t>(n);
}

// The split launch's workspace (TopKRowsWorkspaceBytes), for rows x splits chunks c = row *
// splits + s: [c] double sums and sums at 1, [c] fp32 maxima, [c][k] fp32 values and [c][k]
// int32 columns of the chunk's top k, in column order, padded with -inf (never chosen).
struct SplitWorkspace {
  double* sum;
  double* sum_t1;
  float* max;
  float* value;
  int32_t* index;
  __device__ SplitWorkspace(void* base, int64_t chunks, int32_t k) {
    sum = static_cast<double*>(base);
    sum_t1 = sum + chunks;
    max = reinterpret_cast<float*>(sum_t1 + chunks);
    value = max + chunks;
    index = reinterpret_cast<int32_t*>(value + chunks * k);
  }
};

// Chunk s of a row: columns [s * width, min((s + 1) * width, cols)), maybe empty.
__device__ __forceinline__ void ChunkOf(int64_t cols, int32_t splits, int64_t s, int64_t* begin,
                                        int64_t* n) {
  const int64_t width = (cols + splits - 1) / splits;
  *begin = s * width < cols ? s * width : cols;
  *n = (*begin + width < cols ? *begin + width : cols) - *begin;
}

// Grid: one block per chunk (row * splits + s): the chunk's maximum (with the normalizers) and
// its top k into the workspace, padded to k with -inf.
__global__ void __launch_bounds__(kThreads)
    TopKChunksKernel(const float* __restrict__ x, int64_t cols, int32_t k, int32_t splits,
                     void* workspace, int64_t num_chunks, bool normalizers) {
  const SplitWorkspace ws(workspace, num_chunks, k);
  const int64_t c = blockIdx.x;
  int64_t begin = 0;
  int64_t n = 0;
  ChunkOf(cols, splits, c % splits, &begin, &n);
  const float* chunk = x + (c / splits) * cols + begin;
  if (normalizers) {
    const float max = RangeMax(chunk, n);
    if (threadIdx.x == 0) ws.max[c] = max;
  }
  Entries in;
  in.values = chunk;
  in.n = n;
  in.first_column = begin;
  const uint32_t taken = SelectTopK(in, k, ws.index + c * k, ws.value + c * k);
  for (int64_t j = taken + threadIdx.x; j < k; j += kThreads) ws.value[c * k + j] = -INFINITY;
}

// Grid: one block per chunk, with the normalizers only: the chunk's exp sums at the row's
// maximum (the largest of its chunks').
__global__ void __launch_bounds__(kThreads)
    TopKChunkSumsKernel(const float* __restrict__ x, int64_t cols, int32_t k, int32_t splits,
                        void* workspace, int64_t num_chunks, const float* __restrict__ temperature,
                        bool sums_t1) {
  const SplitWorkspace ws(workspace, num_chunks, k);
  const int64_t c = blockIdx.x;
  const int64_t r = c / splits;
  float max = -INFINITY;
  for (int32_t s = 0; s < splits; ++s) max = fmaxf(max, ws.max[r * splits + s]);
  int64_t begin = 0;
  int64_t n = 0;
  ChunkOf(cols, splits, c % splits, &begin, &n);
  double sum = 0.0;
  double sum_t1 = 0.0;
  RangeExpSums(x + r * cols + begin, n, max, temperature == nullptr ? 1.0f : temperature[r], &sum,
               sums_t1 ? &sum_t1 : nullptr);
  if (threadIdx.x == 0) {
    ws.sum[c] = sum;
    ws.sum_t1[c] = sum_t1;
  }
}

// Grid: one block per row: the top k of its chunks' candidates (in column order, chunk after
// chunk), and its normalizers from the chunks' (the sums added in chunk order).
__global__ void __launch_bounds__(kThreads)
    TopKMergeKernel(int32_t k, int32_t splits, const void* workspace, int64_t num_chunks,
                    int32_t* __restrict__ count, int32_t* __restrict__ index,
                    float* __restrict__ value, float* __restrict__ row_max,
                    double* __restrict__ row_exp_sum, double* __restrict__ row_exp_sum_t1) {
  const SplitWorkspace ws(const_cast<void*>(workspace), num_chunks, k);
  const int64_t r = blockIdx.x;
  const int64_t first = r * splits;
  if (row_max != nullptr && threadIdx.x == 0) {
    float max = -INFINITY;
    double sum = 0.0;
    double sum_t1 = 0.0;
    for (int32_t s = 0; s < splits; ++s) {
      max = fmaxf(max, ws.max[first + s]);
      sum += ws.sum[first + s];
      sum_t1 += ws.sum_t1[first + s];
    }
    row_max[r] = max;
    row_exp_sum[r] = sum;
    if (row_exp_sum_t1 != nullptr) row_exp_sum_t1[r] = sum_t1;
  }
  Entries in;
  in.values = ws.value + first * k;
  in.columns = ws.index + first * k;
  in.n = static_cast<int64_t>(splits) * k;
  const uint32_t n = SelectTopK(in, k, index + r * k, value == nullptr ? nullptr : value + r * k);
  if (threadIdx.x == 0) count[r] = static_cast<int32_t>(n);
}

}  // namespace

int32_t TopKRowsSplits(int64_t num_rows, int64_t cols, int32_t k, int32_t num_sms) {
  if (num_rows <= 0 || cols <= 0 || k <= 0 || num_sms <= 0) return 1;
  const int64_t by_size = static_cast<int64_t>(std::sqrt(static_cast<double>(cols) / k));
  const int64_t by_batch = 2 * static_cast<int64_t>(num_sms) / num_rows;
  const int64_t splits = std::min({by_size, by_batch, static_cast<int64_t>(kMaxTopKSplits)});
  return splits >= 2 ? static_cast<int32_t>(splits) : 1;
}

size_t TopKRowsWorkspaceBytes(int64_t num_rows, int32_t splits, int32_t k) {
  if (splits <= 1 || num_rows <= 0 || k <= 0) return 0;
  return static_cast<size_t>(num_rows) * static_cast<size_t>(splits) *
         (size_t{20} + size_t{8} * static_cast<size_t>(k));
}

cudaError_t LaunchTopKRows(const TopKRowsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_rows <= INT_MAX &&
                                 params.cols > 0 && params.cols < INT_MAX && params.k >= 1 &&
                                 params.splits >= 1 && params.splits <= kMaxTopKSplits);
  if (params.num_rows == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.count != nullptr &&
                                 params.index != nullptr &&
                                 (params.row_max == nullptr) == (params.row_exp_sum == nullptr) &&
                                 (params.temperature == nullptr || params.row_max != nullptr) &&
                                 (params.row_exp_sum_t1 == nullptr || params.row_max != nullptr));
  if (params.splits == 1) {
    TopKRowsKernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(
        params.x, params.cols, params.k, params.count, params.index, params.value, params.row_max,
        params.row_exp_sum, params.temperature, params.row_exp_sum_t1);
    return cudaGetLastError();
  }
  const int64_t chunks = params.num_rows * params.splits;
  GLIMPSE_CUDA_RETURN_IF_INVALID(
      chunks <= INT_MAX && params.workspace != nullptr &&
      params.workspace_bytes >= TopKRowsWorkspaceBytes(params.num_rows, params.splits, params.k));
  const bool normalizers = params.row_max != nullptr;
  TopKChunksKernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(
      params.x, params.cols, params.k, params.splits, params.workspace, chunks, normalizers);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  if (normalizers) {
    TopKChunkSumsKernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(
        params.x, params.cols, params.k, params.splits, params.workspace, chunks,
        params.temperature, params.row_exp_sum_t1 != nullptr);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  TopKMergeKernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(
      params.k, params.splits, params.workspace, chunks, params.count, params.index, params.value,
      params.row_max, params.row_exp_sum, params.row_exp_sum_t1);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
