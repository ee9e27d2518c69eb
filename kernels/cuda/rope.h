// Rotary position embedding, in place on the query and key heads of each token.
//
// Pair i (0 <= i < rot_dim/2) of every head of token t is rotated by
//   theta = positions[t] * freq_base^(-2i / rot_dim)
// Styles (llama.cpp's names):
//   kNormal: pairs (x[2i], x[2i+1])              (Llama GGUF)
//   kNeox:   pairs (x[i], x[i + rot_dim/2])      (NeoX, Qwen2, HF Llama)
//   x'[a] = x[a] cos(theta) - x[b] sin(theta);   x'[b] = x[a] sin(theta) + x[b] cos(theta)
// Dimensions rot_dim .. head_dim-1 are left unchanged.
//
// The angle and its sine/cosine are computed in double precision and rounded to fp32 once,
// so positions up to 2^24 stay accurate (an fp32 angle loses ~1e-3 rad at position 32k);
// llama.cpp computes theta in fp32, so results differ from it by that much at long contexts.
//
// dtypes: q and k both bf16 or both fp32; rotation arithmetic in fp32.
#ifndef GLIMPSE_KERNELS_CUDA_ROPE_H_
#define GLIMPSE_KERNELS_CUDA_ROPE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace glimpse::kernels::cuda {

enum class RopeStyle { kNormal, kNeox };

struct RopeParams {
  DType dtype = DType::kBF16;
  // Head h of token t starts at q + t * q_token_stride + h * head_dim (elements); likewise k.
  // Strides let the kernel rotate q and k inside one fused QKV projection output.
  void* q = nullptr;  // [num_tokens][q_token_stride], heads [num_q_heads][head_dim]; may be null
  void* k = nullptr;  // [num_tokens][k_token_stride], heads [num_k_heads][head_dim]; may be null
  int64_t q_token_stride = 0;
  int64_t k_token_stride = 0;
  int32_t num_q_heads = 0;
  int32_t num_k_heads = 0;
  const int32_t* positions = nullptr;  // device, [num_tokens], >= 0
  int32_t num_tokens = 0;
  int32_t head_dim = 0;
  int32_t rot_dim = 0;  // even, <= head_dim, <= 512
  float freq_base = 10000.0f;
  RopeStyle style = RopeStyle::kNormal;
};

// One block per token: the block computes the rot_dim/2 (cos, sin) pairs of its position once
// into shared memory and applies them to every q and k head of the token.
cudaError_t LaunchRope(const RopeParams& params, cudaStream_t stream);

}  // namespace glimpse::kernels::cuda

#endif  // GLIMPSE_KERNELS_CUDA_ROPE_H_
