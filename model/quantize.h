// Reference encoders and decoders between fp32 and the ggml tensor types glimpse stores
// (F32, F16, BF16, Q8_0). These are the slow, exact-by-definition paths used to write models
// and to check kernels in tests; the backends have their own vectorised decoders.
//
// Q8_0 follows llama.cpp's reference quantizer (quantize_row_q8_0_ref) bit for bit: per block
// of 32 values, amax = max|x|, d = amax / 127, id = d ? 1/d : 0, q = round(x * id) (halves away
// from zero), and d is stored as IEEE fp16 before the 32 int8 values:
//
//   block (34 bytes): [ d : f16 little-endian ][ q[0] ... q[31] : int8 ]
//
// Thread-safety: pure functions; safe from any thread.
#ifndef GLIMPSE_MODEL_QUANTIZE_H_
#define GLIMPSE_MODEL_QUANTIZE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace glimpse::model {

inline constexpr int kQ8_0BlockSize = 32;
inline constexpr int kQ8_0BlockBytes = 2 + kQ8_0BlockSize;

// Encodes `values` (a whole tensor or any run of whole rows, row-major) as `type` and appends
// the bytes to `*out`. InvalidArgument when values.size() is not a multiple of the type's block
// size (32 for Q8_0); the caller must also make every row a multiple of the block size, since
// blocks never straddle rows in ggml.
absl::Status AppendEncoded(std::span<const float> values, GgmlType type, std::vector<uint8_t>* out);

// As AppendEncoded, into a fresh buffer of GgmlRowBytes(type, values.size()) bytes.
absl::StatusOr<std::vector<uint8_t>> EncodeTensor(std::span<const float> values, GgmlType type);

// Decodes `num_elements` values of `type` from `bytes` (which must hold exactly
// GgmlRowBytes(type, num_elements) bytes) to fp32.
absl::StatusOr<std::vector<float>> DecodeTensor(std::span<const uint8_t> bytes, GgmlType type,
                                                uint64_t num_elements);

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_QUANTIZE_H_
