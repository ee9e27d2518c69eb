// Small fp32 element-wise kernels of the CUDA backend (the Backend ops the fused kernels of
// this package do not cover):
//
//   LaunchAddInPlace:  x[i] += y[i]                               i < n
//   LaunchSiluMulFlat: out[i] = silu(gate[i]) * up[i]             i < n; out may alias gate
//                      or up (the forward pass runs it in place), which silu_mul.h's
//                      __restrict__ row kernel does not allow; and, when out_bf16 is not
//                      null, out_bf16[i] = out[i] rounded to bf16 (nearest even, as
//                      LaunchCastF32ToBf16), for the bf16 matmul that reads it
//   LaunchGatherRows:  out[i][:] = x[rows[i]][:]                  i < num_rows (a block a
//                      row; a thread an element for rows narrower than 32 floats)
//
// silu(g) = g / (1 + exp(-g)), evaluated as (g / (1 + expf(-g))) * up, the CPU backend's order.
// All pointers are device memory; n and row counts may exceed 2^31.
#ifndef GLIMPSE_KERNELS_CUDA_ELEMENTWISE_H_
#define GLIMPSE_KERNELS_CUDA_ELEMENTWISE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace glimpse::kernels::cuda {

// x: [n] fp32, updated in place; y: [n] fp32 (may equal x).
cudaError_t LaunchAddInPlace(float* x, const float* y, int64_t n, cudaStream_t stream);

// gate, up, out: [n] fp32; out_bf16: null or [n] bf16, not overlapping the others.
cudaError_t LaunchSiluMulFlat(const float* gate, const float* up, int64_t n, float* out,
                              cudaStream_t stream, void* out_bf16 = nullptr);

struct GatherRowsParams {
  const float* x = nullptr;        // [>= max(rows) + 1][dim] fp32
  int64_t dim = 0;
  const int32_t* rows = nullptr;   // device, [num_rows], each >= 0
  int64_t num_rows = 0;
  float* out = nullptr;            // [num_rows][dim] fp32; may not overlap x
};

// One block per output row.
cudaError_t LaunchGatherRows(const GatherRowsParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ELEMENTWISE_H_
