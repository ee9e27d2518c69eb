// Rotary position embedding from a host-computed (cos, sin) table, in place on fp32 heads:
// the CUDA backend's Rope, which must match the CPU backend and llama.cpp rather than be
// more accurate than them.
//
// Why a table and not rope.h: llama.cpp (and the CPU backend, kernels/cpu/elementwise.cc)
// build the angle of pair i in fp32 as  theta_0 = float(pos), theta_{i+1} = theta_i * s,
// s = powf(base, -2 / rot_dim),  then take cosf/sinf of it. rope.h computes the exact angle in
// double, which differs from that fp32 recurrence by ~1e-6 * pos radians (5e-4 at pos 500), far
// above fp32 rounding: CUDA and CPU outputs would disagree by more than the 1e-5 tolerance and
// greedy decoding could drift from the llama.cpp references. FillRopeCosSinTable runs the CPU
// backend's code on the host (same libm), once per step, and the kernel only applies it:
//
//   table[t][i] = (cos theta_i(pos_t), sin theta_i(pos_t))      fp32 [num_tokens][rot_dim/2][2]
//   kNormal: pairs (x[2i], x[2i+1]);  kNeox: pairs (x[i], x[i + rot_dim/2])
//   x'[a] = x[a] c - x[b] s;  x'[b] = x[a] s + x[b] c   (each product and sum rounded
//                                                       separately, no FMA contraction)
// Dimensions rot_dim .. head_dim-1 are left unchanged.
#ifndef GLIMPSE_KERNELS_CUDA_ROPE_TABLE_H_
#define GLIMPSE_KERNELS_CUDA_ROPE_TABLE_H_

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/dtype.h"
#include "kernels/cuda/rope.h"

namespace glimpse::kernels::cuda {

// Optional part of a RoPE launch whose second tensor (RopeTableParams::x2) is the tokens'
// keys: the same launch also writes the rotated keys and `v` into the paged KV cache (layout:
// kv_layout.h), as LaunchKvAppend of fp32 k and v would after the RoPE (the CUDA backend's
// decode graphs: one launch where there were two). x2 is still rotated in place.
struct RopeKvAppend {
  void* k_cache = nullptr;     // null: no append. [num_blocks][num_heads2][page_size][head_dim]
  void* v_cache = nullptr;     // [num_blocks][num_heads2][page_size][head_dim]
  DType dtype = DType::kBF16;  // the caches' (fp32 k and v round to the nearest bf16 into kBF16)
  int32_t page_size = 0;
  const float* v = nullptr;  // device, [num_tokens][num_heads2][head_dim] fp32
  // Flat slot of token t: page * page_size + slot; negative = skip (a padding token).
  const int32_t* slot_mapping = nullptr;  // device, [num_tokens]
};

struct RopeTableParams {
  float* x = nullptr;  // device, [num_tokens][num_heads][head_dim] fp32, rotated in place
  int32_t num_tokens = 0;
  int32_t num_heads = 0;
  int32_t head_dim = 0;
  int32_t rot_dim = 0;  // even, <= head_dim
  RopeStyle style = RopeStyle::kNormal;
  const float* cos_sin = nullptr;  // device, [num_tokens][rot_dim / 2][2] (cos, sin)
  // Optional: a second tensor of the same tokens, rotated by the same table in the same launch
  // (the CUDA backend's decode graphs rotate k with q): [num_tokens][num_heads2][head_dim],
  // not overlapping x.
  float* x2 = nullptr;
  int32_t num_heads2 = 0;
  RopeKvAppend kv_append;  // with x2 only
};

// One block per token, threads over (head, pair) of x, then of x2; with kv_append, then over
// (head, element) of v and of x2's unrotated dimensions.
cudaError_t LaunchRopeWithTable(const RopeTableParams& params, cudaStream_t stream);

// Host: fills table[num_tokens][rot_dim / 2][2] exactly as the CPU backend computes its angles
// (the same fp32 recurrence and libm calls; keep the two in step).
inline void FillRopeCosSinTable(const int32_t* positions, int32_t num_tokens, int32_t rot_dim,
                                float freq_base, float* table) {
  const int32_t half = rot_dim / 2;
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rot_dim));
  for (int32_t t = 0; t < num_tokens; ++t) {
    float theta = static_cast<float>(positions[t]);
    float* row = table + static_cast<int64_t>(t) * half * 2;
    for (int32_t i = 0; i < half; ++i) {
      row[2 * i] = std::cos(theta);
      row[2 * i + 1] = std::sin(theta);
      theta *= theta_scale;
    }
  }
}

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ROPE_TABLE_H_
