// Row-wise and element-wise fp32 kernels of the CPU backend: RMSNorm, rotary embedding,
// SiLU-gated product, residual add, KV store (rounding into the cache's element type). Each row is
// computed by the same code in the same order whatever the batch, so results are batch-invariant.
// See kernels/backend.h for the parameter layouts.
#ifndef GLIMPSE_KERNELS_CPU_ELEMENTWISE_H_
#define GLIMPSE_KERNELS_CPU_ELEMENTWISE_H_

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/kv_layout.h"

namespace glimpse::kernels::cpu {

// Sum of squares accumulated in double, scale = 1/sqrt(mean + eps) in float (as llama.cpp).
void RmsNormRow(const float* x, const float* weight, int64_t dim, float eps, float* out);

// Rotates every head of every token in place. Angles follow llama.cpp: theta starts at the
// position and is multiplied by freq_base^(-2/rot_dim) per pair, in float.
void ApplyRope(const RopeParams& params);

void SiluMul(const float* gate, const float* up, int64_t n, float* out);
void AddInPlace(float* x, const float* y, int64_t n);
// params.kv holds elements of `kv_type`; each key and value is rounded to it.
void StoreKv(const KvStoreParams& params, KvElementType kv_type);

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_ELEMENTWISE_H_
