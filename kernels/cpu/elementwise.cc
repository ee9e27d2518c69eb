#include "kernels/cpu/elementwise.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kv_layout.h"
#include "kernels/cpu/simd_math.h"

namespace glimpse::kernels::cpu {

void RmsNormRow(const float* x, const float* weight, int64_t dim, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(dim));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < dim; ++i) out[i] = (x[i] * scale) * weight[i];
}

void ApplyRope(const RopeParams& p) {
  const int32_t half = p.rot_dim / 2;
  const float theta_scale = std::pow(p.freq_base, -2.0f / static_cast<float>(p.rot_dim));
  std::vector<float> cos_cache(half), sin_cache(half);
  for (int32_t t = 0; t < p.num_tokens; ++t) {
    float theta = static_cast<float>(p.positions[t]);
    for (int32_t i = 0; i < half; ++i) {
      cos_cache[i] = std::cos(theta);
      sin_cache[i] = std::sin(theta);
      theta *= theta_scale;
    }
    for (int32_t h = 0; h < p.num_heads; ++h) {
      float* head = p.x + (static_cast<int64_t>(t) * p.num_heads + h) * p.head_dim;
      for (int32_t i = 0; i < half; ++i) {
        const int32_t a = p.style == RopeStyle::kNormal ? 2 * i : i;
        const int32_t b = p.style == RopeStyle::kNormal ? 2 * i + 1 : i + half;
        const float x0 = head[a];
        const float x1 = head[b];
        head[a] = x0 * cos_cache[i] - x1 * sin_cache[i];
        head[b] = x0 * sin_cache[i] + x1 * cos_cache[i];
      }
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + Exp1(-g)) * up[i];
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void StoreKv(const KvStoreParams& p, KvElementType kv_type) {
  WithKvElement(kv_type, [&](auto kv) {
    using Kv = decltype(kv);
    using E = typename Kv::Storage;
    const int32_t hd = p.kv.head_dim;
    const int32_t bs = p.kv.block_size;
    for (int32_t t = 0; t < p.num_tokens; ++t) {
      const int64_t block = p.slots[t] / bs;
      const int32_t slot = static_cast<int32_t>(p.slots[t] % bs);
      for (int32_t h = 0; h < p.kv.num_kv_heads; ++h) {
        const float* k = p.k + (static_cast<int64_t>(t) * p.kv.num_kv_heads + h) * hd;
        const float* v = p.v + (static_cast<int64_t>(t) * p.kv.num_kv_heads + h) * hd;
        E* key_tile = KeyTile<E>(p.kv, block, h);
        E* value_row = ValueTile<E>(p.kv, block, h) + static_cast<int64_t>(slot) * hd;
        for (int32_t d = 0; d < hd; ++d) {
          key_tile[static_cast<int64_t>(d) * bs + slot] = Kv::Store(k[d]);
          value_row[d] = Kv::Store(v[d]);
        }
      }
    }
  });
}

}  // namespace glimpse::kernels::cpu
