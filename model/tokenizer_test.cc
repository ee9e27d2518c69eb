#include "model/tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/gguf.h"

namespace glimpse::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Test data paths, relative to the workspace root (the runfiles root under Bazel).
constexpr char kSpmVocabPath[] = "tests/data/tokenizer/ggml-vocab-llama-spm.gguf";
constexpr char kBundledModelPath[] = "models/tinycode-4m-f16.gguf";
constexpr char kTokenizeRefsPath[] = "tests/data/refs/tokenize.jsonl";
constexpr char kGreedyShortPath[] = "tests/data/refs/greedy_short.jsonl";
constexpr char kGreedyLongPath[] = "tests/data/refs/greedy_long.jsonl";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false));
    EXPECT_FALSE(lines.back().is_discarded()) << "bad JSON line in " << path;
  }
  return lines;
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path) {
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromGguf(**gguf);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// A small synthetic vocabulary: <unk> <s> </s>, byte tokens for a few bytes, and pieces.
TokenizerVocab SmallVocab() {
  TokenizerVocab vocab;
  auto add = [&](std::string piece, float score, TokenType type) {
    vocab.pieces.push_back(std::move(piece));
    vocab.scores.push_back(score);
    vocab.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);   // 0
  add("<s>", 0, TokenType::kControl);     // 1
  add("</s>", 0, TokenType::kControl);    // 2
  add("<0x41>", 0, TokenType::kByte);     // 3  'A'
  add("<0xC3>", 0, TokenType::kByte);     // 4
  add("<0xA9>", 0, TokenType::kByte);     // 5
  add("\xE2\x96\x81", -1, TokenType::kNormal);  // 6  "▁"
  add("a", -2, TokenType::kNormal);       // 7
  add("b", -2, TokenType::kNormal);       // 8
  add("c", -2, TokenType::kNormal);       // 9
  add("aa", -3, TokenType::kNormal);      // 10
  add("ab", -5, TokenType::kNormal);      // 11
  add("bc", -4, TokenType::kNormal);      // 12
  add("\xE2\x96\x81" "a", -3, TokenType::kNormal);  // 13 "▁a"
  add("<tool>", 0, TokenType::kUserDefined);         // 14
  add("x", -9, TokenType::kUnused);                  // 15
  return vocab;
}

std::unique_ptr<Tokenizer> SmallTokenizer(bool add_space_prefix = false) {
  TokenizerVocab vocab = SmallVocab();
  vocab.add_space_prefix = add_space_prefix;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromVocab(std::move(vocab));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

// ---- llama.cpp reference vectors -----------------------------------------------------------

TEST(TokenizerTest, LlamaSpmVocabMatchesEveryLlamaCppTestVector) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kSpmVocabPath);
  ASSERT_NE(tokenizer, nullptr);
  const std::string inputs = ReadFile(std::string(kSpmVocabPath) + ".inp");
  const std::string outputs = ReadFile(std::string(kSpmVocabPath) + ".out");

  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0;;) {
    const size_t match = inputs.find(separator, pos);
    if (match == std::string::npos) break;
    texts.push_back(inputs.substr(pos, match - pos));
    pos = match + separator.size();
  }
  std::vector<std::vector<int32_t>> expected;
  std::istringstream lines(outputs);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<int32_t> ids;
    for (int32_t id; fields >> id;) ids.push_back(id);
    expected.push_back(std::move(ids));
  }
  ASSERT_GT(texts.size(), 40u);
  ASSERT_EQ(texts.size(), expected.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(tokenizer->Encode(texts[i], /*add_special=*/false, /*parse_special=*/false),
              expected[i])
        << "vector " << i << ": '" << texts[i] << "'";
  }
}

TEST(TokenizerTest, BundledModelMatchesEveryLlamaCppTokenizeReference) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<nlohmann::json> refs = ReadJsonLines(kTokenizeRefsPath);
  ASSERT_EQ(refs.size(), 100u);
  for (const nlohmann::json& ref : refs) {
    // llama-server's /tokenize: no BOS/EOS, special-token text parsed (its default).
    EXPECT_EQ(tokenizer->Encode(ref["text"].get<std::string>(), /*add_special=*/false,
                                /*parse_special=*/true),
              ref["tokens"].get<std::vector<int32_t>>())
        << ref["id"];
  }
}

TEST(TokenizerTest, BundledModelEncodesGreedyPromptsWithBosAsLlamaCpp) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  int num_checked = 0;
  for (const char* path : {kGreedyShortPath, kGreedyLongPath}) {
    for (const nlohmann::json& ref : ReadJsonLines(path)) {
      EXPECT_EQ(tokenizer->Encode(ref["prompt"].get<std::string>(), /*add_special=*/true,
                                  /*parse_special=*/true),
                ref["prompt_tokens"].get<std::vector<int32_t>>())
          << ref["id"];
      ++num_checked;
    }
  }
  EXPECT_EQ(num_checked, 40 + 19);
}

TEST(TokenizerTest, BundledModelPiecesOfGreedyOutputsConcatenateToReferenceText) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  for (const char* path : {kGreedyShortPath, kGreedyLongPath}) {
    for (const nlohmann::json& ref : ReadJsonLines(path)) {
      std::string text;
      for (int32_t id : ref["tokens"].get<std::vector<int32_t>>()) {
        text += tokenizer->TokenToPiece(id);
      }
      EXPECT_EQ(text, ref["text"].get<std::string>()) << ref["id"];
    }
  }
}

TEST(TokenizerTest, DecodeInvertsEncodeOnReferenceTexts) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  std::vector<std::string> texts;
  for (const nlohmann::json& ref : ReadJsonLines(kTokenizeRefsPath)) {
    texts.push_back(ref["text"].get<std::string>());
  }
  for (const nlohmann::json& ref : ReadJsonLines(kGreedyShortPath)) {
    texts.push_back(ref["prompt"].get<std::string>());
  }
  int num_checked = 0;
  for (const std::string& text : texts) {
    if (text.find("</s>") != std::string::npos || text.find("<s>") != std::string::npos ||
        text.find("<unk>") != std::string::npos) {
      continue;  // Control-token text does not survive skip_special decoding.
    }
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text, /*add_special=*/false)), text);
    ++num_checked;
  }
  EXPECT_GT(num_checked, 130);
}

// ---- Encoding rules ------------------------------------------------------------------------

TEST(TokenizerTest, RareCharacterFallsBackToItsUtf8ByteTokens) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  // U+1F999 LLAMA is F0 9F A6 99 in UTF-8; the 4,096-piece vocabulary has no piece for it.
  const std::vector<int32_t> ids = tokenizer->Encode("\xF0\x9F\xA6\x99", false);
  EXPECT_THAT(ids, ElementsAre(tokenizer->PieceToId("\xE2\x96\x81"),
                               tokenizer->PieceToId("<0xF0>"), tokenizer->PieceToId("<0x9F>"),
                               tokenizer->PieceToId("<0xA6>"), tokenizer->PieceToId("<0x99>")));
  EXPECT_EQ(tokenizer->type(ids[1]), TokenType::kByte);
  EXPECT_EQ(tokenizer->TokenToPiece(ids[1]), "\xF0");
  EXPECT_EQ(tokenizer->Decode(ids), "\xF0\x9F\xA6\x99");
}

TEST(TokenizerTest, EmptyTextGivesNothingOrJustBos) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_TRUE(tokenizer->Encode("", /*add_special=*/false).empty());
  EXPECT_THAT(tokenizer->Encode("", /*add_special=*/true), ElementsAre(tokenizer->bos_id()));
}

TEST(TokenizerTest, AddSpecialAddsBosAndEosAsConfigured) {
  TokenizerVocab vocab = SmallVocab();
  vocab.add_space_prefix = false;
  vocab.add_bos = true;
  vocab.add_eos = true;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromVocab(std::move(vocab));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Encode("c", /*add_special=*/true), ElementsAre(1, 9, 2));
  EXPECT_THAT((*tokenizer)->Encode("c", /*add_special=*/false), ElementsAre(9));
}

TEST(TokenizerTest, HigherScoringMergeWins) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer();
  // "ab" (-5) and "bc" (-4) compete for the 'b': "bc" scores higher.
  EXPECT_THAT(tokenizer->Encode("abc", false), ElementsAre(7, 12));
}

TEST(TokenizerTest, EqualScoresMergeLeftmostPairFirst) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer();
  EXPECT_THAT(tokenizer->Encode("aaa", false), ElementsAre(10, 7));
  EXPECT_THAT(tokenizer->Encode("aaaaa", false), ElementsAre(10, 10, 7));
}

TEST(TokenizerTest, DummyPrefixAndSpacesBecomeSpaceMarker) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer(/*add_space_prefix=*/true);
  // "▁a" merges before "▁" alone; the inner space is a "▁" that merges with the next 'a'.
  EXPECT_THAT(tokenizer->Encode("a a", false), ElementsAre(13, 13));
  EXPECT_THAT(tokenizer->Encode("b", false), ElementsAre(6, 8));
  std::unique_ptr<Tokenizer> no_prefix = SmallTokenizer(/*add_space_prefix=*/false);
  EXPECT_THAT(no_prefix->Encode("b", false), ElementsAre(8));
}

TEST(TokenizerTest, MissingCharactersUseByteTokensOrUnknown) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer();
  // 'A' has a byte token; 'é' (C3 A9) is two byte tokens; 'Z' has none and becomes <unk>.
  EXPECT_THAT(tokenizer->Encode("A\xC3\xA9Z", false), ElementsAre(3, 4, 5, 0));
}

TEST(TokenizerTest, InvalidUtf8IsTokenizedByteWiseWithoutCrashing) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  // A stray continuation byte, a truncated 3-byte lead, a lead followed by ASCII, 0xFF.
  const std::string text = "a\x80 b\xE2\x82x\xC3(\xFF";
  const std::vector<int32_t> ids = tokenizer->Encode(text, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(tokenizer->Decode(ids), text);
  const std::string truncated_end = "ok\xF0\x9F";
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(truncated_end, false)), truncated_end);
}

TEST(TokenizerTest, TruncatedLeadByteSwallowsFollowingSpaceMarkerAsLlamaCppDoes) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  // Spaces are escaped to "▁" (E2 96 81) before the text is split into characters, and a
  // character's length comes from its lead byte alone, so E2 82 claims the first byte of the
  // following "▁": the characters are [E2 82 E2] [96] [81], all byte fallback. The space
  // therefore decodes as a literal "▁".
  const std::vector<int32_t> ids = tokenizer->Encode("\xE2\x82 b", false);
  std::vector<int32_t> expected = {tokenizer->PieceToId("\xE2\x96\x81")};
  for (const char* byte : {"<0xE2>", "<0x82>", "<0xE2>", "<0x96>", "<0x81>"}) {
    expected.push_back(tokenizer->PieceToId(byte));
  }
  ASSERT_EQ(ids.size(), expected.size() + 1);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end() - 1), expected);
  EXPECT_EQ(tokenizer->Decode(ids), "\xE2\x82\xE2\x96\x81" "b");
}

TEST(TokenizerTest, ParseSpecialTurnsControlTokenTextIntoTheToken) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  const int32_t eos = tokenizer->eos_id();
  const std::vector<int32_t> parsed = tokenizer->Encode("x</s>y", false, /*parse_special=*/true);
  // The text after a special token gets the dummy prefix again, as in llama.cpp.
  std::vector<int32_t> expected = tokenizer->Encode("x", false);
  expected.push_back(eos);
  for (int32_t id : tokenizer->Encode("y", false)) expected.push_back(id);
  EXPECT_EQ(parsed, expected);

  const std::vector<int32_t> plain = tokenizer->Encode("x</s>y", false, /*parse_special=*/false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), eos), 0);
  EXPECT_EQ(tokenizer->Decode(plain), "x</s>y");
}

TEST(TokenizerTest, UserDefinedTokensAreMatchedEvenWithoutParseSpecial) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer();
  EXPECT_THAT(tokenizer->Encode("a<tool>b", false, /*parse_special=*/false),
              ElementsAre(7, 14, 8));
  // Control tokens only with parse_special; "<s>" is otherwise plain text (here: bytes/unk).
  EXPECT_THAT(tokenizer->Encode("<s>", false, /*parse_special=*/true), ElementsAre(1));
  EXPECT_THAT(tokenizer->Encode("<s>", false, /*parse_special=*/false), ElementsAre(0, 0, 0));
}

TEST(TokenizerTest, LongerSpecialTokenTakesPrecedenceOverItsPrefix) {
  TokenizerVocab vocab = SmallVocab();
  vocab.add_space_prefix = false;
  vocab.pieces.push_back("<tool>x");
  vocab.scores.push_back(0);
  vocab.types.push_back(TokenType::kUserDefined);  // 16
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromVocab(std::move(vocab));
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_THAT((*tokenizer)->Encode("<tool>x<tool>", false), ElementsAre(16, 14));
}

// ---- Pieces and decoding -------------------------------------------------------------------

TEST(TokenizerTest, TokenToPieceRendersEachTokenTypeAsLlamaCpp) {
  std::unique_ptr<Tokenizer> tokenizer = SmallTokenizer();
  EXPECT_EQ(tokenizer->TokenToPiece(13), " a");          // '▁' → ' '
  EXPECT_EQ(tokenizer->TokenToPiece(3), "A");            // <0x41>
  EXPECT_EQ(tokenizer->TokenToPiece(4), "\xC3");         // a lone byte
  EXPECT_EQ(tokenizer->TokenToPiece(1), "");             // control
  EXPECT_EQ(tokenizer->TokenToPiece(1, true), "<s>");
  EXPECT_EQ(tokenizer->TokenToPiece(0), "");             // unknown
  EXPECT_EQ(tokenizer->TokenToPiece(0, true), "<unk>");
  EXPECT_EQ(tokenizer->TokenToPiece(14), "<tool>");      // user-defined: always its text
  EXPECT_EQ(tokenizer->TokenToPiece(15), "");            // unused
  EXPECT_EQ(tokenizer->TokenToPiece(-1), "");
  EXPECT_EQ(tokenizer->TokenToPiece(tokenizer->vocab_size()), "");
}

TEST(TokenizerTest, DecodeStripsOnlyTheDummyPrefixSpace) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("hello world", false)), "hello world");
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("  two spaces", false)), "  two spaces");
}

TEST(TokenizerTest, DecodeSkipsLeadingBosAndKeepsTheSpaceAfterIt) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = tokenizer->Encode("hello", /*add_special=*/true);
  ASSERT_EQ(ids.front(), tokenizer->bos_id());
  // llama_detokenize(remove_special=true): BOS dropped, and then no space is stripped.
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/true), " hello");
  // llama_detokenize(remove_special=false, unparse_special=true).
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/false), "<s> hello");
  std::vector<int32_t> with_eos = tokenizer->Encode("hello", false);
  with_eos.push_back(tokenizer->eos_id());
  EXPECT_EQ(tokenizer->Decode(with_eos, /*skip_special=*/true), "hello");
  EXPECT_EQ(tokenizer->Decode(with_eos, /*skip_special=*/false), "hello</s>");
}

// ---- Metadata ------------------------------------------------------------------------------

TEST(TokenizerTest, FromGgufReadsBundledModelSpecialTokens) {
  std::unique_ptr<Tokenizer> tokenizer = LoadTokenizer(kBundledModelPath);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->vocab_size(), 4096);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->unk_id(), 0);
  EXPECT_TRUE(tokenizer->add_bos());
  EXPECT_FALSE(tokenizer->add_eos());
  EXPECT_TRUE(tokenizer->add_space_prefix());
  EXPECT_TRUE(tokenizer->IsEndOfGeneration(2));
  EXPECT_FALSE(tokenizer->IsEndOfGeneration(1));
  EXPECT_EQ(tokenizer->piece(1), "<s>");
  EXPECT_EQ(tokenizer->type(1), TokenType::kControl);
  EXPECT_EQ(tokenizer->PieceToId("<0x0A>"), 13);
}

TEST(TokenizerTest, EndOfGenerationIncludesEotAndKnownEndTexts) {
  TokenizerVocab vocab = SmallVocab();
  vocab.pieces.push_back("<|im_end|>");  // 16: an end-of-turn text llama.cpp recognises
  vocab.scores.push_back(0);
  vocab.types.push_back(TokenType::kNormal);
  vocab.eot_id = 9;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromVocab(std::move(vocab));
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(2));
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(9));
  EXPECT_TRUE((*tokenizer)->IsEndOfGeneration(16));
  EXPECT_EQ((*tokenizer)->type(16), TokenType::kControl);
  EXPECT_FALSE((*tokenizer)->IsEndOfGeneration(7));
}

// Builds a metadata-only GGUF v3 image in memory.
class GgufImage {
 public:
  void String(const std::string& key, const std::string& value) {
    Key(key, 8);
    Str(value);
    ++count_;
  }
  void Uint32(const std::string& key, uint32_t value) {
    Key(key, 4);
    Pod(value);
    ++count_;
  }
  void StringArray(const std::string& key, const std::vector<std::string>& values) {
    Key(key, 9);
    Pod(uint32_t{8});
    Pod(uint64_t{values.size()});
    for (const std::string& v : values) Str(v);
    ++count_;
  }
  void FloatArray(const std::string& key, const std::vector<float>& values) {
    Key(key, 9);
    Pod(uint32_t{6});
    Pod(uint64_t{values.size()});
    for (float v : values) Pod(v);
    ++count_;
  }
  void Int32Array(const std::string& key, const std::vector<int32_t>& values) {
    Key(key, 9);
    Pod(uint32_t{5});
    Pod(uint64_t{values.size()});
    for (int32_t v : values) Pod(v);
    ++count_;
  }
  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    auto put64 = [&out](uint64_t v) {
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
    };
    put64(0);       // tensors
    put64(count_);  // metadata
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  template <typename T>
  void Pod(T v) {
    uint8_t bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    body_.insert(body_.end(), bytes, bytes + sizeof(T));
  }
  void Str(const std::string& s) {
    Pod(uint64_t{s.size()});
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void Key(const std::string& key, uint32_t type) {
    Str(key);
    Pod(type);
  }
  std::vector<uint8_t> body_;
  uint64_t count_ = 0;
};

const std::vector<std::string> kTinyPieces = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a"};

GgufImage TinyVocabImage() {
  GgufImage image;
  image.String("tokenizer.ggml.model", "llama");
  image.StringArray("tokenizer.ggml.tokens", kTinyPieces);
  image.FloatArray("tokenizer.ggml.scores", {0, 0, 0, -1, -2});
  image.Int32Array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1});
  return image;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromImage(const GgufImage& image) {
  static std::vector<std::vector<uint8_t>>* keep_alive = new std::vector<std::vector<uint8_t>>;
  keep_alive->push_back(image.Bytes());
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf =
      GgufFile::FromBytes(keep_alive->back().data(), keep_alive->back().size(), "test.gguf");
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::FromGguf(**gguf);
}

TEST(TokenizerTest, FromGgufAcceptsMinimalLlamaVocabulary) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(TinyVocabImage());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 5);
  EXPECT_THAT((*tokenizer)->Encode("a", true), ElementsAre(1, 3, 4));
}

TEST(TokenizerTest, FromGgufRejectsMissingTokens) {
  GgufImage image;
  image.String("tokenizer.ggml.model", "llama");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.ggml.tokens"));
}

TEST(TokenizerTest, FromGgufRejectsUnsupportedModelNamingIt) {
  GgufImage image;
  image.String("tokenizer.ggml.model", "gpt2");
  image.StringArray("tokenizer.ggml.tokens", kTinyPieces);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("'gpt2'"));
}

TEST(TokenizerTest, FromGgufRejectsMissingModelName) {
  GgufImage image;
  image.StringArray("tokenizer.ggml.tokens", kTinyPieces);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.ggml.model"));
}

TEST(TokenizerTest, FromGgufRejectsScoresOfWrongLength) {
  GgufImage image;
  image.String("tokenizer.ggml.model", "llama");
  image.StringArray("tokenizer.ggml.tokens", kTinyPieces);
  image.FloatArray("tokenizer.ggml.scores", {0, 0, 0});
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.ggml.scores"));
}

TEST(TokenizerTest, FromGgufRejectsTokenTypesOfWrongLength) {
  GgufImage image;
  image.String("tokenizer.ggml.model", "llama");
  image.StringArray("tokenizer.ggml.tokens", kTinyPieces);
  image.Int32Array("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 1});
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.ggml.token_type"));
}

TEST(TokenizerTest, FromGgufRejectsSpecialIdOutsideVocabulary) {
  GgufImage image = TinyVocabImage();
  image.Uint32("tokenizer.ggml.eos_token_id", 5);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = TokenizerFromImage(image);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.ggml.eos_token_id"));
}

TEST(TokenizerTest, FromVocabRejectsMismatchedLengthsAndBadIds) {
  TokenizerVocab vocab = SmallVocab();
  vocab.scores.pop_back();
  EXPECT_EQ(Tokenizer::FromVocab(vocab).status().code(), absl::StatusCode::kInvalidArgument);
  vocab = SmallVocab();
  vocab.bos_id = 1000;
  EXPECT_EQ(Tokenizer::FromVocab(vocab).status().code(), absl::StatusCode::kInvalidArgument);
  vocab = SmallVocab();
  vocab.bos_id = kNoToken;  // add_bos without a BOS token
  EXPECT_EQ(Tokenizer::FromVocab(vocab).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromVocab(TokenizerVocab{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glimpse::model
