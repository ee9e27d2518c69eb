#include "scheduler/output_text.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "model/detokenizer.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/utf8_check.h"

namespace glimpse::scheduler {
namespace {

using model::Tokenizer;
using Kind = StopDecision::Kind;

constexpr char kBundledModelPath[] = "models/tinycode-4m-f16.gguf";
constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
constexpr char kEAcute[] = "\xC3\xA9";             // é
constexpr char kGrinning[] = "\xF0\x9F\x98\x80";   // 😀

using glimpse::testing::IsValidUtf8;

class OutputTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<model::GgufFile>> gguf =
        model::GgufFile::Open(kBundledModelPath);
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromGguf(**gguf);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(tokenizer).value().release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  const Tokenizer& tok() const { return *tokenizer_; }

  // Options whose full text (without stops) is Tokenizer::Decode(ids).
  static OutputTextOptions DecodeLikeOptions() {
    OutputTextOptions options;
    options.strip_leading_space = true;
    return options;
  }

  // The model's tokenization of `text` (a dummy-prefix space in front, no BOS).
  std::vector<int32_t> Encode(std::string_view text) const {
    return tok().Encode(text, /*add_special=*/false);
  }

  int32_t ByteToken(uint8_t b) const {
    static constexpr char kHex[] = "0123456789ABCDEF";
    const std::string piece = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    const int32_t id = tok().PieceToId(piece);
    EXPECT_NE(id, model::kNoToken) << piece;
    return id;
  }

  // One token per byte of `text`: the one-character piece for ASCII (▁ for a space) when the
  // vocabulary has it, else the byte-fallback token. Gives full control over token boundaries.
  std::vector<int32_t> CharTokens(std::string_view text) const {
    std::vector<int32_t> ids;
    for (char c : text) {
      int32_t id = model::kNoToken;
      if (c == ' ') {
        id = tok().PieceToId("\xE2\x96\x81");
      } else if (static_cast<uint8_t>(c) < 0x80) {
        id = tok().PieceToId(std::string(1, c));
      }
      ids.push_back(id != model::kNoToken ? id : ByteToken(static_cast<uint8_t>(c)));
    }
    return ids;
  }

  std::string Piece(int32_t id) const { return tok().TokenToPiece(id); }

  static inline Tokenizer* tokenizer_ = nullptr;
};

// What feeding a token stream to an OutputText produced.
struct Streamed {
  std::vector<std::string> deltas;  // One per appended token, then Finish()'s.
  std::string text;                 // All deltas concatenated.
  StopDecision stop;
  int32_t num_appended = 0;  // Tokens appended (up to and including a stopping one).
};

// Appends `ids` until a stop, then calls Finish(); checks every delta is valid UTF-8.
Streamed StreamAll(OutputText& output, const std::vector<int32_t>& ids) {
  Streamed result;
  for (int32_t id : ids) {
    AppendResult r = output.Append(id);
    ++result.num_appended;
    EXPECT_TRUE(IsValidUtf8(r.text)) << "delta " << result.deltas.size();
    result.deltas.push_back(r.text);
    result.text += r.text;
    if (r.stop.stopped()) {
      result.stop = r.stop;
      break;
    }
  }
  const std::string tail = output.Finish();
  EXPECT_TRUE(IsValidUtf8(tail));
  result.deltas.push_back(tail);
  result.text += tail;
  EXPECT_TRUE(output.finished());
  return result;
}

TEST_F(OutputTextTest, WithoutStopsStreamsTheDecodedTextOfAllTokens) {
  const std::vector<int32_t> ids = Encode("def add(x, y):\n    return x + y  # café\n");
  OutputText output(tok(), DecodeLikeOptions());
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.text, tok().Decode(ids));
  EXPECT_EQ(s.text, "def add(x, y):\n    return x + y  # café\n");
  EXPECT_FALSE(s.stop.stopped());
  EXPECT_EQ(s.num_appended, static_cast<int32_t>(ids.size()));
  EXPECT_EQ(output.num_tokens(), static_cast<int32_t>(ids.size()));
  // Without stop strings nothing is held back beyond incomplete UTF-8: each delta is what the
  // streaming detokenizer gives for that token.
  model::StreamingDetokenizer detok(tok(), {.strip_leading_space = true});
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(s.deltas[i], detok.Push(ids[i])) << i;
}

TEST_F(OutputTextTest, DefaultKeepsTheLeadingSpaceOfTheFirstPiece) {
  const std::vector<int32_t> ids = Encode("return x");
  OutputText output(tok(), OutputTextOptions{});
  EXPECT_EQ(StreamAll(output, ids).text, " return x");
}

TEST_F(OutputTextTest, StopStringInsideOneTokenTrimsItAndTheRestOfTheToken) {
  const std::vector<int32_t> ids = Encode("x = value\n    return result\n");
  // A token whose piece is long enough to hold the stop strictly inside it.
  size_t index = 0;
  while (index < ids.size() && Piece(ids[index]).size() < 5) ++index;
  ASSERT_LT(index, ids.size());
  const std::string piece = Piece(ids[index]);
  const std::string stop = piece.substr(1, 2);
  const std::string full = tok().Decode(ids);
  const size_t piece_start = tok().Decode(std::span(ids).first(index)).size();
  ASSERT_EQ(full.find(stop), piece_start + 1) << "stop must first occur inside the token";

  OutputTextOptions options = DecodeLikeOptions();
  options.stop_strings = {stop};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.kind, Kind::kStopString);
  EXPECT_EQ(s.stop.stop_string, stop);
  EXPECT_EQ(s.stop.token, ids[index]);
  EXPECT_EQ(s.num_appended, static_cast<int32_t>(index) + 1);
  EXPECT_EQ(output.num_tokens(), static_cast<int32_t>(index) + 1);
  EXPECT_EQ(s.text, full.substr(0, piece_start + 1));
  EXPECT_EQ(output.stop().kind, Kind::kStopString);
}

TEST_F(OutputTextTest, StopStringSpanningThreeTokensIsHeldBackThenTrimmed) {
  const std::vector<int32_t> ids = Encode("alpha beta gamma delta epsilon");
  // Find tokens i, i+1, i+2 with pieces of at least two bytes; the stop runs from the last
  // byte of piece i to the first byte of piece i+2.
  size_t i = 0;
  while (i + 2 < ids.size() &&
         (Piece(ids[i]).size() < 2 || Piece(ids[i + 2]).size() < 2)) {
    ++i;
  }
  ASSERT_LT(i + 2, ids.size());
  const std::string full = tok().Decode(ids);
  const size_t start = tok().Decode(std::span(ids).first(i + 1)).size() - 1;
  const size_t end = tok().Decode(std::span(ids).first(i + 2)).size() + 1;
  const std::string stop = full.substr(start, end - start);
  ASSERT_EQ(full.find(stop), start);

  OutputTextOptions options = DecodeLikeOptions();
  options.stop_strings = {stop};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.kind, Kind::kStopString);
  EXPECT_EQ(s.num_appended, static_cast<int32_t>(i) + 3);
  EXPECT_EQ(s.text, full.substr(0, start));
  // Token i's last byte was held back: everything before the stop was out after token i, and
  // nothing came after it.
  std::string through_i;
  for (size_t k = 0; k <= i; ++k) through_i += s.deltas[k];
  EXPECT_EQ(through_i, full.substr(0, start));
  EXPECT_EQ(s.deltas[i + 1], "");
  EXPECT_EQ(s.deltas[i + 2], "");
}

TEST_F(OutputTextTest, StopStringAtTheVeryStartEmitsNothing) {
  const std::vector<int32_t> ids = Encode("import os\nimport sys\n");
  OutputTextOptions options = DecodeLikeOptions();
  options.stop_strings = {"import"};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.kind, Kind::kStopString);
  EXPECT_EQ(s.text, "");
  for (const std::string& delta : s.deltas) EXPECT_EQ(delta, "");
}

TEST_F(OutputTextTest, FirstStopToCompleteWinsWhateverTheListOrder) {
  // "xabcd": "abc" completes at 'c', before "bcd" at 'd'.
  for (const std::vector<std::string>& stops :
       {std::vector<std::string>{"abc", "bcd"}, std::vector<std::string>{"bcd", "abc"}}) {
    OutputTextOptions options;
    options.stop_strings = stops;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, CharTokens("xabcd"));
    EXPECT_EQ(s.stop.stop_string, "abc");
    EXPECT_EQ(s.text, "x");
    EXPECT_EQ(s.num_appended, 4);
  }
  // "ab" completes before the longer "abc" could.
  OutputTextOptions options;
  options.stop_strings = {"abc", "ab"};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens("xabc"));
  EXPECT_EQ(s.stop.stop_string, "ab");
  EXPECT_EQ(s.text, "x");
  EXPECT_EQ(s.num_appended, 3);
}

TEST_F(OutputTextTest, StopEndingInsideAnotherCandidateWinsOverTheLongerOne) {
  // "bc" ends at 'c', inside "abcd", which would end later.
  OutputTextOptions options;
  options.stop_strings = {"abcd", "bc"};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens("abcd"));
  EXPECT_EQ(s.stop.stop_string, "bc");
  EXPECT_EQ(s.text, "a");
}

TEST_F(OutputTextTest, AtEqualEndsTheLongestStopWins) {
  OutputTextOptions options;
  options.stop_strings = {"bc", "abc"};
  options.include_stop_in_output = false;
  OutputText output(tok(), options);
  // "abc" and "bc" both end in the token "bc"; "abc" starts earlier.
  std::vector<int32_t> ids = CharTokens("xa");
  ids.push_back(tok().PieceToId("bc"));
  ASSERT_NE(ids.back(), model::kNoToken);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.stop_string, "abc");
  EXPECT_EQ(s.text, "x");
}

TEST_F(OutputTextTest, HeldBackPrefixIsReleasedWhenTheMatchFails) {
  OutputTextOptions options;
  options.stop_strings = {"abc", "bcd"};
  OutputText output(tok(), options);
  const std::vector<int32_t> ids = CharTokens("xabbe");
  EXPECT_EQ(output.Append(ids[0]).text, "x");
  EXPECT_EQ(output.Append(ids[1]).text, "");  // "a" may start "abc".
  EXPECT_EQ(output.num_held_bytes(), 1u);
  EXPECT_EQ(output.Append(ids[2]).text, "");  // "ab" may start "abc"; "b" may start "bcd".
  EXPECT_EQ(output.num_held_bytes(), 2u);
  // "abb": only the last "b" may still start "bcd".
  EXPECT_EQ(output.Append(ids[3]).text, "ab");
  EXPECT_EQ(output.num_held_bytes(), 1u);
  const AppendResult last = output.Append(ids[4]);
  EXPECT_EQ(last.text, "be");
  EXPECT_FALSE(last.stop.stopped());
  EXPECT_EQ(output.Finish(), "");
}

TEST_F(OutputTextTest, FinishReleasesAHeldBackPrefix) {
  OutputTextOptions options;
  options.stop_strings = {"abc"};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens("xab"));
  EXPECT_EQ(s.deltas, (std::vector<std::string>{"x", "", "", "ab"}));
  EXPECT_EQ(s.text, "xab");
  EXPECT_FALSE(s.stop.stopped());
}

TEST_F(OutputTextTest, IncludeStopInOutputKeepsTheStopButNotWhatFollowsIt) {
  // The stop ends inside a token; the rest of that token is still dropped.
  const std::vector<int32_t> ids = Encode("value = compute(data)\nprint(value)\n");
  const std::string full = tok().Decode(ids);
  const std::string stop = "compu";
  const size_t at = full.find(stop);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(full.find("compute"), at);
  for (bool include : {false, true}) {
    OutputTextOptions options = DecodeLikeOptions();
    options.stop_strings = {stop};
    options.include_stop_in_output = include;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, ids);
    EXPECT_EQ(s.stop.kind, Kind::kStopString);
    EXPECT_EQ(s.text, full.substr(0, include ? at + stop.size() : at)) << include;
    // The stopping token completed the stop; nothing after it was appended.
    const size_t through = tok().Decode(std::span(ids).first(s.num_appended)).size();
    EXPECT_GT(through, at + stop.size()) << "the stopping token has text after the stop";
    EXPECT_LT(tok().Decode(std::span(ids).first(s.num_appended - 1)).size(), at + stop.size());
  }
}

TEST_F(OutputTextTest, MinTokensDelaysStopStrings) {
  // Tokens: a b ▁ a b ▁ a b  ("ab" completes at tokens 2, 5 and 8).
  const std::vector<int32_t> ids = CharTokens("ab ab ab");
  struct Case {
    int32_t min_tokens;
    std::string text;
    int32_t num_appended;
  };
  for (const Case& c : {Case{0, "", 2}, Case{2, "", 2}, Case{3, "ab ", 5}, Case{5, "ab ", 5},
                        Case{6, "ab ab ", 8}, Case{9, "ab ab ab", 8}}) {
    OutputTextOptions options;
    options.stop_strings = {"ab"};
    options.min_tokens = c.min_tokens;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, ids);
    EXPECT_EQ(s.text, c.text) << "min_tokens " << c.min_tokens;
    EXPECT_EQ(s.num_appended, c.num_appended) << "min_tokens " << c.min_tokens;
    EXPECT_EQ(s.stop.stopped(), c.min_tokens <= 8) << "min_tokens " << c.min_tokens;
  }
}

TEST_F(OutputTextTest, StopStringStartedBeforeMinTokensCountsWhenItEndsAfter) {
  // "abc" starts at token 1 and ends at token 3 = min_tokens.
  OutputTextOptions options;
  options.stop_strings = {"abc"};
  options.min_tokens = 3;
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens("abcd"));
  EXPECT_EQ(s.stop.kind, Kind::kStopString);
  EXPECT_EQ(s.num_appended, 3);
  EXPECT_EQ(s.text, "");
}

TEST_F(OutputTextTest, ByteFallbackCharactersAreNeverSplitAcrossDeltas) {
  std::vector<int32_t> ids = CharTokens(std::string("a") + kEAcute + kGrinning + "b");
  ASSERT_EQ(ids.size(), 8u);
  OutputText output(tok(), OutputTextOptions{});
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.deltas, (std::vector<std::string>{"a", "", kEAcute, "", "", "", kGrinning, "b",
                                                ""}));
  // The tokenizer's own byte fallback for text it has no pieces for.
  const std::string text = std::string("x = \"caf") + kEAcute + " " + kGrinning + "\"\n";
  ids = Encode(text);
  OutputText again(tok(), DecodeLikeOptions());
  EXPECT_EQ(StreamAll(again, ids).text, text);
}

TEST_F(OutputTextTest, MultiByteStopStringsMatchOnWholeCharacters) {
  // The emoji's four byte tokens complete the stop only at the last one.
  OutputTextOptions options;
  options.stop_strings = {std::string("b") + kGrinning};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens(std::string("ab") + kGrinning + "c"));
  EXPECT_EQ(s.num_appended, 6);
  EXPECT_EQ(s.text, "a");

  // "é" then a different character: the held "é" is released whole.
  OutputTextOptions other;
  other.stop_strings = {std::string(kEAcute) + "a"};
  OutputText output2(tok(), other);
  const Streamed s2 = StreamAll(output2, CharTokens(std::string("x") + kEAcute + "b"));
  EXPECT_EQ(s2.deltas, (std::vector<std::string>{"x", "", "", std::string(kEAcute) + "b", ""}));
  EXPECT_FALSE(s2.stop.stopped());
}

TEST_F(OutputTextTest, FinishTurnsAnIncompleteCharacterIntoReplacementCharacters) {
  OutputTextOptions options;
  options.stop_strings = {"zz"};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, CharTokens("a\xF0\x9F"));
  EXPECT_EQ(s.text, std::string("a") + kReplacement + kReplacement);
}

TEST_F(OutputTextTest, EosStopsWithoutItsTextUnlessIgnored) {
  const int32_t eos = tok().eos_id();
  std::vector<int32_t> ids = CharTokens("ab");
  ids.push_back(eos);
  const std::vector<int32_t> more = CharTokens("cd");
  ids.insert(ids.end(), more.begin(), more.end());

  {
    OutputText output(tok(), OutputTextOptions{});
    const Streamed s = StreamAll(output, ids);
    EXPECT_EQ(s.stop.kind, Kind::kEos);
    EXPECT_EQ(s.stop.token, eos);
    EXPECT_EQ(s.num_appended, 3);
    EXPECT_EQ(s.text, "ab");
  }
  {
    OutputTextOptions options;
    options.ignore_eos = true;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, ids);
    EXPECT_FALSE(s.stop.stopped());
    EXPECT_EQ(s.text, "abcd");  // EOS has no text when special tokens are skipped.
  }
  {
    OutputTextOptions options;
    options.ignore_eos = true;
    options.skip_special_tokens = false;
    OutputText output(tok(), options);
    EXPECT_EQ(StreamAll(output, ids).text, "ab</s>cd");
  }
  {
    OutputTextOptions options;
    options.include_stop_in_output = true;
    options.skip_special_tokens = false;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, ids);
    EXPECT_EQ(s.stop.kind, Kind::kEos);
    EXPECT_EQ(s.text, "ab</s>");
  }
  {
    OutputTextOptions options;
    options.eos_token_ids = std::vector<int32_t>{};  // A model without EOS.
    OutputText output(tok(), options);
    EXPECT_FALSE(StreamAll(output, ids).stop.stopped());
  }
}

TEST_F(OutputTextTest, EosBeforeMinTokensIsPlainText) {
  std::vector<int32_t> ids = CharTokens("a");
  ids.push_back(tok().eos_id());
  ids.push_back(CharTokens("b")[0]);
  ids.push_back(tok().eos_id());
  OutputTextOptions options;
  options.min_tokens = 3;
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.kind, Kind::kEos);
  EXPECT_EQ(s.num_appended, 4);
  EXPECT_EQ(s.text, "ab");
}

TEST_F(OutputTextTest, StopTokenIdReleasesHeldTextAndKeepsItsOwnOnlyWhenIncluded) {
  const std::vector<int32_t> ids = CharTokens("xabyz");
  for (bool include : {false, true}) {
    OutputTextOptions options;
    options.stop_strings = {"abc"};
    options.stop_token_ids = {ids[3]};  // 'y'
    options.include_stop_in_output = include;
    OutputText output(tok(), options);
    const Streamed s = StreamAll(output, ids);
    EXPECT_EQ(s.stop.kind, Kind::kStopToken);
    EXPECT_EQ(s.stop.token, ids[3]);
    EXPECT_EQ(s.num_appended, 4);
    EXPECT_EQ(s.text, include ? "xaby" : "xab");
  }
}

TEST_F(OutputTextTest, StopTokenIdWinsOverAStopStringOnTheSameToken) {
  const std::vector<int32_t> ids = CharTokens("abc");
  OutputTextOptions options;
  options.stop_strings = {"bc"};
  options.stop_token_ids = {ids[2]};
  OutputText output(tok(), options);
  const Streamed s = StreamAll(output, ids);
  EXPECT_EQ(s.stop.kind, Kind::kStopToken);
  EXPECT_EQ(s.text, "ab");
}

TEST_F(OutputTextTest, HeldTextStaysBoundedOnLongStreams) {
  OutputTextOptions options;
  options.stop_strings = {"aaaaaaaaaz", "ab"};
  OutputText output(tok(), options);
  const int32_t a = CharTokens("a")[0];
  std::string text;
  for (int i = 0; i < 20000; ++i) {
    const std::string delta = output.Append(a).text;
    EXPECT_TRUE(delta.size() <= 1);
    text += delta;
    ASSERT_LE(output.num_held_bytes(), 9u);
  }
  const std::string tail = output.Finish();
  EXPECT_EQ(tail, "aaaaaaaaa");
  EXPECT_EQ(text + tail, std::string(20000, 'a'));
}

TEST_F(OutputTextTest, AppendAfterStopIsABug) {
  OutputText output(tok(), OutputTextOptions{});
  ASSERT_TRUE(output.Append(tok().eos_id()).stop.stopped());
  EXPECT_EQ(output.Finish(), "");
  EXPECT_DEATH(output.Append(CharTokens("a")[0]), "CHECK failed");
}

// ---- Randomized comparison with a direct reference --------------------------------------

// The reference, written from the definition on the whole text rather than incrementally:
// T = the streaming detokenizer's outputs concatenated, B[k] = |T| after token k (1-based).
// - The first token stop: the least k >= min_tokens whose id is EOS (unless ignore_eos) or a
//   stop token id.
// - The first stop-string stop: among all occurrences [p, e) of every stop string in T whose
//   last byte lies in the text of a token k >= min_tokens (least k with B[k] >= e) and k is
//   before any token stop, the least e, then the least p.
// - Output: T[0, p) (or [0, e) with include_stop_in_output) for a stop string; for a token
//   stop at k the detokenization of the first k-1 tokens (k with include), flushed; else of
//   all tokens, flushed.
// - While running, after token j: T[0, B[j] - h) where h is the length of the longest suffix
//   of T[0, B[j]) that is a proper prefix of a stop string.
struct Reference {
  std::string text;
  Kind kind = Kind::kNone;
  int32_t stop_at = 0;  // 1-based token count of the stopping token; 0 if none.
  std::string stop_string;
  std::vector<std::string> emitted_after;  // emitted_after[j-1]: after token j (no stop yet).
};

std::string DetokenizeFlushed(const Tokenizer& tok, model::StreamingDetokenizerOptions options,
                              std::span<const int32_t> ids) {
  model::StreamingDetokenizer detok(tok, options);
  std::string out;
  for (int32_t id : ids) out += detok.Push(id);
  return out + detok.Flush();
}

Reference ComputeReference(const Tokenizer& tok, const OutputTextOptions& options,
                           const std::vector<int32_t>& ids) {
  model::StreamingDetokenizerOptions detok_options;
  detok_options.strip_leading_space = options.strip_leading_space;
  detok_options.render_special = !options.skip_special_tokens;
  const std::vector<int32_t> eos =
      options.eos_token_ids.value_or(tok.end_of_generation_ids());
  auto contains = [](const std::vector<int32_t>& v, int32_t x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };

  std::string full;
  std::vector<size_t> bound = {0};  // bound[k] = B[k].
  model::StreamingDetokenizer detok(tok, detok_options);
  for (int32_t id : ids) {
    full += detok.Push(id);
    bound.push_back(full.size());
  }
  const int32_t n = static_cast<int32_t>(ids.size());

  Reference ref;
  int32_t token_stop = n + 1;
  for (int32_t k = std::max(1, options.min_tokens); k <= n; ++k) {
    const int32_t id = ids[k - 1];
    if (!options.ignore_eos && contains(eos, id)) {
      ref.kind = Kind::kEos;
    } else if (contains(options.stop_token_ids, id)) {
      ref.kind = Kind::kStopToken;
    } else {
      continue;
    }
    token_stop = k;
    break;
  }
  size_t best_end = std::string::npos, best_start = 0;
  for (const std::string& stop : options.stop_strings) {
    for (size_t p = full.find(stop); p != std::string::npos; p = full.find(stop, p + 1)) {
      const size_t e = p + stop.size();
      const int32_t k = static_cast<int32_t>(
          std::lower_bound(bound.begin(), bound.end(), e) - bound.begin());
      if (k < options.min_tokens || k >= token_stop) continue;
      if (e < best_end || (e == best_end && p < best_start)) {
        best_end = e;
        best_start = p;
        ref.stop_string = stop;
        ref.stop_at = k;
      }
    }
  }
  const int32_t last = best_end != std::string::npos ? ref.stop_at : std::min(token_stop, n);
  for (int32_t j = 1; j <= last; ++j) {
    if (j == ref.stop_at || j == token_stop) break;
    const std::string_view so_far = std::string_view(full).substr(0, bound[j]);
    size_t hold = 0;
    for (const std::string& stop : options.stop_strings) {
      for (size_t h = std::min(stop.size() - 1, so_far.size()); h > hold; --h) {
        if (so_far.substr(so_far.size() - h) == std::string_view(stop).substr(0, h)) {
          hold = h;
          break;
        }
      }
    }
    ref.emitted_after.emplace_back(so_far.substr(0, so_far.size() - hold));
  }
  if (best_end != std::string::npos) {
    ref.kind = Kind::kStopString;
    ref.text = full.substr(0, options.include_stop_in_output ? best_end : best_start);
  } else if (token_stop <= n) {
    ref.stop_at = token_stop;
    ref.text = DetokenizeFlushed(
        tok, detok_options,
        std::span(ids).first(token_stop - (options.include_stop_in_output ? 0 : 1)));
  } else {
    ref.kind = Kind::kNone;
    ref.text = DetokenizeFlushed(tok, detok_options, ids);
  }
  return ref;
}

// Char-aligned random substring of `text` of 1..max_chars characters ("" if text is empty).
std::string RandomSubstring(std::string_view text, int max_chars, std::mt19937& rng) {
  std::vector<size_t> starts;  // Character starts.
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  if (starts.empty()) return "";
  starts.push_back(text.size());
  const size_t num_chars = starts.size() - 1;
  const size_t first = std::uniform_int_distribution<size_t>(0, num_chars - 1)(rng);
  const size_t len = std::uniform_int_distribution<size_t>(
      1, std::min<size_t>(max_chars, num_chars - first))(rng);
  return std::string(text.substr(starts[first], starts[first + len] - starts[first]));
}

// 0..max_tokens ids drawn from `pool`.
std::vector<int32_t> RandomIds(std::mt19937& rng, const std::vector<int32_t>& pool,
                               int max_tokens) {
  std::vector<int32_t> ids(std::uniform_int_distribution<int>(0, max_tokens)(rng));
  for (int32_t& id : ids) id = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
  return ids;
}

// Random rendering, EOS, min_tokens and (one time in four) stop token id options for a stream
// of `num_ids` tokens from `pool`; no stop strings.
OutputTextOptions RandomOptionsWithoutStopStrings(std::mt19937& rng,
                                                  const std::vector<int32_t>& pool,
                                                  size_t num_ids) {
  OutputTextOptions options;
  options.include_stop_in_output = rng() % 2;
  options.skip_special_tokens = rng() % 3 != 0;
  options.ignore_eos = rng() % 2;
  options.strip_leading_space = rng() % 2;
  options.min_tokens = rng() % 2 ? 0 : std::uniform_int_distribution<int32_t>(0, num_ids + 1)(rng);
  if (rng() % 4 == 0) options.stop_token_ids = {pool[rng() % pool.size()]};
  return options;
}

TEST_F(OutputTextTest, RandomStreamsMatchTheReference) {
  // A small alphabet so that stop candidates overlap and repeat; byte tokens of multi-byte
  // characters on their own (so random order also makes invalid UTF-8); multi-character
  // pieces; BOS and EOS; a few arbitrary vocabulary ids.
  std::vector<int32_t> pool = CharTokens(std::string("aabbc  ") + kEAcute + kGrinning);
  for (int32_t id : Encode("abc abcab bca aaa def ab")) pool.push_back(id);
  pool.push_back(tok().eos_id());
  pool.push_back(tok().bos_id());
  std::mt19937 rng(1234);
  for (int i = 0; i < 8; ++i) {
    pool.push_back(std::uniform_int_distribution<int32_t>(0, tok().vocab_size() - 1)(rng));
  }
  const std::string alphabet[] = {"a", "b", "c", " ", kEAcute, "ab", "</s>"};

  int num_string_stops = 0, num_token_stops = 0, num_unstopped = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    const std::vector<int32_t> ids = RandomIds(rng, pool, 40);
    OutputTextOptions options = RandomOptionsWithoutStopStrings(rng, pool, ids.size());
    // Stop strings drawn from the text itself, plus the odd one from the alphabet.
    model::StreamingDetokenizerOptions detok_options;
    detok_options.strip_leading_space = options.strip_leading_space;
    detok_options.render_special = !options.skip_special_tokens;
    const std::string full = DetokenizeFlushed(tok(), detok_options, ids);
    const int num_stops = std::uniform_int_distribution<int>(0, 3)(rng);
    for (int s = 0; s < num_stops; ++s) {
      std::string stop = rng() % 4 ? RandomSubstring(full, 6, rng) : "";
      if (stop.empty()) {
        for (int c = 1 + rng() % 3; c > 0; --c) stop += alphabet[rng() % std::size(alphabet)];
      }
      options.stop_strings.push_back(stop);
    }

    const Reference ref = ComputeReference(tok(), options, ids);
    OutputText output(tok(), options);
    std::string emitted;
    int32_t appended = 0;
    for (int32_t id : ids) {
      const AppendResult r = output.Append(id);
      ++appended;
      ASSERT_TRUE(IsValidUtf8(r.text));
      emitted += r.text;
      if (r.stop.stopped()) {
        EXPECT_EQ(r.stop.kind, ref.kind);
        EXPECT_EQ(r.stop.token, id);
        EXPECT_EQ(r.stop.stop_string, ref.stop_string);
        break;
      }
      ASSERT_LE(static_cast<size_t>(appended), ref.emitted_after.size());
      ASSERT_EQ(emitted, ref.emitted_after[appended - 1]) << "after token " << appended;
    }
    const std::string tail = output.Finish();
    ASSERT_TRUE(IsValidUtf8(tail));
    emitted += tail;
    EXPECT_EQ(output.stop().kind, ref.kind);
    EXPECT_EQ(appended, ref.kind == Kind::kNone ? static_cast<int32_t>(ids.size()) : ref.stop_at);
    ASSERT_EQ(emitted, ref.text);
    switch (ref.kind) {
      case Kind::kNone: ++num_unstopped; break;
      case Kind::kEos:
      case Kind::kStopToken: ++num_token_stops; break;
      case Kind::kStopString: ++num_string_stops; break;
    }
  }
  // The generator exercises every outcome.
  EXPECT_GT(num_string_stops, 500);
  EXPECT_GT(num_token_stops, 200);
  EXPECT_GT(num_unstopped, 200);
}

// Without stop strings the text can wait: AppendDeferred decides each stop at once and
// TakeText / Finish render later, here at random points and with Append mixed in. Whatever
// the split, the decisions and the text are the reference's.
TEST_F(OutputTextTest, DeferredTextMatchesTheReferenceHoweverItIsTaken) {
  std::vector<int32_t> pool = CharTokens(std::string("ab  ") + kEAcute + kGrinning);
  for (int32_t id : Encode("abc abcab bca def")) pool.push_back(id);
  pool.push_back(tok().eos_id());
  pool.push_back(tok().bos_id());
  std::mt19937 rng(4321);
  int num_token_stops = 0, num_unstopped = 0, num_mixed = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    const std::vector<int32_t> ids = RandomIds(rng, pool, 30);
    OutputTextOptions options = RandomOptionsWithoutStopStrings(rng, pool, ids.size());

    const Reference ref = ComputeReference(tok(), options, ids);
    // Empty stop strings are ignored (the reference does not know that): still none.
    if (rng() % 4 == 0) options.stop_strings = {""};
    OutputText output(tok(), options);
    ASSERT_FALSE(output.has_stop_strings());
    std::string emitted;
    int32_t appended = 0;
    for (int32_t id : ids) {
      ++appended;
      StopDecision stop;
      if (rng() % 5 == 0) {
        const AppendResult r = output.Append(id);  // renders what was kept, then this token
        ASSERT_TRUE(IsValidUtf8(r.text));
        emitted += r.text;
        stop = r.stop;
        ++num_mixed;
      } else {
        stop = output.AppendDeferred(id);
        EXPECT_TRUE(output.has_kept_tokens());
        if (rng() % 3 == 0 || stop.stopped()) {
          const std::string text = output.TakeText();
          ASSERT_TRUE(IsValidUtf8(text));
          emitted += text;
          EXPECT_FALSE(output.has_kept_tokens());
          EXPECT_EQ(output.TakeText(), "");
        }
      }
      if (stop.stopped()) {
        EXPECT_EQ(stop.kind, ref.kind);
        EXPECT_EQ(stop.token, id);
        EXPECT_TRUE(output.finished());
        break;
      }
      if (!output.has_kept_tokens()) {
        ASSERT_LT(static_cast<size_t>(appended - 1), ref.emitted_after.size());
        ASSERT_EQ(emitted, ref.emitted_after[appended - 1]) << "after token " << appended;
      }
    }
    const std::string tail = output.Finish();  // also the text of tokens still kept
    ASSERT_TRUE(IsValidUtf8(tail));
    emitted += tail;
    EXPECT_FALSE(output.has_kept_tokens());
    EXPECT_EQ(output.stop().kind, ref.kind);
    EXPECT_EQ(appended, ref.kind == Kind::kNone ? static_cast<int32_t>(ids.size()) : ref.stop_at);
    ASSERT_EQ(emitted, ref.text);
    ref.kind == Kind::kNone ? ++num_unstopped : ++num_token_stops;
  }
  EXPECT_GT(num_token_stops, 300);
  EXPECT_GT(num_unstopped, 300);
  EXPECT_GT(num_mixed, 1000);
}

// A request that does not want text (render_text off): the same stops at the same tokens, and
// no token kept, no text rendered.
TEST_F(OutputTextTest, WithoutRenderingTheStopsAreTheSameAndNoTokenIsKept) {
  std::vector<int32_t> pool = CharTokens("ab ");
  pool.push_back(tok().eos_id());
  std::mt19937 rng(99);
  int num_stops = 0;
  for (int trial = 0; trial < 500; ++trial) {
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    const std::vector<int32_t> ids = RandomIds(rng, pool, 20);
    OutputTextOptions options = RandomOptionsWithoutStopStrings(rng, pool, ids.size());
    OutputText rendered(tok(), options);
    options.render_text = false;
    OutputText silent(tok(), options);
    for (int32_t id : ids) {
      const StopDecision want = rendered.AppendDeferred(id);
      const StopDecision got = silent.AppendDeferred(id);
      EXPECT_EQ(got.kind, want.kind);
      EXPECT_EQ(got.token, want.token);
      EXPECT_FALSE(silent.has_kept_tokens());
      EXPECT_EQ(silent.TakeText(), "");
      if (want.stopped()) {
        ++num_stops;
        break;
      }
    }
    EXPECT_EQ(silent.num_tokens(), rendered.num_tokens());
    EXPECT_EQ(silent.Finish(), "");
  }
  EXPECT_GT(num_stops, 100);
}

TEST_F(OutputTextTest, AStopTokensTextIsRenderedWhenTakenOnlyIfIncluded) {
  const std::vector<int32_t> ids = CharTokens("ab");
  for (bool include : {false, true}) {
    OutputTextOptions options;
    options.stop_token_ids = {ids[1]};
    options.include_stop_in_output = include;
    OutputText output(tok(), options);
    EXPECT_FALSE(output.AppendDeferred(ids[0]).stopped());
    const StopDecision& stop = output.AppendDeferred(ids[1]);
    EXPECT_EQ(stop.kind, Kind::kStopToken);
    EXPECT_EQ(stop.token, ids[1]);
    EXPECT_EQ(output.Finish(), "");  // stopped: Finish adds nothing, the text waits
    EXPECT_EQ(output.TakeText(), include ? "ab" : "a");
  }
}

TEST_F(OutputTextTest, DeferringTheTextOfASequenceWithStopStringsIsABug) {
  OutputTextOptions options;
  options.stop_strings = {"ab"};
  OutputText output(tok(), options);
  EXPECT_TRUE(output.has_stop_strings());
  EXPECT_DEATH(output.AppendDeferred(CharTokens("a")[0]), "stop strings decide on the text");
}

}  // namespace
}  // namespace glimpse::scheduler
