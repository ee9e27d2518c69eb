// Vectorised transcendental functions with bit-identical scalar twins. The scalar versions
// repeat the vector arithmetic operation for operation (same constants, same fma), so a
// value computed in a vector lane or in a scalar tail is the same bits — results never
// depend on where an element falls relative to a vector boundary.
#ifndef GLIMPSE_KERNELS_CPU_SIMD_MATH_H_
#define GLIMPSE_KERNELS_CPU_SIMD_MATH_H_

#include <immintrin.h>

#include <cmath>

namespace glimpse::kernels::cpu {

// exp(x) by Cody-Waite range reduction and a degree-7 polynomial (Cephes' expf);
// about 1 ulp on [-87, 88]; inputs are clamped to that range (exp(-inf) returns ~1e-38,
// which is what a softmax needs: nothing, and no NaN).
namespace exp_constants {
inline constexpr float kHi = 88.3762626647949f;
inline constexpr float kLo = -87.0f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kC1 = 0.693359375f;
inline constexpr float kC2 = -2.12194440e-4f;
inline constexpr float kP0 = 1.9875691500e-4f;
inline constexpr float kP1 = 1.3981999507e-3f;
inline constexpr float kP2 = 8.3334519073e-3f;
inline constexpr float kP3 = 4.1665795894e-2f;
inline constexpr float kP4 = 1.6666665459e-1f;
inline constexpr float kP5 = 5.0000001201e-1f;
}  // namespace exp_constants

inline __m256 Exp8(__m256 x) {
  using namespace exp_constants;
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kLo)), _mm256_set1_ps(kHi));
  const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kC1), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(kC2), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(kP0);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP1));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP2));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP3));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP4));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(kP5));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

inline float Exp1(float x) {
  using namespace exp_constants;
  x = std::fmin(std::fmax(x, kLo), kHi);
  const float fx = std::floor(std::fma(x, kLog2e, 0.5f));
  x = std::fma(-fx, kC1, x);
  x = std::fma(-fx, kC2, x);
  const float z = x * x;
  float y = kP0;
  y = std::fma(y, x, kP1);
  y = std::fma(y, x, kP2);
  y = std::fma(y, x, kP3);
  y = std::fma(y, x, kP4);
  y = std::fma(y, x, kP5);
  y = std::fma(y, z, x);
  y = y + 1.0f;
  const int n = (static_cast<int>(fx) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &n, sizeof(scale));
  return y * scale;
}

// Horizontal sum of 8 lanes in a fixed order: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
inline float HorizontalSum8(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace glimpse::kernels::cpu

#endif  // GLIMPSE_KERNELS_CPU_SIMD_MATH_H_
