#include "kernels/cuda/elementwise.h"

#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

int64_t NumBlocks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// No __restrict__ in this file: the backend runs SiluMul in place and AddInPlace may see
// y == x. Each element is read and written by one thread only, so aliasing is harmless.
__global__ void __launch_bounds__(kThreads) AddInPlaceKernel(float* x, const float* y,
                                                             int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    x[i] = __fadd_rn(x[i], y[i]);
  }
}

__global__ void __launch_bounds__(kThreads)
    SiluMulFlatKernel(const float* gate, const float* up, int64_t n, float* out,
                      __nv_bfloat16* out_bf16) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float g = gate[i];
    const float u = up[i];
    const float value = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
    out[i] = value;
    if (out_bf16 != nullptr) out_bf16[i] = __float2bfloat16_rn(value);
  }
}

// Grid: (num_rows).
__global__ void __launch_bounds__(kThreads)
    GatherRowsKernel(const float* __restrict__ x, int64_t dim, const int32_t* __restrict__ rows,
                     float* __restrict__ out) {
  const int64_t i = blockIdx.x;
  const float* src = x + static_cast<int64_t>(rows[i]) * dim;
  float* dst = out + i * dim;
  for (int64_t c = threadIdx.x; c < dim; c += kThreads) dst[c] = src[c];
}

// Narrow rows (dim < kThreads / 8, e.g. the single logits a biased row's tokens gather):
// one thread per output element instead of a block per row, most of whose threads would idle.
// Grid: NumBlocks(num_rows * dim), grid-stride.
__global__ void __launch_bounds__(kThreads)
    GatherNarrowRowsKernel(const float* __restrict__ x, int64_t dim,
                           const int32_t* __restrict__ rows, int64_t n, float* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t i = e / dim;
    out[e] = x[static_cast<int64_t>(rows[i]) * dim + (e - i * dim)];
  }
}

}  // namespace

cudaError_t LaunchAddInPlace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(n >= 0);
  if (n == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(x != nullptr && y != nullptr);
  AddInPlaceKernel<<<NumBlocks(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchSiluMulFlat(const float* gate, const float* up, int64_t n, float* out,
                              cudaStream_t stream, void* out_bf16) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(n >= 0);
  if (n == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(gate != nullptr && up != nullptr && out != nullptr);
  SiluMulFlatKernel<<<NumBlocks(n), kThreads, 0, stream>>>(gate, up, n, out,
                                                           static_cast<__nv_bfloat16*>(out_bf16));
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.num_rows <= 0x7fffffff &&
                                 params.dim > 0);
  if (params.num_rows == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.x != nullptr && params.rows != nullptr &&
                                 params.out != nullptr);
  if (params.dim < kThreads / 8) {
    const int64_t n = params.num_rows * params.dim;
    GatherNarrowRowsKernel<<<NumBlocks(n), kThreads, 0, stream>>>(params.x, params.dim, params.rows,
                                                                  n, params.out);
    return cudaGetLastError();
  }
  GatherRowsKernel<<<static_cast<unsigned>(params.num_rows), kThreads, 0, stream>>>(
      params.x, params.dim, params.rows, params.out);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
