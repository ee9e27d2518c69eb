#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/argmax_rows.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_utils.cuh"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// A candidate (value, column): only values above -inf are candidates (NaN and -inf never
// are), so the empty candidate (-inf, INT_MAX) loses to every real one.
struct Best {
  float value;
  int32_t column;
};

__device__ __forceinline__ Best Better(Best a, Best b) {
  return (b.value > a.value || (b.value == a.value && b.column < a.column)) ? b : a;
}

// The 64-bit key a split row's blocks take the atomic maximum of: 0 for no candidate; else
// the value's bits mapped to an unsigned order (negative values complemented, positive ones
// with the sign bit set; -0.0 taken as +0.0, which it equals), then the column's complement,
// so that of equal values the lowest column has the largest key.
__device__ __forceinline__ unsigned long long KeyOf(Best b) {
  if (b.column == INT_MAX) return 0ull;
  const unsigned bits = b.value == 0.0f ? 0u : __float_as_uint(b.value);
  const unsigned order = (bits & 0x80000000u) != 0u ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(order) << 32) |
         (0xFFFFFFFFu - static_cast<unsigned>(b.column));
}

__device__ __forceinline__ Best BestOf(unsigned long long key) {
  if (key == 0ull) return Best{-INFINITY, INT_MAX};
  const unsigned order = static_cast<unsigned>(key >> 32);
  const unsigned bits = (order & 0x80000000u) != 0u ? (order & 0x7FFFFFFFu) : ~order;
  return Best{__uint_as_float(bits),
              static_cast<int32_t>(0xFFFFFFFFu - static_cast<unsigned>(key))};
}

__device__ __forceinline__ void WriteResult(Best best, int64_t row, int32_t* index, float* value) {
  const bool none = best.column == INT_MAX;  // no value above -inf
  index[row] = none ? 0 : best.column;
  if (value != nullptr) value[row] = none ? -INFINITY : best.value;
}

// Grid: (rows, splits); block (r, s) reduces chunk s of row r (all of it when splits is 1).
__global__ void __launch_bounds__(kThreads)
    ArgMaxRowsKernel(const float* __restrict__ x, int64_t cols, int32_t* __restrict__ index,
                     float* __restrict__ value, unsigned long long* __restrict__ partial,
                     unsigned int* __restrict__ counters) {
  __shared__ Best warp_best[kThreads / 32];
  const int64_t row_index = blockIdx.x;
  const int splits = static_cast<int>(gridDim.y);
  const int64_t chunk = (cols + splits - 1) / splits;
  const int64_t begin = chunk * blockIdx.y;
  const int64_t end = begin + chunk < cols ? begin + chunk : cols;
  const float* row = x + row_index * cols;
  Best best{-INFINITY, INT_MAX};
  // Each thread keeps its first maximum in column order (strictly greater replaces).
  for (int64_t c = begin + threadIdx.x; c < end; c += kThreads) {
    const float v = row[c];
    if (v > best.value) best = {v, static_cast<int32_t>(c)};  // false for NaN and -inf
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Best other;
    other.value = __shfl_xor_sync(internal::kFullMask, best.value, offset);
    other.column = __shfl_xor_sync(internal::kFullMask, best.column, offset);
    best = Better(best, other);
  }
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) warp_best[warp] = best;
  __syncthreads();
  if (threadIdx.x != 0) return;
  Best block = warp_best[0];
  for (int w = 1; w < kThreads / 32; ++w) block = Better(block, warp_best[w]);
  if (splits == 1) {
    WriteResult(block, row_index, index, value);
    return;
  }
  atomicMax(&partial[row_index], KeyOf(block));
  __threadfence();  // the maximum above before the count below
  if (atomicAdd(&counters[row_index], 1u) + 1u != static_cast<unsigned>(splits)) return;
  // The row's last block: every other block's maximum is in (its fence came before its count).
  __threadfence();
  const unsigned long long key = atomicExch(&partial[row_index], 0ull);
  counters[row_index] = 0u;  // for the next launch, which the stream orders after this one
  WriteResult(BestOf(key), row_index, index, value);
}

}  // namespace

int32_t ArgMaxRowsSplits(int64_t num_rows, int64_t cols, int32_t num_sms) {
  if (num_rows <= 0 || cols <= 0 || num_sms <= 0) return 1;
  const int64_t by_size = cols / kMinArgMaxColsPerSplit;
  const int64_t by_batch = 2 * static_cast<int64_t>(num_sms) / num_rows;
  const int64_t splits = std::min({by_size, by_batch, static_cast<int64_t>(kMaxArgMaxSplits)});
  return splits >= 2 ? static_cast<int32_t>(splits) : 1;
}

cudaError_t LaunchArgMaxRows(const ArgMaxRowsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_rows <= INT_MAX &&
                                 params.cols > 0 && params.cols < INT_MAX && params.splits >= 1 &&
                                 params.splits <= kMaxArgMaxSplits && params.splits <= params.cols);
  if (params.num_rows == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.index != nullptr);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.splits == 1 ||
                                 (params.partial != nullptr && params.counters != nullptr));
  const dim3 grid(static_cast<unsigned>(params.num_rows), static_cast<unsigned>(params.splits));
  ArgMaxRowsKernel<<<grid, kThreads, 0, stream>>>(params.x, params.cols, params.index, params.value,
                                                  params.partial, params.counters);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
