// GGUF (v2/v3) file reader: memory-maps a file, parses and validates its header, metadata and
// tensor table, and hands out typed views. Every size and offset is checked against the file
// before it is used, so a truncated or corrupted file yields an absl::Status naming the file
// and the problem, never an out-of-bounds read.
//
// Ownership: GgufFile owns the mapping; GgufTensor::data points into it and lives as long as
// the GgufFile. Thread-safety: immutable after Open(); safe to read from any thread.
#ifndef GLIMPSE_MODEL_GGUF_H_
#define GLIMPSE_MODEL_GGUF_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace glimpse::model {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Tensor element types, numbered as ggml numbers them. Only the ones glimpse can compute
// with are listed; any other number is rejected at Open().
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ8_0 = 8,
  kBF16 = 30,
};

std::string_view GgmlTypeName(GgmlType type);
// Bytes for `num_elements` elements of `type`; num_elements must be a multiple of the block size.
uint64_t GgmlRowBytes(GgmlType type, uint64_t num_elements);
// Elements per quantization block (1 for plain float types, 32 for Q8_0).
uint64_t GgmlBlockSize(GgmlType type);

// One metadata value. Scalars live in the matching field (all integer types widen into
// `int_value` — uint64 values above INT64_MAX are rejected at parse time — floats into
// `float_value`); arrays keep their element type and elements.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  int64_t int_value = 0;
  double float_value = 0;
  bool bool_value = false;
  std::string string_value;
  GgufValueType array_type = GgufValueType::kUint8;  // only for kArray
  std::vector<GgufValue> array;                      // only for kArray
};

struct GgufTensor {
  std::string name;
  // Shape in ggml order: dims[0] is the innermost (contiguous) dimension. A weight matrix
  // y = W x with W of out_features rows has dims = {in_features, out_features}.
  std::vector<uint64_t> dims;
  GgmlType type = GgmlType::kF32;
  uint64_t num_elements = 0;
  uint64_t num_bytes = 0;
  const uint8_t* data = nullptr;  // Into the mapping; not owned.
};

class GgufFile {
 public:
  // Maps and validates `path`. Errors: NotFound (no such file), InvalidArgument (not a GGUF
  // file, or corrupt/truncated/unsupported content; the message says which and where).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (tests, fuzzing). `bytes` must outlive the GgufFile.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(const uint8_t* bytes, size_t size,
                                                             const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }

  // Null when absent.
  const GgufValue* Find(std::string_view key) const;
  const GgufTensor* FindTensor(std::string_view name) const;

  // Typed accessors. NotFound when the key is absent; InvalidArgument when it has another type.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;      // any integer type
  absl::StatusOr<double> GetFloat(std::string_view key) const;     // float32/float64 (or integer)
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;  // Start of the image (mapping or caller's bytes).
  size_t size_ = 0;
  bool owns_mapping_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_GGUF_H_
