// Host-side random weights in the model file's formats (weight_format.h) and their exact fp32
// values, for the weight conversion and embedding tests. Values are drawn as the storage
// format's own bits (finite fp16/bf16, random Q8_0 scales and int8 quants), so the widened
// reference is exact and never zero-filled.
#ifndef GLIMPSE_KERNELS_CUDA_TESTING_WEIGHT_FIXTURE_H_
#define GLIMPSE_KERNELS_CUDA_TESTING_WEIGHT_FIXTURE_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/testing/test_harness.h"
#include "kernels/cuda/weight_format.h"

namespace glimpse::kernels::cuda::testing {

// IEEE binary16 bits -> float, exact (subnormals included).
inline float HalfBitsToFloatHost(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  float v;
  if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    v = mantissa == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  }
  return (h & 0x8000) ? -v : v;
}

// Random finite binary16 bits with magnitude in about [2^-20, 2^4] (subnormals included).
inline uint16_t RandomHalfBits() {
  const uint16_t sign = static_cast<uint16_t>(RandomInt(0, 1) << 15);
  const uint16_t exponent = static_cast<uint16_t>(RandomInt(0, 19));
  const uint16_t mantissa = static_cast<uint16_t>(RandomInt(0, 1023));
  return static_cast<uint16_t>(sign | (exponent << 10) | mantissa);
}

struct HostWeights {
  WeightFormat format = WeightFormat::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> bytes;  // [rows][WeightRowBytes(format, cols)], as in the file
  std::vector<float> values;   // [rows][cols], exact fp32 widening
};

inline HostWeights MakeRandomWeights(WeightFormat format, int64_t rows, int64_t cols) {
  HostWeights w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  const int64_t row_bytes = WeightRowBytes(format, cols);
  w.bytes.resize(static_cast<size_t>(rows * row_bytes));
  w.values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = w.bytes.data() + r * row_bytes;
    float* val = w.values.data() + r * cols;
    switch (format) {
      case WeightFormat::kF32: {
        const std::vector<float> v = RandomNormal(static_cast<size_t>(cols), 0.0f, 1.0f);
        std::memcpy(row, v.data(), cols * 4);
        std::memcpy(val, v.data(), cols * 4);
        break;
      }
      case WeightFormat::kF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = RandomHalfBits();
          std::memcpy(row + 2 * c, &h, 2);
          val[c] = HalfBitsToFloatHost(h);
        }
        break;
      case WeightFormat::kBF16: {
        const std::vector<float> v = RandomNormal(static_cast<size_t>(cols), 0.0f, 1.0f);
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t b = FloatToBf16(v[c]);
          std::memcpy(row + 2 * c, &b, 2);
          val[c] = Bf16ToFloat(b);
        }
        break;
      }
      case WeightFormat::kQ8_0:
        for (int64_t b = 0; b < cols / kQ8_0BlockElements; ++b) {
          uint8_t* block = row + b * kQ8_0BlockBytes;
          // Scales of real Q8_0 tensors: max|w| / 127, here about 1e-4 .. 1e-1.
          const uint16_t d = static_cast<uint16_t>(RandomInt(0x0700, 0x2e66));
          std::memcpy(block, &d, 2);
          const float scale = HalfBitsToFloatHost(d);
          for (int64_t i = 0; i < kQ8_0BlockElements; ++i) {
            const auto q = static_cast<int8_t>(RandomInt(-127, 127));
            block[2 + i] = static_cast<uint8_t>(q);
            val[b * kQ8_0BlockElements + i] = static_cast<float>(q) * scale;
          }
        }
        break;
    }
  }
  return w;
}

inline const char* FormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kQ8_0:
      return "q8_0";
  }
  return "?";
}

}  // namespace glimpse::kernels::cuda::testing

#endif  // GLIMPSE_KERNELS_CUDA_TESTING_WEIGHT_FIXTURE_H_
