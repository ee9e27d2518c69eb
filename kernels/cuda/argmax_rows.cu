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

// Grid: one block per row.
__global__ void __launch_bounds__(kThreads)
    ArgMaxRowsKernel(const float* __restrict__ x, int64_t cols, int32_t* __restrict__ index,
                     float* __restrict__ value) {
  __shared__ Best warp_best[kThreads / 32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  Best best{-INFINITY, INT_MAX};
  // Each thread keeps its first maximum in column order (strictly greater replaces).
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
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
  if (threadIdx.x == 0) {
    Best block = warp_best[0];
    for (int w = 1; w < kThreads / 32; ++w) block = Better(block, warp_best[w]);
    const bool none = block.column == INT_MAX;  // no value above -inf
    index[blockIdx.x] = none ? 0 : block.column;
    if (value != nullptr) value[blockIdx.x] = none ? -INFINITY : block.value;
  }
}

}  // namespace

cudaError_t LaunchArgMaxRows(const ArgMaxRowsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_rows <= INT_MAX &&
                                 params.cols > 0 && params.cols < INT_MAX);
  if (params.num_rows == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.index != nullptr);
  ArgMaxRowsKernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(
      params.x, params.cols, params.index, params.value);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
