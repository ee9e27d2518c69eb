#include "model/quantize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"

namespace glimpse::model {
namespace {

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; the encoders copy host words as they are");

void PutU16(uint16_t v, uint8_t* dst) { std::memcpy(dst, &v, sizeof(v)); }

uint16_t GetU16(const uint8_t* src) {
  uint16_t v;
  std::memcpy(&v, src, sizeof(v));
  return v;
}

// llama.cpp's quantize_row_q8_0_ref for one block of 32 values.
void QuantizeBlockQ8_0(const float* x, uint8_t* block) {
  float amax = 0.0f;
  for (int j = 0; j < kQ8_0BlockSize; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutU16(FloatToHalf(d), block);
  for (int j = 0; j < kQ8_0BlockSize; ++j) {
    const auto q = static_cast<int8_t>(std::round(x[j] * id));
    std::memcpy(block + 2 + j, &q, 1);
  }
}

}  // namespace

absl::Status AppendEncoded(std::span<const float> values, GgmlType type,
                           std::vector<uint8_t>* out) {
  const uint64_t n = values.size();
  if (n % GgmlBlockSize(type) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot encode ", n, " values as ", Sv(GgmlTypeName(type)),
        ": the count must be a multiple of ", GgmlBlockSize(type), " (pad or pick another type)"));
  }
  const size_t start = out->size();
  out->resize(start + GgmlRowBytes(type, n));
  uint8_t* dst = out->data() + start;
  switch (type) {
    case GgmlType::kF32:
      if (n != 0) std::memcpy(dst, values.data(), n * sizeof(float));
      break;
    case GgmlType::kF16:
      for (uint64_t i = 0; i < n; ++i) PutU16(FloatToHalf(values[i]), dst + 2 * i);
      break;
    case GgmlType::kBF16:
      for (uint64_t i = 0; i < n; ++i) PutU16(FloatToBf16(values[i]), dst + 2 * i);
      break;
    case GgmlType::kQ8_0:
      for (uint64_t b = 0; b < n / kQ8_0BlockSize; ++b) {
        QuantizeBlockQ8_0(values.data() + b * kQ8_0BlockSize, dst + b * kQ8_0BlockBytes);
      }
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> EncodeTensor(std::span<const float> values, GgmlType type) {
  std::vector<uint8_t> out;
  absl::Status status = AppendEncoded(values, type, &out);
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<float>> DecodeTensor(std::span<const uint8_t> bytes, GgmlType type,
                                                uint64_t num_elements) {
  if (num_elements % GgmlBlockSize(type) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode ", num_elements, " ", Sv(GgmlTypeName(type)),
                     " values: the count must be a multiple of ", GgmlBlockSize(type)));
  }
  if (bytes.size() != GgmlRowBytes(type, num_elements)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode ", num_elements, " ", Sv(GgmlTypeName(type)), " values from ",
                     bytes.size(), " bytes; they take ", GgmlRowBytes(type, num_elements)));
  }
  std::vector<float> out(num_elements);
  const uint8_t* src = bytes.data();
  switch (type) {
    case GgmlType::kF32:
      if (num_elements != 0) std::memcpy(out.data(), src, num_elements * sizeof(float));
      break;
    case GgmlType::kF16:
      for (uint64_t i = 0; i < num_elements; ++i) out[i] = HalfToFloat(GetU16(src + 2 * i));
      break;
    case GgmlType::kBF16:
      for (uint64_t i = 0; i < num_elements; ++i) out[i] = Bf16ToFloat(GetU16(src + 2 * i));
      break;
    case GgmlType::kQ8_0:
      for (uint64_t b = 0; b < num_elements / kQ8_0BlockSize; ++b) {
        const uint8_t* block = src + b * kQ8_0BlockBytes;
        const float d = HalfToFloat(GetU16(block));
        for (int j = 0; j < kQ8_0BlockSize; ++j) {
          int8_t q;
          std::memcpy(&q, block + 2 + j, 1);
          out[b * kQ8_0BlockSize + j] = d * static_cast<float>(q);
        }
      }
      break;
  }
  return out;
}

}  // namespace glimpse::model
