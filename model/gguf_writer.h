// GGUF v3 writer: collects metadata (in insertion order) and tensor descriptions, then writes
// a file that GgufFile and llama.cpp can read. Tensor data is either handed over as bytes or
// produced on demand while the file is written, so a model larger than memory (an 8B model)
// can be written one tensor — or one row — at a time.
//
// File layout written (all integers little-endian):
//
//   "GGUF" | u32 version=3 | u64 tensor_count | u64 kv_count
//   kv_count   x { string key | u32 value type | value }
//   tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml type | u64 offset }
//   zero padding to a multiple of the alignment
//   data section: each tensor at `offset` (a multiple of the alignment, relative to the data
//   section start), each followed by zero padding to the alignment.
//
// The alignment is `general.alignment` when that key has been set (an unsigned power of two),
// else 32.
//
// Ownership: the writer owns its metadata, tensor bytes and producers. Thread-safety: none;
// use one writer from one thread. Producers run on the thread that calls WriteFile().
#ifndef GLIMPSE_MODEL_GGUF_WRITER_H_
#define GLIMPSE_MODEL_GGUF_WRITER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/gguf.h"

namespace glimpse::model {

// Receives one tensor's bytes, in order, in as many pieces as the producer likes.
class GgufByteSink {
 public:
  virtual ~GgufByteSink() = default;
  virtual absl::Status Write(std::span<const uint8_t> bytes) = 0;
};

// Writes exactly GgmlRowBytes(type, dims[0]) * (rows) bytes of one tensor into the sink. Called
// once per WriteFile(); a non-OK status aborts the write (the target file is left untouched).
using GgufTensorProducer = std::function<absl::Status(GgufByteSink& sink)>;

class GgufWriter {
 public:
  static constexpr uint32_t kDefaultAlignment = 32;

  GgufWriter() = default;
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Metadata setters. Setting a key again replaces its value and keeps its original position.
  void SetString(std::string_view key, std::string_view value);
  void SetUint32(std::string_view key, uint32_t value);
  void SetInt32(std::string_view key, int32_t value);
  void SetUint64(std::string_view key, uint64_t value);
  void SetFloat32(std::string_view key, float value);
  void SetBool(std::string_view key, bool value);
  void SetStringArray(std::string_view key, std::span<const std::string> values);
  void SetFloat32Array(std::string_view key, std::span<const float> values);
  void SetInt32Array(std::string_view key, std::span<const int32_t> values);
  // Any value as the reader returns it (to copy metadata from another file). InvalidArgument
  // when the value is not writable as it stands: an array element whose type differs from
  // `array_type`, an integer out of its type's range, arrays nested more than two deep.
  absl::Status SetValue(std::string_view key, const GgufValue& value);

  // Null when the key has not been set.
  const GgufValue* FindValue(std::string_view key) const;
  // Keys in insertion order.
  std::vector<std::string> Keys() const;

  // Adds a tensor whose bytes are already encoded (see model/quantize.h). `dims` are in ggml
  // order (dims[0] innermost; a weight matrix is {in_features, out_features}). InvalidArgument
  // on a duplicate or over-long name (ggml's limit is 63 bytes), 0 or more than 4 dims, a zero
  // dim, a row that is not a multiple of the type's block size, or a byte count that does not
  // match the shape.
  absl::Status AddTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                         std::vector<uint8_t> bytes);
  // Streaming variant: `producer` is called during WriteFile() and must write exactly the
  // tensor's byte count, else WriteFile() fails.
  absl::Status AddTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                         GgufTensorProducer producer);

  size_t num_tensors() const { return tensors_.size(); }
  // Size of the file WriteFile() will write. InvalidArgument when general.alignment is bad.
  absl::StatusOr<uint64_t> FileSize() const;

  // Writes the file to `path + ".tmp-XXXXXX"` and renames it over `path` once complete, so
  // `path` is never left half-written. Fails with ResourceExhausted when the file system lacks
  // room for the whole file (checked first), with the I/O error and the path otherwise.
  // May be called more than once (producers run again each time).
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type = GgmlType::kF32;
    uint64_t num_bytes = 0;
    std::vector<uint8_t> bytes;  // Used when `producer` is empty.
    GgufTensorProducer producer;
  };

  void Set(std::string_view key, GgufValue value);
  absl::Status CheckTensor(std::string_view name, const std::vector<uint64_t>& dims,
                           GgmlType type) const;
  absl::StatusOr<uint64_t> Alignment() const;
  // The header (everything before the data section's padding) and each tensor's offset.
  absl::StatusOr<std::vector<uint8_t>> EncodeHeader(uint64_t alignment,
                                                    std::vector<uint64_t>* offsets) const;

  std::vector<std::pair<std::string, GgufValue>> metadata_;  // Insertion order.
  std::map<std::string, size_t, std::less<>> metadata_index_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace glimpse::model

#endif  // GLIMPSE_MODEL_GGUF_WRITER_H_
