#include "model/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace glimpse::model {
namespace {

// Debian's Abseil has its own string_view type, which StrCat needs.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; the writer copies host words as they are");

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian.
constexpr uint32_t kGgufVersion = 3;
constexpr size_t kMaxTensorNameBytes = 63;  // ggml's GGML_MAX_NAME (64) less the NUL.
constexpr size_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 2;  // As GgufFile accepts: an array may hold arrays, no deeper.
constexpr size_t kWriteBufferBytes = size_t{4} << 20;

uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

template <typename T>
void Put(T value, std::vector<uint8_t>* out) {
  const size_t start = out->size();
  out->resize(start + sizeof(T));
  std::memcpy(out->data() + start, &value, sizeof(T));
}

void PutString(std::string_view s, std::vector<uint8_t>* out) {
  Put<uint64_t>(s.size(), out);
  out->insert(out->end(), s.begin(), s.end());
}

absl::Status CheckRange(std::string_view key, const GgufValue& value, int64_t lo, int64_t hi) {
  if (value.int_value < lo || value.int_value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata '", Sv(key), "': integer ", value.int_value,
                     " does not fit its declared type (range ", lo, "..", hi, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateValue(std::string_view key, const GgufValue& value, int depth) {
  using Limits8 = std::numeric_limits<int8_t>;
  using Limits16 = std::numeric_limits<int16_t>;
  using Limits32 = std::numeric_limits<int32_t>;
  switch (value.type) {
    case GgufValueType::kUint8:
      return CheckRange(key, value, 0, std::numeric_limits<uint8_t>::max());
    case GgufValueType::kInt8:
      return CheckRange(key, value, Limits8::min(), Limits8::max());
    case GgufValueType::kUint16:
      return CheckRange(key, value, 0, std::numeric_limits<uint16_t>::max());
    case GgufValueType::kInt16:
      return CheckRange(key, value, Limits16::min(), Limits16::max());
    case GgufValueType::kUint32:
      return CheckRange(key, value, 0, std::numeric_limits<uint32_t>::max());
    case GgufValueType::kInt32:
      return CheckRange(key, value, Limits32::min(), Limits32::max());
    case GgufValueType::kUint64:
      return CheckRange(key, value, 0, std::numeric_limits<int64_t>::max());
    case GgufValueType::kInt64:
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
    case GgufValueType::kBool:
    case GgufValueType::kString:
      return absl::OkStatus();
    case GgufValueType::kArray:
      if (depth + 1 >= kMaxArrayDepth && value.array_type == GgufValueType::kArray) {
        return absl::InvalidArgumentError(absl::StrCat(
            "metadata '", Sv(key), "': arrays nest at most ", kMaxArrayDepth, " deep"));
      }
      for (const GgufValue& element : value.array) {
        if (element.type != value.array_type) {
          return absl::InvalidArgumentError(
              absl::StrCat("metadata '", Sv(key), "': array declares element type ",
                           static_cast<uint32_t>(value.array_type),
                           " but holds an element of type ", static_cast<uint32_t>(element.type)));
        }
        RETURN_IF_ERROR(ValidateValue(key, element, depth + 1));
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("metadata '", Sv(key), "': unknown value type ",
                                                 static_cast<uint32_t>(value.type)));
}

// Encodes the value body (no type tag) of an already validated value.
void PutValue(const GgufValue& value, std::vector<uint8_t>* out) {
  switch (value.type) {
    case GgufValueType::kUint8:
      Put(static_cast<uint8_t>(value.int_value), out);
      return;
    case GgufValueType::kInt8:
      Put(static_cast<int8_t>(value.int_value), out);
      return;
    case GgufValueType::kUint16:
      Put(static_cast<uint16_t>(value.int_value), out);
      return;
    case GgufValueType::kInt16:
      Put(static_cast<int16_t>(value.int_value), out);
      return;
    case GgufValueType::kUint32:
      Put(static_cast<uint32_t>(value.int_value), out);
      return;
    case GgufValueType::kInt32:
      Put(static_cast<int32_t>(value.int_value), out);
      return;
    case GgufValueType::kUint64:
      Put(static_cast<uint64_t>(value.int_value), out);
      return;
    case GgufValueType::kInt64:
      Put(value.int_value, out);
      return;
    case GgufValueType::kFloat32:
      Put(static_cast<float>(value.float_value), out);
      return;
    case GgufValueType::kFloat64:
      Put(value.float_value, out);
      return;
    case GgufValueType::kBool:
      Put<uint8_t>(value.bool_value ? 1 : 0, out);
      return;
    case GgufValueType::kString:
      PutString(value.string_value, out);
      return;
    case GgufValueType::kArray:
      Put(static_cast<uint32_t>(value.array_type), out);
      Put<uint64_t>(value.array.size(), out);
      for (const GgufValue& element : value.array) PutValue(element, out);
      return;
  }
}

GgufValue IntValue(GgufValueType type, int64_t v) {
  GgufValue value;
  value.type = type;
  value.int_value = v;
  return value;
}

GgufValue FloatValue(float v) {
  GgufValue value;
  value.type = GgufValueType::kFloat32;
  value.float_value = v;
  return value;
}

GgufValue StringValue(std::string_view v) {
  GgufValue value;
  value.type = GgufValueType::kString;
  value.string_value = std::string(v);
  return value;
}

GgufValue ArrayValue(GgufValueType element_type, std::vector<GgufValue> elements) {
  GgufValue value;
  value.type = GgufValueType::kArray;
  value.array_type = element_type;
  value.array = std::move(elements);
  return value;
}

std::string IoError(std::string_view what, const std::string& path, int err) {
  return absl::StrCat("cannot ", Sv(what), " GGUF file '", path, "': ", std::strerror(err));
}

// Buffered writer over a file descriptor that counts what passes through it. Not owned: the
// descriptor is closed by the caller.
class FileSink : public GgufByteSink {
 public:
  FileSink(int fd, const std::string& path) : fd_(fd), path_(path) {
    buffer_.reserve(kWriteBufferBytes);
  }

  absl::Status Write(std::span<const uint8_t> bytes) override {
    count_ += bytes.size();
    if (buffer_.size() + bytes.size() > kWriteBufferBytes) {
      RETURN_IF_ERROR(Flush());
      if (bytes.size() >= kWriteBufferBytes) return WriteAll(bytes.data(), bytes.size());
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    return absl::OkStatus();
  }

  absl::Status WriteZeros(uint64_t n) {
    static constexpr uint8_t kZeros[256] = {};
    while (n > 0) {
      const size_t chunk = n < sizeof(kZeros) ? static_cast<size_t>(n) : sizeof(kZeros);
      RETURN_IF_ERROR(Write(std::span<const uint8_t>(kZeros, chunk)));
      n -= chunk;
    }
    return absl::OkStatus();
  }

  absl::Status Flush() {
    RETURN_IF_ERROR(WriteAll(buffer_.data(), buffer_.size()));
    buffer_.clear();
    return absl::OkStatus();
  }

  // Bytes accepted so far (buffered or written).
  uint64_t count() const { return count_; }

 private:
  absl::Status WriteAll(const uint8_t* data, size_t size) {
    while (size > 0) {
      const ssize_t n = ::write(fd_, data, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::InternalError(IoError("write", path_, errno));
      }
      data += n;
      size -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  int fd_;
  const std::string& path_;
  std::vector<uint8_t> buffer_;
  uint64_t count_ = 0;
};

}  // namespace

void GgufWriter::Set(std::string_view key, GgufValue value) {
  auto it = metadata_index_.find(key);
  if (it != metadata_index_.end()) {
    metadata_[it->second].second = std::move(value);
    return;
  }
  metadata_index_.emplace(std::string(key), metadata_.size());
  metadata_.emplace_back(std::string(key), std::move(value));
}

void GgufWriter::SetString(std::string_view key, std::string_view value) {
  Set(key, StringValue(value));
}
void GgufWriter::SetUint32(std::string_view key, uint32_t value) {
  Set(key, IntValue(GgufValueType::kUint32, value));
}
void GgufWriter::SetInt32(std::string_view key, int32_t value) {
  Set(key, IntValue(GgufValueType::kInt32, value));
}
void GgufWriter::SetUint64(std::string_view key, uint64_t value) {
  // The reader holds integers as int64; larger values would not read back.
  Set(key, IntValue(GgufValueType::kUint64, static_cast<int64_t>(std::min<uint64_t>(
                                                value, std::numeric_limits<int64_t>::max()))));
}
void GgufWriter::SetFloat32(std::string_view key, float value) { Set(key, FloatValue(value)); }
void GgufWriter::SetBool(std::string_view key, bool value) {
  GgufValue v;
  v.type = GgufValueType::kBool;
  v.bool_value = value;
  Set(key, std::move(v));
}
void GgufWriter::SetStringArray(std::string_view key, std::span<const std::string> values) {
  std::vector<GgufValue> elements;
  elements.reserve(values.size());
  for (const std::string& s : values) elements.push_back(StringValue(s));
  Set(key, ArrayValue(GgufValueType::kString, std::move(elements)));
}
void GgufWriter::SetFloat32Array(std::string_view key, std::span<const float> values) {
  std::vector<GgufValue> elements;
  elements.reserve(values.size());
  for (float f : values) elements.push_back(FloatValue(f));
  Set(key, ArrayValue(GgufValueType::kFloat32, std::move(elements)));
}
void GgufWriter::SetInt32Array(std::string_view key, std::span<const int32_t> values) {
  std::vector<GgufValue> elements;
  elements.reserve(values.size());
  for (int32_t v : values) elements.push_back(IntValue(GgufValueType::kInt32, v));
  Set(key, ArrayValue(GgufValueType::kInt32, std::move(elements)));
}

absl::Status GgufWriter::SetValue(std::string_view key, const GgufValue& value) {
  RETURN_IF_ERROR(ValidateValue(key, value, /*depth=*/0));
  Set(key, value);
  return absl::OkStatus();
}

const GgufValue* GgufWriter::FindValue(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

std::vector<std::string> GgufWriter::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(metadata_.size());
  for (const auto& [key, value] : metadata_) keys.push_back(key);
  return keys;
}

absl::Status GgufWriter::CheckTensor(std::string_view name, const std::vector<uint64_t>& dims,
                                     GgmlType type) const {
  if (name.empty() || name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name '", Sv(name), "' must be 1 to ",
                                                   kMaxTensorNameBytes, " bytes long"));
  }
  if (tensor_index_.count(name) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", Sv(name), "' was already added"));
  }
  if (dims.empty() || dims.size() > kMaxDims) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", Sv(name), "' has ", dims.size(),
                                                   " dims; GGUF tensors have 1 to ", kMaxDims));
  }
  for (uint64_t d : dims) {
    if (d == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", Sv(name), "' has a zero dim"));
    }
  }
  if (dims[0] % GgmlBlockSize(type) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", Sv(name), "': rows of ", dims[0], " elements cannot be stored as ",
                     Sv(GgmlTypeName(type)), ", whose blocks hold ", GgmlBlockSize(type),
                     " elements; use F16/BF16/F32 for this tensor"));
  }
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                                   std::vector<uint8_t> bytes) {
  RETURN_IF_ERROR(CheckTensor(name, dims, type));
  Tensor tensor;
  tensor.name = std::string(name);
  tensor.type = type;
  uint64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  tensor.num_bytes = GgmlRowBytes(type, dims[0]) * rows;
  if (bytes.size() != tensor.num_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", Sv(name), "': got ", bytes.size(), " bytes but its shape and type ",
        Sv(GgmlTypeName(type)), " take ", tensor.num_bytes));
  }
  tensor.dims = std::move(dims);
  tensor.bytes = std::move(bytes);
  tensor_index_.emplace(tensor.name, tensors_.size());
  tensors_.push_back(std::move(tensor));
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type,
                                   GgufTensorProducer producer) {
  RETURN_IF_ERROR(CheckTensor(name, dims, type));
  if (!producer) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", Sv(name), "' has no producer"));
  }
  Tensor tensor;
  tensor.name = std::string(name);
  tensor.type = type;
  uint64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  tensor.num_bytes = GgmlRowBytes(type, dims[0]) * rows;
  tensor.dims = std::move(dims);
  tensor.producer = std::move(producer);
  tensor_index_.emplace(tensor.name, tensors_.size());
  tensors_.push_back(std::move(tensor));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> GgufWriter::Alignment() const {
  const GgufValue* value = FindValue("general.alignment");
  if (value == nullptr) return kDefaultAlignment;
  const bool is_unsigned =
      value->type == GgufValueType::kUint8 || value->type == GgufValueType::kUint16 ||
      value->type == GgufValueType::kUint32 || value->type == GgufValueType::kUint64;
  const int64_t a = value->int_value;
  if (!is_unsigned || a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0) {
    return absl::InvalidArgumentError(
        "general.alignment must be an unsigned power of two up to 1 MiB; set it with "
        "SetUint32 (32 is the usual value)");
  }
  return static_cast<uint64_t>(a);
}

absl::StatusOr<std::vector<uint8_t>> GgufWriter::EncodeHeader(
    uint64_t alignment, std::vector<uint64_t>* offsets) const {
  std::vector<uint8_t> header;
  Put(kGgufMagic, &header);
  Put(kGgufVersion, &header);
  Put<uint64_t>(tensors_.size(), &header);
  Put<uint64_t>(metadata_.size(), &header);
  for (const auto& [key, value] : metadata_) {
    PutString(key, &header);
    Put(static_cast<uint32_t>(value.type), &header);
    PutValue(value, &header);
  }
  offsets->clear();
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    PutString(tensor.name, &header);
    Put<uint32_t>(static_cast<uint32_t>(tensor.dims.size()), &header);
    for (uint64_t d : tensor.dims) Put(d, &header);
    Put(static_cast<uint32_t>(tensor.type), &header);
    Put(offset, &header);
    offsets->push_back(offset);
    offset = AlignUp(offset + tensor.num_bytes, alignment);
  }
  return header;
}

absl::StatusOr<uint64_t> GgufWriter::FileSize() const {
  ASSIGN_OR_RETURN(const uint64_t alignment, Alignment());
  std::vector<uint64_t> offsets;
  ASSIGN_OR_RETURN(const std::vector<uint8_t> header, EncodeHeader(alignment, &offsets));
  uint64_t size = AlignUp(header.size(), alignment);
  for (const Tensor& tensor : tensors_) size += AlignUp(tensor.num_bytes, alignment);
  return size;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  ASSIGN_OR_RETURN(const uint64_t alignment, Alignment());
  std::vector<uint64_t> offsets;
  ASSIGN_OR_RETURN(const std::vector<uint8_t> header, EncodeHeader(alignment, &offsets));
  uint64_t file_size = AlignUp(header.size(), alignment);
  for (const Tensor& tensor : tensors_) file_size += AlignUp(tensor.num_bytes, alignment);

  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  struct statvfs fs;
  if (::statvfs(dir.c_str(), &fs) == 0) {
    const uint64_t available = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (available < file_size) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot write GGUF file '", path, "': it needs ", file_size, " bytes but only ",
          available, " are free in '", dir, "'; free space or choose another --out path"));
    }
  }

  std::string temp_path = path + ".tmp-XXXXXX";
  const int fd = ::mkostemp(temp_path.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(IoError("create", path, errno) +
                                      " (check that the directory exists and is writable)");
  }
  bool fd_open = true;
  bool keep_temp = false;
  absl::Cleanup cleanup = [&] {
    if (fd_open) ::close(fd);
    if (!keep_temp) ::unlink(temp_path.c_str());
  };
  // mkostemp creates the file 0600; a model file is meant to be shared like any other.
  ::fchmod(fd, 0644);

  FileSink sink(fd, path);
  RETURN_IF_ERROR(sink.Write(header));
  RETURN_IF_ERROR(sink.WriteZeros(AlignUp(header.size(), alignment) - header.size()));
  const uint64_t data_start = sink.count();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& tensor = tensors_[i];
    const uint64_t start = sink.count();
    if (start - data_start != offsets[i]) {
      return absl::InternalError(absl::StrCat("GGUF writer bug: tensor '", tensor.name,
                                              "' lands at data offset ", start - data_start,
                                              ", header says ", offsets[i]));
    }
    if (tensor.producer) {
      absl::Status status = tensor.producer(sink);
      if (!status.ok()) {
        return absl::Status(status.code(), absl::StrCat("writing tensor '", tensor.name, "' of '",
                                                        path, "': ", status.message()));
      }
    } else {
      RETURN_IF_ERROR(sink.Write(tensor.bytes));
    }
    const uint64_t written = sink.count() - start;
    if (written != tensor.num_bytes) {
      return absl::InternalError(absl::StrCat(
          "the producer of tensor '", tensor.name, "' wrote ", written, " bytes; its shape and ",
          Sv(GgmlTypeName(tensor.type)), " type take ", tensor.num_bytes));
    }
    RETURN_IF_ERROR(sink.WriteZeros(AlignUp(written, alignment) - written));
  }
  RETURN_IF_ERROR(sink.Flush());
  if (::fsync(fd) != 0) return absl::InternalError(IoError("sync", path, errno));
  fd_open = false;
  if (::close(fd) != 0) return absl::InternalError(IoError("close", path, errno));
  if (::rename(temp_path.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat(IoError("rename", path, errno), " (from '", temp_path, "')"));
  }
  keep_temp = true;
  return absl::OkStatus();
}

}  // namespace glimpse::model
