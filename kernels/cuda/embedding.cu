#include "kernels/cuda/embedding.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/weight_widen.cuh"

namespace glimpse::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Grid: (num_ids). Block i writes row i of out.
__global__ void __launch_bounds__(kThreads)
    EmbeddingKernel(WeightFormat format, const uint8_t* table, int64_t num_rows, int64_t cols,
                    int64_t row_bytes, const int32_t* ids, float* out) {
  const int64_t i = blockIdx.x;
  const int32_t id = ids[i];
  float* out_row = out + i * cols;
  if (id < 0 || id >= num_rows) {
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) out_row[c] = __int_as_float(0x7fc00000);
    return;
  }
  const uint8_t* row = table + static_cast<int64_t>(id) * row_bytes;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    out_row[c] = internal::WidenWeight(format, row, c);
  }
}

}  // namespace

cudaError_t LaunchEmbedding(const EmbeddingParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_ids >= 0 && params.num_ids <= 0x7fffffff);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows > 0 && params.cols > 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.format != WeightFormat::kQ8_0 ||
                                 params.cols % kQ8_0BlockElements == 0);
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.format != WeightFormat::kF32 ||
                                 reinterpret_cast<uintptr_t>(params.table) % 4 == 0);
  if (params.num_ids == 0) return cudaSuccess;
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.table != nullptr && params.ids != nullptr &&
                                 params.out != nullptr);
  EmbeddingKernel<<<static_cast<unsigned>(params.num_ids), kThreads, 0, stream>>>(
      params.format, static_cast<const uint8_t*>(params.table), params.num_rows, params.cols,
      WeightRowBytes(params.format, params.cols), params.ids, params.out);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
