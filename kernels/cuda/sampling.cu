#include "kernels/cuda/sampling.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/sampling_device.cuh"

namespace glimpse::kernels::cuda {
namespace {

using internal::kSampleThreads;
using internal::SampleScratch;

// Grid: one block per row.
__global__ void __launch_bounds__(kSampleThreads)
    RowStatsKernel(const float* __restrict__ logits, int32_t vocab, SamplingConfig config,
                   SamplingRowStats* __restrict__ stats) {
  __shared__ SampleScratch sc;
  const int32_t row = blockIdx.x;
  const float temperature = config.temperature != nullptr ? config.temperature[row] : 1.0f;
  const int32_t top_k = config.top_k != nullptr ? config.top_k[row] : 0;
  const float top_p = config.top_p != nullptr ? config.top_p[row] : 1.0f;
  const float min_p = config.min_p != nullptr ? config.min_p[row] : 0.0f;
  const SamplingRowStats st =
      internal::ComputeRowStats(logits + static_cast<int64_t>(row) * vocab, vocab, temperature,
                                top_k, top_p, min_p, sc);
  if (threadIdx.x == 0) stats[row] = st;
}

// Grid: one block per row.
__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(const float* __restrict__ logits, int32_t vocab,
                 const SamplingRowStats* __restrict__ stats, const float* __restrict__ uniforms,
                 int32_t* __restrict__ tokens) {
  __shared__ SampleScratch sc;
  const int32_t row = blockIdx.x;
  const SamplingRowStats st = stats[row];
  const int32_t token = internal::BlockSampleRow(logits + static_cast<int64_t>(row) * vocab,
                                                 vocab, st, uniforms[row], nullptr, 0, sc);
  if (threadIdx.x == 0) tokens[row] = token;
}

}  // namespace

cudaError_t LaunchSample(const SampleParams& params, cudaStream_t stream) {
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.num_rows >= 0 && params.vocab > 0 &&
                                 params.vocab <= (1 << 24));
  GLIMPSE_CUDA_RETURN_IF_INVALID(params.logits != nullptr && params.uniforms != nullptr &&
                                 params.stats != nullptr && params.tokens != nullptr);
  if (params.num_rows == 0) return cudaSuccess;
  RowStatsKernel<<<params.num_rows, kSampleThreads, 0, stream>>>(params.logits, params.vocab,
                                                                 params.config, params.stats);
  GLIMPSE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  SampleKernel<<<params.num_rows, kSampleThreads, 0, stream>>>(
      params.logits, params.vocab, params.stats, params.uniforms, params.tokens);
  return cudaGetLastError();
}

}  // namespace glimpse::kernels::cuda
