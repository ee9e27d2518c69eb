#include "model/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace glimpse::model {
namespace {

constexpr char kModelPath[] = "models/tinycode-4m-f16.gguf";

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(GgufTest, OpensBundledModelWithItsMetadataAndTensors) {
  auto file = GgufFile::Open(kModelPath);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(f.GetInt("llama.embedding_length").value(), 192);
  EXPECT_EQ(f.GetInt("llama.block_count").value(), 6);
  EXPECT_FLOAT_EQ(f.GetFloat("llama.rope.freq_base").value(), 10000.0);
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.tokens").value().size(), 4096u);
  const GgufTensor* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, GgmlType::kF16);
  EXPECT_EQ(embd->dims, (std::vector<uint64_t>{192, 4096}));
  EXPECT_EQ(embd->num_bytes, 192u * 4096 * 2);
  // 3,934,656 parameters per the model card.
  uint64_t params = 0;
  for (const GgufTensor& t : f.tensors()) params += t.num_elements;
  EXPECT_EQ(params, 3934656u);
}

TEST(GgufTest, TypedAccessorsReportMissingAndMistypedKeys) {
  auto file = GgufFile::Open(kModelPath);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->GetInt("no.such.key").status().code(), absl::StatusCode::kNotFound);
  auto wrong = (*file)->GetInt("general.architecture");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(wrong.status().message()).find("general.architecture"), std::string::npos);
}

TEST(GgufTest, MissingFileIsNotFoundAndNamesThePath) {
  auto file = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(file.status().message()).find("/nonexistent/model.gguf"), std::string::npos);
}

TEST(GgufTest, WrongMagicIsRejected) {
  std::vector<uint8_t> bytes = ReadAll(kModelPath);
  bytes[0] = 'X';
  auto file = GgufFile::FromBytes(bytes.data(), bytes.size(), "bad.gguf");
  ASSERT_FALSE(file.ok());
  EXPECT_NE(std::string(file.status().message()).find("magic"), std::string::npos);
}

TEST(GgufTest, UnsupportedTensorTypeIsNamed) {
  std::vector<uint8_t> bytes = ReadAll(kModelPath);
  auto good = GgufFile::FromBytes(bytes.data(), bytes.size(), "x");
  ASSERT_TRUE(good.ok());
  // Find the first tensor info ("token_embd.weight") and set its type field to Q4_K (12).
  const std::string name = "token_embd.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  size_t pos = static_cast<size_t>(it - bytes.begin()) + name.size();
  uint32_t num_dims;
  std::memcpy(&num_dims, &bytes[pos], 4);
  pos += 4 + 8 * num_dims;
  const uint32_t q4k = 12;
  std::memcpy(&bytes[pos], &q4k, 4);
  auto file = GgufFile::FromBytes(bytes.data(), bytes.size(), "x");
  ASSERT_FALSE(file.ok());
  EXPECT_NE(std::string(file.status().message()).find("ggml type 12"), std::string::npos)
      << file.status();
}

// Truncations anywhere in the header, metadata and tensor table must give a clean error: the
// parser may never read past the end. Under --config=asan an overread aborts the test. Every
// prefix up to 16 KiB (the header, every scalar key and the start of the token arrays) and
// in the last 512 bytes (the end of the tensor table, the alignment padding), every 7th in
// between (each residue of every field's bytes, over the many elements of the arrays): each
// parse reads the whole prefix, so every prefix of the 89 KiB would take minutes sanitized.
TEST(GgufTest, EveryTruncationFailsCleanly) {
  const std::vector<uint8_t> full = ReadAll(kModelPath);
  auto good = GgufFile::FromBytes(full.data(), full.size(), "x");
  ASSERT_TRUE(good.ok());
  size_t header_end = full.size();  // where the first tensor's data begins
  for (const GgufTensor& t : (*good)->tensors()) {
    header_end = std::min(header_end, static_cast<size_t>(t.data - full.data()));
  }
  ASSERT_GT(header_end, 32768u) << "the bundled model's metadata was expected to be larger";
  size_t tried = 0;
  for (size_t n = 0; n < header_end; n += (n < 16384 || n + 512 >= header_end) ? 1 : 7) {
    // A fresh heap copy of exactly n bytes, so ASan catches any read past it.
    std::unique_ptr<uint8_t[]> copy(new uint8_t[n == 0 ? 1 : n]);
    std::memcpy(copy.get(), full.data(), n);
    auto file = GgufFile::FromBytes(copy.get(), n, "truncated.gguf");
    ASSERT_FALSE(file.ok()) << "a " << n << "-byte prefix parsed";
    ASSERT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << n << " bytes";
    ++tried;
  }
  EXPECT_GT(tried, 16384u + 512u);
}

// Seeded byte flips in the header, metadata and tensor table: each either parses (a flip in
// a string's text, say) with every tensor inside the file, or fails with InvalidArgument.
TEST(GgufTest, RandomByteFlipsNeverReadOutOfBounds) {
  const std::vector<uint8_t> full = ReadAll(kModelPath);
  auto good = GgufFile::FromBytes(full.data(), full.size(), "x");
  ASSERT_TRUE(good.ok());
  // The header + metadata + tensor table end where the first tensor's data begins.
  size_t header_end = full.size();
  for (const GgufTensor& t : (*good)->tensors()) {
    header_end = std::min(header_end, static_cast<size_t>(t.data - full.data()));
  }
  std::mt19937 rng(1234);
  int failures = 0;
  // One working copy; each trial's flips are undone afterwards (copying 8 MB per trial would
  // dominate the test under the sanitizers).
  std::vector<uint8_t> bytes = full;
  for (int trial = 0; trial < 1500; ++trial) {
    std::vector<size_t> flipped;
    const int num_flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < num_flips; ++i) {
      const size_t pos = rng() % header_end;
      flipped.push_back(pos);
      // Half the time a random byte, half the time a high-impact 0xff/0x00 (lengths, counts).
      bytes[pos] = (rng() % 2) ? static_cast<uint8_t>(rng()) : ((rng() % 2) ? 0xff : 0x00);
    }
    auto file = GgufFile::FromBytes(bytes.data(), bytes.size(), "flipped.gguf");
    for (size_t pos : flipped) bytes[pos] = full[pos];
    if (!file.ok()) {
      ASSERT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
      ++failures;
      continue;
    }
    for (const GgufTensor& t : (*file)->tensors()) {
      ASSERT_GE(t.data, bytes.data());
      ASSERT_LE(t.data + t.num_bytes, bytes.data() + bytes.size());
    }
  }
  EXPECT_GT(failures, 100);  // The flips do hit structure, not only string text.
}

}  // namespace
}  // namespace glimpse::model
