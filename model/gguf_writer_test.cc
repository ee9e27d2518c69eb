#include "model/gguf_writer.h"

#include <dirent.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "common/float16.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/gguf.h"
#include "model/quantize.h"

namespace glimpse::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory under TEST_TMPDIR (Bazel) or /tmp.
std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/gguf_writer_XXXXXX";
  const char* dir = ::mkdtemp(pattern.data());
  EXPECT_NE(dir, nullptr);
  return pattern;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::unique_ptr<GgufFile> OpenOrDie(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(file).value() : nullptr;
}

std::vector<float> Decode(const GgufTensor& tensor) {
  auto values = DecodeTensor(std::span<const uint8_t>(tensor.data, tensor.num_bytes), tensor.type,
                             tensor.num_elements);
  EXPECT_TRUE(values.ok()) << values.status();
  return values.ok() ? *values : std::vector<float>();
}

// Deterministic values of both signs and several magnitudes.
std::vector<float> Ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i] = scale * std::sin(0.37f * static_cast<float>(i) + 0.1f) * (1.0f + 0.01f * (i % 7));
  }
  return v;
}

TEST(GgufWriterTest, EveryMetadataTypeRoundTrips) {
  GgufWriter writer;
  writer.SetString("t.string", "héllo");
  writer.SetUint32("t.u32", 4000000000u);
  writer.SetInt32("t.i32", -123456);
  writer.SetUint64("t.u64", uint64_t{1} << 40);
  writer.SetFloat32("t.f32", 0.125f);
  writer.SetBool("t.true", true);
  writer.SetBool("t.false", false);
  const std::vector<std::string> strings = {"a", "", "<0x0A>"};
  writer.SetStringArray("t.strings", strings);
  const std::vector<float> floats = {1.5f, -1e9f, 0.0f};
  writer.SetFloat32Array("t.floats", floats);
  const std::vector<int32_t> ints = {5, -7, 1};
  writer.SetInt32Array("t.ints", ints);
  const std::vector<int32_t> empty;
  writer.SetInt32Array("t.empty", empty);

  // The generic setter, for the types without a typed setter.
  struct Case {
    GgufValueType type;
    int64_t value;
  };
  for (const Case& c : {Case{GgufValueType::kUint8, 255}, Case{GgufValueType::kInt8, -128},
                        Case{GgufValueType::kUint16, 65535}, Case{GgufValueType::kInt16, -32768},
                        Case{GgufValueType::kInt64, -(int64_t{1} << 50)}}) {
    GgufValue v;
    v.type = c.type;
    v.int_value = c.value;
    ASSERT_TRUE(writer.SetValue("g." + std::to_string(static_cast<int>(c.type)), v).ok());
  }
  GgufValue f64;
  f64.type = GgufValueType::kFloat64;
  f64.float_value = 3.141592653589793;
  ASSERT_TRUE(writer.SetValue("g.f64", f64).ok());
  GgufValue nested;  // [[1, 2], []] of uint16.
  nested.type = GgufValueType::kArray;
  nested.array_type = GgufValueType::kArray;
  for (int n : {2, 0}) {
    GgufValue inner;
    inner.type = GgufValueType::kArray;
    inner.array_type = GgufValueType::kUint16;
    for (int i = 1; i <= n; ++i) {
      GgufValue e;
      e.type = GgufValueType::kUint16;
      e.int_value = i;
      inner.array.push_back(e);
    }
    nested.array.push_back(inner);
  }
  ASSERT_TRUE(writer.SetValue("g.nested", nested).ok());

  const std::string path = MakeTempDir() + "/meta.gguf";
  ASSERT_TRUE(writer.WriteFile(path).ok());
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->version(), 3u);
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(*file->GetString("t.string"), "héllo");
  EXPECT_EQ(file->Find("t.u32")->type, GgufValueType::kUint32);
  EXPECT_EQ(*file->GetInt("t.u32"), 4000000000);
  EXPECT_EQ(file->Find("t.i32")->type, GgufValueType::kInt32);
  EXPECT_EQ(*file->GetInt("t.i32"), -123456);
  EXPECT_EQ(file->Find("t.u64")->type, GgufValueType::kUint64);
  EXPECT_EQ(*file->GetInt("t.u64"), int64_t{1} << 40);
  EXPECT_EQ(file->Find("t.f32")->type, GgufValueType::kFloat32);
  EXPECT_EQ(*file->GetFloat("t.f32"), 0.125);
  EXPECT_TRUE(*file->GetBool("t.true"));
  EXPECT_FALSE(*file->GetBool("t.false"));
  EXPECT_EQ(*file->GetStringArray("t.strings"), strings);
  EXPECT_EQ(*file->GetFloatArray("t.floats"), floats);
  EXPECT_EQ(file->Find("t.ints")->array_type, GgufValueType::kInt32);
  EXPECT_THAT(*file->GetIntArray("t.ints"), ElementsAre(5, -7, 1));
  EXPECT_TRUE(file->GetIntArray("t.empty")->empty());
  EXPECT_EQ(file->Find("g.0")->type, GgufValueType::kUint8);
  EXPECT_EQ(*file->GetInt("g.0"), 255);
  EXPECT_EQ(*file->GetInt("g.1"), -128);
  EXPECT_EQ(*file->GetInt("g.2"), 65535);
  EXPECT_EQ(*file->GetInt("g.3"), -32768);
  EXPECT_EQ(file->Find("g.11")->type, GgufValueType::kInt64);
  EXPECT_EQ(*file->GetInt("g.11"), -(int64_t{1} << 50));
  EXPECT_EQ(file->Find("g.f64")->type, GgufValueType::kFloat64);
  EXPECT_EQ(*file->GetFloat("g.f64"), 3.141592653589793);
  const GgufValue* read_nested = file->Find("g.nested");
  ASSERT_NE(read_nested, nullptr);
  ASSERT_EQ(read_nested->array.size(), 2u);
  EXPECT_EQ(read_nested->array[0].array_type, GgufValueType::kUint16);
  ASSERT_EQ(read_nested->array[0].array.size(), 2u);
  EXPECT_EQ(read_nested->array[0].array[1].int_value, 2);
  EXPECT_TRUE(read_nested->array[1].array.empty());
}

TEST(GgufWriterTest, KeysKeepInsertionOrderAndResettingKeepsPosition) {
  GgufWriter writer;
  writer.SetString("zeta", "1");
  writer.SetString("alpha", "2");
  writer.SetUint32("mid", 3);
  writer.SetString("zeta", "replaced");
  EXPECT_THAT(writer.Keys(), ElementsAre("zeta", "alpha", "mid"));

  const std::string path = MakeTempDir() + "/order.gguf";
  ASSERT_TRUE(writer.WriteFile(path).ok());
  const std::string bytes = ReadAll(path);
  const size_t zeta = bytes.find("zeta");
  const size_t alpha = bytes.find("alpha");
  const size_t mid = bytes.find("mid");
  ASSERT_NE(zeta, std::string::npos);
  EXPECT_LT(zeta, alpha);
  EXPECT_LT(alpha, mid);
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(*file->GetString("zeta"), "replaced");
  EXPECT_EQ(file->metadata().size(), 3u);
}

TEST(GgufWriterTest, EveryTensorTypeRoundTripsWithinTolerance) {
  constexpr size_t kCols = 64;
  constexpr size_t kRows = 3;
  const std::vector<float> values = Ramp(kCols * kRows, 2.0f);
  // Values every 16-bit type holds exactly: small integers over a power of two.
  std::vector<float> representable(kCols * kRows);
  for (size_t i = 0; i < representable.size(); ++i) {
    representable[i] = static_cast<float>(static_cast<int>(i % 97) - 48) / 64.0f;
  }

  GgufWriter writer;
  const std::vector<uint64_t> dims = {kCols, kRows};
  ASSERT_TRUE(
      writer.AddTensor("f32", dims, GgmlType::kF32, *EncodeTensor(values, GgmlType::kF32)).ok());
  ASSERT_TRUE(
      writer.AddTensor("f16", dims, GgmlType::kF16, *EncodeTensor(representable, GgmlType::kF16))
          .ok());
  ASSERT_TRUE(
      writer.AddTensor("f16.rounded", dims, GgmlType::kF16, *EncodeTensor(values, GgmlType::kF16))
          .ok());
  ASSERT_TRUE(
      writer.AddTensor("bf16", dims, GgmlType::kBF16, *EncodeTensor(representable, GgmlType::kBF16))
          .ok());
  ASSERT_TRUE(
      writer.AddTensor("q8_0", dims, GgmlType::kQ8_0, *EncodeTensor(values, GgmlType::kQ8_0)).ok());
  // An odd-sized 1-D tensor, so the next one needs padding to stay aligned.
  const std::vector<float> odd = {1.0f, -2.5f, 3.25f};
  ASSERT_TRUE(
      writer.AddTensor("odd", {3}, GgmlType::kF32, *EncodeTensor(odd, GgmlType::kF32)).ok());
  ASSERT_TRUE(
      writer
          .AddTensor("after_odd", {2, 1, 1, 1}, GgmlType::kF16,
                     *EncodeTensor(std::span<const float>(odd).subspan(0, 2), GgmlType::kF16))
          .ok());

  const std::string path = MakeTempDir() + "/tensors.gguf";
  ASSERT_TRUE(writer.WriteFile(path).ok());
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->alignment(), 32u);
  ASSERT_EQ(file->tensors().size(), 7u);
  EXPECT_EQ(static_cast<uint64_t>(std::ifstream(path, std::ios::ate | std::ios::binary).tellg()),
            *writer.FileSize());
  for (const GgufTensor& t : file->tensors()) {
    // The mapping is page-aligned, so in-file alignment shows in the pointer.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;
  }

  const GgufTensor* f32 = file->FindTensor("f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_THAT(f32->dims, ElementsAre(kCols, kRows));
  EXPECT_EQ(f32->type, GgmlType::kF32);
  EXPECT_EQ(Decode(*f32), values);

  EXPECT_EQ(file->FindTensor("f16")->type, GgmlType::kF16);
  EXPECT_EQ(Decode(*file->FindTensor("f16")), representable);
  EXPECT_EQ(file->FindTensor("bf16")->type, GgmlType::kBF16);
  EXPECT_EQ(Decode(*file->FindTensor("bf16")), representable);

  const std::vector<float> rounded = Decode(*file->FindTensor("f16.rounded"));
  ASSERT_EQ(rounded.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(rounded[i], HalfToFloat(FloatToHalf(values[i]))) << i;
    EXPECT_NEAR(rounded[i], values[i], std::fabs(values[i]) * 0x1p-11f) << i;
  }

  const GgufTensor* q8 = file->FindTensor("q8_0");
  ASSERT_NE(q8, nullptr);
  EXPECT_EQ(q8->type, GgmlType::kQ8_0);
  EXPECT_EQ(q8->num_bytes, kRows * (kCols / 32) * 34);
  const std::vector<float> dequantized = Decode(*q8);
  ASSERT_EQ(dequantized.size(), values.size());
  for (size_t block = 0; block < values.size() / 32; ++block) {
    float amax = 0;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(values[block * 32 + j]));
    const float d = amax / 127.0f;
    // Half a step, plus what storing d as fp16 (relative error <= 2^-11) moves 127 steps.
    const float tolerance = d / 2 + 127.0f * d * 0x1p-11f;
    for (size_t j = 0; j < 32; ++j) {
      const size_t i = block * 32 + j;
      EXPECT_NEAR(dequantized[i], values[i], tolerance) << i;
    }
  }

  EXPECT_EQ(Decode(*file->FindTensor("odd")), odd);
  const GgufTensor* after = file->FindTensor("after_odd");
  EXPECT_THAT(after->dims, ElementsAre(2, 1, 1, 1));
  EXPECT_THAT(Decode(*after), ElementsAre(1.0f, -2.5f));
}

TEST(GgufWriterTest, Q8_0MatchesLlamaCppReferenceQuantizer) {
  std::vector<float> block(32);
  for (int j = 0; j < 32; ++j) block[j] = static_cast<float>(j - 16) * 0.25f;  // amax = 4.
  std::vector<float> zeros(32, 0.0f);
  std::vector<float> both = block;
  both.insert(both.end(), zeros.begin(), zeros.end());
  auto bytes = EncodeTensor(both, GgmlType::kQ8_0);
  ASSERT_TRUE(bytes.ok());
  ASSERT_EQ(bytes->size(), 68u);
  const float d = 4.0f / 127.0f;
  const uint16_t d16 = static_cast<uint16_t>((*bytes)[0] | ((*bytes)[1] << 8));
  EXPECT_EQ(d16, FloatToHalf(d));
  for (int j = 0; j < 32; ++j) {
    const int expected = static_cast<int>(std::round(block[j] * (1.0f / d)));
    EXPECT_EQ(static_cast<int8_t>((*bytes)[2 + j]), expected) << j;
  }
  EXPECT_EQ(static_cast<int8_t>((*bytes)[2]), -127);  // -4 -> -127 exactly.
  for (int j = 34; j < 68; ++j) EXPECT_EQ((*bytes)[j], 0) << "all-zero block: d = 0, q = 0";
}

TEST(GgufWriterTest, EncodeRejectsPartialQ8_0Blocks) {
  const std::vector<float> values(40, 1.0f);
  auto bytes = EncodeTensor(values, GgmlType::kQ8_0);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bytes.status().message()), HasSubstr("multiple of 32"));
  EXPECT_TRUE(EncodeTensor(values, GgmlType::kF16).ok());
}

TEST(GgufWriterTest, StreamedTensorMatchesBufferedOne) {
  const std::vector<float> values = Ramp(32 * 5, 1.0f);
  GgufWriter writer;
  writer.SetUint32("general.alignment", 64);
  ASSERT_TRUE(writer
                  .AddTensor("small", {1}, GgmlType::kF32,
                             *EncodeTensor(std::vector<float>{7.0f}, GgmlType::kF32))
                  .ok());
  ASSERT_TRUE(writer
                  .AddTensor("streamed", {32, 5}, GgmlType::kQ8_0,
                             [&](GgufByteSink& sink) -> absl::Status {
                               for (size_t row = 0; row < 5; ++row) {  // One row per piece.
                                 auto bytes = EncodeTensor(
                                     std::span<const float>(values).subspan(row * 32, 32),
                                     GgmlType::kQ8_0);
                                 if (!bytes.ok()) return bytes.status();
                                 if (auto s = sink.Write(*bytes); !s.ok()) return s;
                               }
                               return absl::OkStatus();
                             })
                  .ok());
  const std::string path = MakeTempDir() + "/streamed.gguf";
  ASSERT_TRUE(writer.WriteFile(path).ok());
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->alignment(), 64u);
  const GgufTensor* t = file->FindTensor("streamed");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 64, 0u);
  EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->num_bytes),
            *EncodeTensor(values, GgmlType::kQ8_0));
}

TEST(GgufWriterTest, ProducerWritingWrongByteCountFailsAndLeavesNoFile) {
  GgufWriter writer;
  ASSERT_TRUE(writer
                  .AddTensor("short", {4}, GgmlType::kF32,
                             [](GgufByteSink& sink) {
                               const uint8_t bytes[8] = {};
                               return sink.Write(bytes);
                             })
                  .ok());
  const std::string dir = MakeTempDir();
  const absl::Status status = writer.WriteFile(dir + "/bad.gguf");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("'short' wrote 8 bytes"));
  EXPECT_TRUE(ListDir(dir).empty()) << "neither the target nor the temp file may remain";
}

TEST(GgufWriterTest, ProducerErrorIsPropagatedWithTensorName) {
  GgufWriter writer;
  ASSERT_TRUE(writer
                  .AddTensor("w", {4}, GgmlType::kF32,
                             [](GgufByteSink&) { return absl::DataLossError("rng exploded"); })
                  .ok());
  const std::string dir = MakeTempDir();
  const absl::Status status = writer.WriteFile(dir + "/bad.gguf");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tensor 'w'"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("rng exploded"));
  EXPECT_TRUE(ListDir(dir).empty());
}

TEST(GgufWriterTest, FailedWriteKeepsExistingFile) {
  const std::string path = MakeTempDir() + "/keep.gguf";
  GgufWriter good;
  good.SetString("v", "old");
  ASSERT_TRUE(good.WriteFile(path).ok());
  GgufWriter bad;
  bad.SetString("v", "new");
  ASSERT_TRUE(bad.AddTensor("w", {4}, GgmlType::kF32,
                            [](GgufByteSink&) { return absl::InternalError("boom"); })
                  .ok());
  EXPECT_FALSE(bad.WriteFile(path).ok());
  auto file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(*file->GetString("v"), "old");
}

TEST(GgufWriterTest, WriteToMissingDirectoryNamesThePath) {
  GgufWriter writer;
  const std::string path = MakeTempDir() + "/no/such/dir/model.gguf";
  const absl::Status status = writer.WriteFile(path);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
}

TEST(GgufWriterTest, AddTensorRejectsInvalidTensors) {
  GgufWriter writer;
  ASSERT_TRUE(writer.AddTensor("a", {2}, GgmlType::kF16, std::vector<uint8_t>(4)).ok());
  EXPECT_THAT(
      std::string(writer.AddTensor("a", {2}, GgmlType::kF16, std::vector<uint8_t>(4)).message()),
      HasSubstr("already added"));
  EXPECT_THAT(
      std::string(writer.AddTensor("b", {2}, GgmlType::kF16, std::vector<uint8_t>(5)).message()),
      HasSubstr("got 5 bytes"));
  EXPECT_THAT(
      std::string(
          writer.AddTensor("c", {48, 2}, GgmlType::kQ8_0, std::vector<uint8_t>(34 * 3)).message()),
      HasSubstr("blocks hold 32"));
  EXPECT_FALSE(writer.AddTensor("d", {}, GgmlType::kF32, std::vector<uint8_t>()).ok());
  EXPECT_FALSE(
      writer.AddTensor("e", {1, 1, 1, 1, 1}, GgmlType::kF32, std::vector<uint8_t>(4)).ok());
  EXPECT_FALSE(writer.AddTensor("f", {0}, GgmlType::kF32, std::vector<uint8_t>()).ok());
  EXPECT_FALSE(
      writer.AddTensor(std::string(64, 'x'), {1}, GgmlType::kF32, std::vector<uint8_t>(4)).ok());
  EXPECT_FALSE(writer.AddTensor("g", {1}, GgmlType::kF32, GgufTensorProducer()).ok());
  EXPECT_EQ(writer.num_tensors(), 1u);
}

TEST(GgufWriterTest, SetValueRejectsUnwritableValues) {
  GgufWriter writer;
  GgufValue out_of_range;
  out_of_range.type = GgufValueType::kUint8;
  out_of_range.int_value = 256;
  EXPECT_EQ(writer.SetValue("k", out_of_range).code(), absl::StatusCode::kInvalidArgument);

  GgufValue mixed;
  mixed.type = GgufValueType::kArray;
  mixed.array_type = GgufValueType::kInt32;
  GgufValue s;
  s.type = GgufValueType::kString;
  mixed.array.push_back(s);
  EXPECT_EQ(writer.SetValue("k", mixed).code(), absl::StatusCode::kInvalidArgument);

  GgufValue too_deep;
  too_deep.type = GgufValueType::kArray;
  too_deep.array_type = GgufValueType::kArray;
  GgufValue middle;
  middle.type = GgufValueType::kArray;
  middle.array_type = GgufValueType::kArray;
  too_deep.array.push_back(middle);
  EXPECT_EQ(writer.SetValue("k", too_deep).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(writer.FindValue("k"), nullptr);
}

TEST(GgufWriterTest, BadAlignmentIsRejected) {
  GgufWriter writer;
  writer.SetUint32("general.alignment", 48);
  const std::string dir = MakeTempDir();
  const absl::Status status = writer.WriteFile(dir + "/a.gguf");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("power of two"));
  EXPECT_TRUE(ListDir(dir).empty());
}

}  // namespace
}  // namespace glimpse::model
