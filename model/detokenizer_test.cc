#include "model/detokenizer.h"

#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/utf8_check.h"

namespace glimpse::model {
namespace {

constexpr char kBundledModelPath[] = "models/tinycode-4m-f16.gguf";
constexpr char kGreedyShortPath[] = "tests/data/refs/greedy_short.jsonl";
constexpr char kGreedyLongPath[] = "tests/data/refs/greedy_long.jsonl";
constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

using glimpse::testing::IsValidUtf8;

std::unique_ptr<Tokenizer> LoadBundledTokenizer() {
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(kBundledModelPath);
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromGguf(**gguf);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

std::vector<int32_t> ByteTokens(const Tokenizer& tokenizer, std::string_view bytes) {
  std::vector<int32_t> ids;
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : bytes) {
    const uint8_t b = static_cast<uint8_t>(c);
    const std::string piece = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    ids.push_back(tokenizer.PieceToId(piece));
    EXPECT_NE(ids.back(), kNoToken) << piece;
  }
  return ids;
}

// Pushes every id, checks that every output is valid UTF-8, returns the concatenation.
std::string StreamAll(StreamingDetokenizer& stream, const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) {
    const std::string delta = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(delta)) << "after id " << id;
    text += delta;
  }
  const std::string tail = stream.Flush();
  EXPECT_TRUE(IsValidUtf8(tail));
  return text + tail;
}

TEST(StreamingDetokenizerTest, HoldsEmojiByteTokensUntilTheCharacterIsComplete) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  StreamingDetokenizer stream(*tokenizer);
  const std::vector<int32_t> ids = ByteTokens(*tokenizer, "\xF0\x9F\xA6\x99");  // U+1F999
  EXPECT_EQ(stream.Push(ids[0]), "");
  EXPECT_EQ(stream.Push(ids[1]), "");
  EXPECT_EQ(stream.Push(ids[2]), "");
  EXPECT_EQ(stream.num_pending_bytes(), 3u);
  EXPECT_EQ(stream.Push(ids[3]), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(stream.num_pending_bytes(), 0u);
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamingDetokenizerTest, NeverEmitsInvalidUtf8ForEncodedEmojiText) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  // U+1F999, "café", "日本", U+1F600: none of the emoji are pieces of the vocabulary.
  const std::string text =
      "x = '\xF0\x9F\xA6\x99 caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80!'";
  const std::vector<int32_t> ids = tokenizer->Encode(text, /*add_special=*/false);
  int num_byte_tokens = 0;
  for (int32_t id : ids) num_byte_tokens += tokenizer->type(id) == TokenType::kByte;
  ASSERT_GE(num_byte_tokens, 8);  // At least both emoji are spelled byte by byte.
  StreamingDetokenizer stream(*tokenizer, {.strip_leading_space = true});
  EXPECT_EQ(StreamAll(stream, ids), text);
  EXPECT_EQ(tokenizer->Decode(ids), text);
}

TEST(StreamingDetokenizerTest, StrayContinuationByteBecomesReplacementAtOnce) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  StreamingDetokenizer stream(*tokenizer);
  EXPECT_EQ(stream.Push(ByteTokens(*tokenizer, "\x80")[0]), kReplacement);
  EXPECT_EQ(stream.Push(ByteTokens(*tokenizer, "\xFF")[0]), kReplacement);
  EXPECT_EQ(stream.num_pending_bytes(), 0u);
}

TEST(StreamingDetokenizerTest, InterruptedSequenceGivesOneReplacementPerByte) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  StreamingDetokenizer stream(*tokenizer);
  const std::vector<int32_t> ids = ByteTokens(*tokenizer, "\xE2\x82");
  EXPECT_EQ(stream.Push(ids[0]), "");
  EXPECT_EQ(stream.Push(ids[1]), "");
  // 'A' cannot continue E2 82: both held bytes are invalid, then 'A' itself.
  EXPECT_EQ(stream.Push(ByteTokens(*tokenizer, "A")[0]),
            std::string(kReplacement) + kReplacement + "A");
}

TEST(StreamingDetokenizerTest, OverlongAndSurrogateLeadsAreRejected) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  StreamingDetokenizer stream(*tokenizer);
  // C0 80 (overlong NUL) and ED A0 80 (a UTF-16 surrogate) are never valid.
  std::string out;
  for (int32_t id : ByteTokens(*tokenizer, "\xC0\x80\xED\xA0\x80")) out += stream.Push(id);
  out += stream.Flush();
  std::string expected;
  for (int i = 0; i < 5; ++i) expected += kReplacement;
  EXPECT_EQ(out, expected);
}

TEST(StreamingDetokenizerTest, FlushReplacesAnIncompleteTail) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  StreamingDetokenizer stream(*tokenizer);
  std::string out;
  for (int32_t id : ByteTokens(*tokenizer, "ok\xF0\x9F")) out += stream.Push(id);
  EXPECT_EQ(out, "ok");
  EXPECT_EQ(stream.Flush(), std::string(kReplacement) + kReplacement);
  EXPECT_EQ(stream.num_pending_bytes(), 0u);
}

TEST(StreamingDetokenizerTest, KeepsLeadingSpaceByDefaultAndStripsItOnRequest) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = tokenizer->Encode("hello world", /*add_special=*/false);
  StreamingDetokenizer raw(*tokenizer);
  EXPECT_EQ(StreamAll(raw, ids), " hello world");
  StreamingDetokenizer stripped(*tokenizer, {.strip_leading_space = true});
  EXPECT_EQ(StreamAll(stripped, ids), "hello world");
  // After Flush the stream starts over, so the next first piece is stripped again.
  EXPECT_EQ(StreamAll(stripped, ids), "hello world");
}

TEST(StreamingDetokenizerTest, MatchesDecodeAroundBosAndSpecialTokens) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  std::vector<int32_t> ids = tokenizer->Encode("def f():", /*add_special=*/true);
  ids.push_back(tokenizer->eos_id());
  StreamingDetokenizer skip(*tokenizer, {.strip_leading_space = true});
  EXPECT_EQ(StreamAll(skip, ids), tokenizer->Decode(ids, /*skip_special=*/true));
  StreamingDetokenizer render(*tokenizer,
                              {.strip_leading_space = true, .render_special = true});
  EXPECT_EQ(StreamAll(render, ids), tokenizer->Decode(ids, /*skip_special=*/false));
}

TEST(StreamingDetokenizerTest, ReproducesReferenceTextOfGreedyOutputs) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  int num_checked = 0;
  for (const char* path : {kGreedyShortPath, kGreedyLongPath}) {
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << path;
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json ref = nlohmann::json::parse(line, nullptr, false);
      ASSERT_FALSE(ref.is_discarded());
      const std::vector<int32_t> ids = ref["tokens"].get<std::vector<int32_t>>();
      StreamingDetokenizer stream(*tokenizer);  // llama-server style: nothing stripped.
      EXPECT_EQ(StreamAll(stream, ids), ref["text"].get<std::string>()) << ref["id"];
      StreamingDetokenizer stripped(*tokenizer, {.strip_leading_space = true});
      EXPECT_EQ(StreamAll(stripped, ids), tokenizer->Decode(ids)) << ref["id"];
      ++num_checked;
    }
  }
  EXPECT_EQ(num_checked, 40 + 19);
}

TEST(StreamingDetokenizerTest, RandomTokenStreamsAreValidUtf8AndMatchDecodeWhenValid) {
  std::unique_ptr<Tokenizer> tokenizer = LoadBundledTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  // Random tokens mixed with multi-byte characters spelled as byte tokens and the odd random
  // byte, so that sequences are split across pushes, interrupted, or invalid.
  static const char* kChars[] = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\xA6\x99",
                                 "\xF4\x8F\xBF\xBF", "\xEF\xBF\xBD"};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> any_id(0, tokenizer->vocab_size() - 1);
  int num_valid = 0;
  int num_invalid = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 16; ++i) {
      const uint32_t pick = rng() % 20;
      if (pick < 10) {
        ids.push_back(any_id(rng));
      } else if (pick < 19) {
        for (int32_t id : ByteTokens(*tokenizer, kChars[rng() % 5])) ids.push_back(id);
      } else {
        ids.push_back(ByteTokens(*tokenizer, std::string(1, static_cast<char>(rng())))[0]);
      }
    }
    StreamingDetokenizer stream(*tokenizer, {.strip_leading_space = true});
    const std::string streamed = StreamAll(stream, ids);  // Checks every delta is valid.
    const std::string decoded = tokenizer->Decode(ids);
    if (IsValidUtf8(decoded)) {
      EXPECT_EQ(streamed, decoded);
      ++num_valid;
    } else {
      ++num_invalid;
    }
  }
  EXPECT_GT(num_valid, 100);
  EXPECT_GT(num_invalid, 100);
}

}  // namespace
}  // namespace glimpse::model
