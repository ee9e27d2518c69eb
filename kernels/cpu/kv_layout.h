// The CPU backend's KV layout within one layer, and the element types it can hold:
//
//   k[block][kv_head][head_dim][slot]   keys transposed inside a block, so the scores of one
//                                       query against a block are sums of contiguous rows
//   v[block][kv_head][slot][head_dim]   values by slot, so the output accumulates rows
//
// `slot` is the position within the block (position % block_size). Elements are fp32 (the
// default: exact), IEEE fp16 or bfloat16 (half the memory and the bytes each attention step
// streams; llama.cpp's default cache is fp16). A 16-bit cache rounds each key and value to
// nearest-even once, when it is stored; attention widens them back to fp32 exactly and computes
// in fp32 as before, so results stay batch-invariant.
#ifndef GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_
#define GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_

#include <immintrin.h>

#include <cstdint>

#include "common/float16.h"
#include "kernels/backend.h"

namespace glimpse::kernels::cpu {

enum class KvElementType { kF32, kF16, kBF16 };

// "fp32", "f16" or "bf16".
inline const char* KvElementTypeName(KvElementType type) {
  switch (type) {
    case KvElementType::kF16:
      return "f16";
    case KvElementType::kBF16:
      return "bf16";
    case KvElementType::kF32:
      break;
  }
  return "fp32";
}

// Bytes of one element of `type`.
inline size_t KvElementSize(KvElementType type) {
  return type == KvElementType::kF32 ? sizeof(float) : sizeof(uint16_t);
}

// How the kernels read and write one element type: Store rounds an fp32 value into the cache,
// Load widens it back (exactly), Load8 widens 8 consecutive elements into a vector.
struct F32Kv {
  using Storage = float;
  static float Store(float x) { return x; }
  static float Load(float e) { return e; }
  static __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
};

struct F16Kv {
  using Storage = uint16_t;
  static uint16_t Store(float x) { return FloatToHalf(x); }
  static float Load(uint16_t e) { return _cvtsh_ss(e); }
  static __m256 Load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

struct Bf16Kv {
  using Storage = uint16_t;
  static uint16_t Store(float x) { return FloatToBf16(x); }
  static float Load(uint16_t e) { return Bf16ToFloat(e); }
  static __m256 Load8(const uint16_t* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
};

// Start of the [head_dim][block_size] key tile of (block, kv_head), in elements of T.
template <class T = float>
T* KeyTile(const KvLayerView& kv, int64_t block, int32_t kv_head) {
  return static_cast<T*>(kv.k) +
         (block * kv.num_kv_heads + kv_head) * static_cast<int64_t>(kv.head_dim) * kv.block_size;
}

// Start of the [block_size][head_dim] value tile of (block, kv_head), in elements of T.
template <class T = float>
T* ValueTile(const KvLayerView& kv, int64_t block, int32_t kv_head) {
  return static_cast<T*>(kv.v) +
         (block * kv.num_kv_heads + kv_head) * static_cast<int64_t>(kv.head_dim) * kv.block_size;
}

// Calls f(Kv{}) with the element traits of `type` (F32Kv, F16Kv or Bf16Kv).
template <class F>
decltype(auto) WithKvElement(KvElementType type, F&& f) {
  switch (type) {
    case KvElementType::kF16:
      return f(F16Kv{});
    case KvElementType::kBF16:
      return f(Bf16Kv{});
    case KvElementType::kF32:
      break;
  }
  return f(F32Kv{});
}

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_KV_LAYOUT_H_
