#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace glimpse::model {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian.
// Limits that no real model comes near; they turn absurd counts in a corrupt header into
// clean errors before anything is allocated.
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxMetadata = 1u << 20;
constexpr uint64_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 2;

// Bounds-checked cursor over the file image. Every read fails cleanly past the end.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t offset() const { return offset_; }
  size_t remaining() const { return size_ - offset_; }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF file '", name_, "': ", std::string(what), " (at byte offset ", offset_, ")"));
  }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (remaining() < sizeof(T)) {
      return Error(absl::StrCat("file is truncated while reading ", std::string(what)));
    }
    T value;
    std::memcpy(&value, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(std::string_view what) {
    ASSIGN_OR_RETURN(uint64_t length, Read<uint64_t>(what));
    if (length > remaining()) {
      return Error(absl::StrCat(std::string(what), " claims ", length, " bytes but only ", remaining(),
                                " remain (truncated or corrupt file)"));
    }
    std::string s(reinterpret_cast<const char*>(data_ + offset_), length);
    offset_ += length;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  const std::string& name_;
  size_t offset_ = 0;
};

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Minimum encoded size of one value of a scalar type (for sanity-checking array counts).
uint64_t MinEncodedSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kString:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kArray:
      return 12;
  }
  return 1;
}

absl::StatusOr<GgufValue> ReadValue(Reader& reader, GgufValueType type, int depth);

absl::StatusOr<GgufValue> ReadArray(Reader& reader, int depth) {
  if (depth >= kMaxArrayDepth) return reader.Error("metadata arrays are nested too deeply");
  ASSIGN_OR_RETURN(uint32_t raw_type, reader.Read<uint32_t>("array element type"));
  if (!IsKnownValueType(raw_type)) {
    return reader.Error(absl::StrCat("unknown array element type ", raw_type));
  }
  const auto element_type = static_cast<GgufValueType>(raw_type);
  ASSIGN_OR_RETURN(uint64_t count, reader.Read<uint64_t>("array length"));
  if (count > reader.remaining() / MinEncodedSize(element_type)) {
    return reader.Error(absl::StrCat("array of ", count, " elements cannot fit in the ",
                                     reader.remaining(), " bytes that remain"));
  }
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.array_type = element_type;
  value.array.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(GgufValue element, ReadValue(reader, element_type, depth + 1));
    value.array.push_back(std::move(element));
  }
  return value;
}

absl::StatusOr<GgufValue> ReadValue(Reader& reader, GgufValueType type, int depth) {
  GgufValue value;
  value.type = type;
  switch (type) {
    case GgufValueType::kUint8: {
      ASSIGN_OR_RETURN(uint8_t v, reader.Read<uint8_t>("uint8 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kInt8: {
      ASSIGN_OR_RETURN(int8_t v, reader.Read<int8_t>("int8 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kUint16: {
      ASSIGN_OR_RETURN(uint16_t v, reader.Read<uint16_t>("uint16 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kInt16: {
      ASSIGN_OR_RETURN(int16_t v, reader.Read<int16_t>("int16 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kUint32: {
      ASSIGN_OR_RETURN(uint32_t v, reader.Read<uint32_t>("uint32 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kInt32: {
      ASSIGN_OR_RETURN(int32_t v, reader.Read<int32_t>("int32 value"));
      value.int_value = v;
      break;
    }
    case GgufValueType::kUint64: {
      ASSIGN_OR_RETURN(uint64_t v, reader.Read<uint64_t>("uint64 value"));
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return reader.Error("uint64 metadata value is too large");
      }
      value.int_value = static_cast<int64_t>(v);
      break;
    }
    case GgufValueType::kInt64: {
      ASSIGN_OR_RETURN(value.int_value, reader.Read<int64_t>("int64 value"));
      break;
    }
    case GgufValueType::kFloat32: {
      ASSIGN_OR_RETURN(float v, reader.Read<float>("float32 value"));
      value.float_value = v;
      break;
    }
    case GgufValueType::kFloat64: {
      ASSIGN_OR_RETURN(value.float_value, reader.Read<double>("float64 value"));
      break;
    }
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(uint8_t v, reader.Read<uint8_t>("bool value"));
      if (v > 1) return reader.Error(absl::StrCat("bool value is ", int{v}, ", not 0 or 1"));
      value.bool_value = v != 0;
      break;
    }
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(value.string_value, reader.ReadString("string value"));
      break;
    }
    case GgufValueType::kArray:
      return ReadArray(reader, depth);
  }
  return value;
}

bool IsSupportedTensorType(uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kQ8_0:
    case GgmlType::kBF16:
      return true;
  }
  return false;
}

std::string_view ValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

bool IsIntegerType(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    case GgufValueType::kFloat32:
    case GgufValueType::kBool:
    case GgufValueType::kString:
    case GgufValueType::kArray:
    case GgufValueType::kFloat64:
      return false;
  }
  return false;
}

bool IsFloatType(GgufValueType type) {
  return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64;
}

}  // namespace

std::string_view GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kBF16: return "BF16";
  }
  return "unknown";
}

uint64_t GgmlBlockSize(GgmlType type) { return type == GgmlType::kQ8_0 ? 32 : 1; }

uint64_t GgmlRowBytes(GgmlType type, uint64_t num_elements) {
  switch (type) {
    case GgmlType::kF32: return num_elements * 4;
    case GgmlType::kF16: return num_elements * 2;
    case GgmlType::kBF16: return num_elements * 2;
    case GgmlType::kQ8_0: return num_elements / 32 * 34;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string message = absl::StrCat("cannot open model file '", path, "': ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message + "; check the --model path");
    return absl::InvalidArgumentError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("model file '", path, "' is not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("GGUF file '", path, "' is empty"));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot memory-map '", path, "': ", std::strerror(errno)));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->base_ = static_cast<const uint8_t*>(mapping);
  file->size_ = size;
  file->owns_mapping_ = true;
  RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(const uint8_t* bytes, size_t size,
                                                              const std::string& name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = name;
  file->base_ = bytes;
  file->size_ = size;
  RETURN_IF_ERROR(file->Parse());
  return file;
}

GgufFile::~GgufFile() {
  if (owns_mapping_ && base_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
  }
}

absl::Status GgufFile::Parse() {
  Reader reader(base_, size_, path_);
  ASSIGN_OR_RETURN(uint32_t magic, reader.Read<uint32_t>("magic"));
  if (magic != kGgufMagic) {
    return reader.Error("not a GGUF file (wrong magic; expected the bytes 'GGUF')");
  }
  ASSIGN_OR_RETURN(version_, reader.Read<uint32_t>("version"));
  if (version_ != 2 && version_ != 3) {
    return reader.Error(absl::StrCat("unsupported GGUF version ", version_,
                                     "; glimpse reads versions 2 and 3"));
  }
  ASSIGN_OR_RETURN(uint64_t num_tensors, reader.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t num_metadata, reader.Read<uint64_t>("metadata count"));
  if (num_tensors > kMaxTensors) {
    return reader.Error(absl::StrCat("absurd tensor count ", num_tensors));
  }
  if (num_metadata > kMaxMetadata) {
    return reader.Error(absl::StrCat("absurd metadata count ", num_metadata));
  }

  for (uint64_t i = 0; i < num_metadata; ++i) {
    ASSIGN_OR_RETURN(std::string key, reader.ReadString("metadata key"));
    ASSIGN_OR_RETURN(uint32_t raw_type, reader.Read<uint32_t>("metadata value type"));
    if (!IsKnownValueType(raw_type)) {
      return reader.Error(absl::StrCat("metadata '", key, "' has unknown value type ", raw_type));
    }
    ASSIGN_OR_RETURN(GgufValue value,
                     ReadValue(reader, static_cast<GgufValueType>(raw_type), /*depth=*/0));
    if (!metadata_.emplace(key, std::move(value)).second) {
      return reader.Error(absl::StrCat("duplicate metadata key '", key, "'"));
    }
  }

  if (const GgufValue* alignment = Find("general.alignment")) {
    if (!IsIntegerType(alignment->type) || alignment->int_value <= 0 ||
        alignment->int_value > (1 << 20) ||
        (alignment->int_value & (alignment->int_value - 1)) != 0) {
      return reader.Error("general.alignment must be a power of two integer up to 1 MiB");
    }
    alignment_ = static_cast<uint64_t>(alignment->int_value);
  }

  tensors_.reserve(num_tensors);
  std::vector<uint64_t> offsets;
  offsets.reserve(num_tensors);
  for (uint64_t i = 0; i < num_tensors; ++i) {
    GgufTensor tensor;
    ASSIGN_OR_RETURN(tensor.name, reader.ReadString("tensor name"));
    ASSIGN_OR_RETURN(uint32_t num_dims, reader.Read<uint32_t>("tensor dimension count"));
    if (num_dims == 0 || num_dims > kMaxDims) {
      return reader.Error(absl::StrCat("tensor '", tensor.name, "' has ", num_dims,
                                       " dimensions (1 to ", kMaxDims, " supported)"));
    }
    uint64_t num_elements = 1;
    for (uint32_t d = 0; d < num_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t dim, reader.Read<uint64_t>("tensor dimension"));
      if (dim == 0 || dim > (uint64_t{1} << 40) ||
          num_elements > (uint64_t{1} << 50) / dim) {
        return reader.Error(absl::StrCat("tensor '", tensor.name, "' has an absurd dimension ",
                                         dim));
      }
      num_elements *= dim;
      tensor.dims.push_back(dim);
    }
    ASSIGN_OR_RETURN(uint32_t raw_type, reader.Read<uint32_t>("tensor type"));
    if (!IsSupportedTensorType(raw_type)) {
      return reader.Error(absl::StrCat(
          "tensor '", tensor.name, "' has ggml type ", raw_type,
          ", which glimpse does not support (supported: F32, F16, BF16, Q8_0)"));
    }
    tensor.type = static_cast<GgmlType>(raw_type);
    if (tensor.dims[0] % GgmlBlockSize(tensor.type) != 0) {
      return reader.Error(absl::StrCat("tensor '", tensor.name, "' row of ", tensor.dims[0],
                                       " elements is not a multiple of the ",
                                       std::string(GgmlTypeName(tensor.type)), " block size"));
    }
    tensor.num_elements = num_elements;
    tensor.num_bytes = GgmlRowBytes(tensor.type, tensor.dims[0]) * (num_elements / tensor.dims[0]);
    ASSIGN_OR_RETURN(uint64_t offset, reader.Read<uint64_t>("tensor data offset"));
    if (offset % alignment_ != 0) {
      return reader.Error(absl::StrCat("tensor '", tensor.name, "' data offset ", offset,
                                       " is not aligned to ", alignment_));
    }
    if (tensor_index_.count(tensor.name) != 0) {
      return reader.Error(absl::StrCat("duplicate tensor name '", tensor.name, "'"));
    }
    tensor_index_.emplace(tensor.name, tensors_.size());
    offsets.push_back(offset);
    tensors_.push_back(std::move(tensor));
  }

  const uint64_t data_start = (reader.offset() + alignment_ - 1) / alignment_ * alignment_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& tensor = tensors_[i];
    if (data_start > size_ || offsets[i] > size_ - data_start ||
        tensor.num_bytes > size_ - data_start - offsets[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF file '", path_, "': tensor '", tensor.name, "' data (", tensor.num_bytes,
          " bytes at offset ", offsets[i], ") lies outside the file of ", size_,
          " bytes (truncated or corrupt file)"));
    }
    tensor.data = base_ + data_start + offsets[i];
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status MissingKey(const std::string& path, std::string_view key) {
  return absl::NotFoundError(
      absl::StrCat("GGUF file '", path, "' has no metadata key '", std::string(key), "'"));
}

absl::Status WrongType(const std::string& path, std::string_view key, const GgufValue& value,
                       std::string_view wanted) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF file '", path, "': metadata '", std::string(key),
                                                 "' is ", std::string(ValueTypeName(value.type)),
                                                 ", not ", std::string(wanted)));
}

}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (value->type != GgufValueType::kString) return WrongType(path_, key, *value, "a string");
  return value->string_value;
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (!IsIntegerType(value->type)) return WrongType(path_, key, *value, "an integer");
  return value->int_value;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (IsFloatType(value->type)) return value->float_value;
  if (IsIntegerType(value->type)) return static_cast<double>(value->int_value);
  return WrongType(path_, key, *value, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (value->type != GgufValueType::kBool) return WrongType(path_, key, *value, "a bool");
  return value->bool_value;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (value->type != GgufValueType::kArray || value->array_type != GgufValueType::kString) {
    return WrongType(path_, key, *value, "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(value->array.size());
  for (const GgufValue& v : value->array) out.push_back(v.string_value);
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (value->type != GgufValueType::kArray || !IsFloatType(value->array_type)) {
    return WrongType(path_, key, *value, "an array of floats");
  }
  std::vector<float> out;
  out.reserve(value->array.size());
  for (const GgufValue& v : value->array) out.push_back(static_cast<float>(v.float_value));
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(path_, key);
  if (value->type != GgufValueType::kArray || !IsIntegerType(value->array_type)) {
    return WrongType(path_, key, *value, "an array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(value->array.size());
  for (const GgufValue& v : value->array) out.push_back(v.int_value);
  return out;
}

}  // namespace glimpse::model
