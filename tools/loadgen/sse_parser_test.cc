#include "tools/loadgen/sse_parser.h"

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace glimpse::tools::loadgen {
namespace {

// ---- Helpers --------------------------------------------------------------------------------

std::vector<SseEvent> FeedAll(SseParser& parser, const std::vector<std::string>& pieces) {
  std::vector<SseEvent> events;
  for (const std::string& piece : pieces) {
    for (SseEvent& e : parser.Feed(piece)) events.push_back(std::move(e));
  }
  return events;
}

std::vector<SseEvent> ParseInPieces(const std::vector<std::string>& pieces) {
  SseParser parser;
  return FeedAll(parser, pieces);
}

std::vector<std::string> Whole(const std::string& s) { return {s}; }

std::vector<std::string> ByteByByte(const std::string& s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

// Pieces of 1..max_piece bytes, from a seeded generator (reproducible).
std::vector<std::string> RandomPieces(const std::string& s, uint32_t seed, size_t max_piece) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> size(1, max_piece);
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(size(rng), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string Decode(ChunkedDecoder& decoder, const std::vector<std::string>& pieces,
                   absl::Status* status) {
  std::string out;
  for (const std::string& piece : pieces) {
    absl::StatusOr<std::string> decoded = decoder.Feed(piece);
    if (!decoded.ok()) {
      *status = decoded.status();
      return out;
    }
    out += *decoded;
  }
  *status = absl::OkStatus();
  return out;
}

// ---- SseParser: hand-made cases -------------------------------------------------------------

TEST(SseParserTest, ParsesLfCrLfAndCrLineEndingsAlike) {
  const std::vector<SseEvent> expected = {{"", "a"}, {"", "b\nc"}};
  for (const char* eol : {"\n", "\r\n", "\r"}) {
    const std::string stream =
        absl::StrCat("data: a", eol, eol, "data: b", eol, "data: c", eol, eol);
    EXPECT_EQ(ParseInPieces(Whole(stream)), expected) << "eol " << static_cast<int>(eol[0]);
    EXPECT_EQ(ParseInPieces(ByteByByte(stream)), expected);
  }
}

TEST(SseParserTest, CrLfSplitAcrossFeedsIsOneLineEnd) {
  // Were the LF taken as a second line end, the empty line would dispatch "a" on its own.
  const std::vector<SseEvent> events = ParseInPieces({"data: a\r", "\ndata: b\r\n\r\n"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a\nb");
}

TEST(SseParserTest, DataWithOrWithoutSpaceAfterColon) {
  const std::vector<SseEvent> events =
      ParseInPieces(Whole("data:x\n\ndata: y\n\ndata:  z\n\ndata\n\ndata:\n\n"));
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].data, "x");
  EXPECT_EQ(events[1].data, "y");
  EXPECT_EQ(events[2].data, " z");  // Only one space is dropped.
  EXPECT_EQ(events[3].data, "");    // A field name alone has an empty value.
  EXPECT_EQ(events[4].data, "");
}

TEST(SseParserTest, IgnoresCommentsIdRetryAndUnknownFields) {
  const std::vector<SseEvent> events = ParseInPieces(
      Whole(": keep-alive\n\nid: 7\nretry: 100\nfoo: bar\n: note\ndata: v\n\n"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], (SseEvent{"", "v"}));
}

TEST(SseParserTest, EventFieldSetsTypeAndResetsAfterDispatch) {
  const std::vector<SseEvent> events = ParseInPieces(
      Whole("event: error\ndata: {\"code\":1}\n\nevent: ignored\n\ndata: plain\n\n"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], (SseEvent{"error", "{\"code\":1}"}));
  EXPECT_EQ(events[1], (SseEvent{"", "plain"}));  // The data-less "ignored" event was dropped.
}

TEST(SseParserTest, SeveralEventsInOneFeedAndPartialEventHeldBack) {
  SseParser parser;
  std::vector<SseEvent> events = parser.Feed("data: 1\n\ndata: 2\n\ndata: 3\n");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].data, "2");
  events = parser.Feed("\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "3");
}

TEST(SseParserTest, RecognisesDone) {
  SseParser parser;
  EXPECT_FALSE(parser.done());
  std::vector<SseEvent> events = parser.Feed("data: {}\n\ndata: [DONE]\n");
  EXPECT_FALSE(parser.done());  // Not dispatched yet.
  events = parser.Feed("\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].IsDone());
  EXPECT_TRUE(parser.done());
  EXPECT_FALSE((SseEvent{"", "[DONE] "}).IsDone());
}

TEST(SseParserTest, SkipsLeadingBomEvenWhenSplit) {
  EXPECT_EQ(ParseInPieces({"\xEF\xBB", "\xBF" "data: a\n\n"}), (std::vector<SseEvent>{{"", "a"}}));
  // Bytes that only begin like a BOM are kept: "\xEF" "data" is then an unknown field name.
  EXPECT_EQ(ParseInPieces({"\xEF", "data: a\n\n"}), (std::vector<SseEvent>{}));
}

TEST(SseParserTest, KeepsUtf8CharacterSplitAcrossFeeds) {
  const std::string stream = "data: caf\xC3\xA9 \xE2\x82\xAC\n\n";  // "café €"
  for (size_t cut = 1; cut < stream.size(); ++cut) {
    const std::vector<SseEvent> events =
        ParseInPieces({stream.substr(0, cut), stream.substr(cut)});
    ASSERT_EQ(events.size(), 1u) << cut;
    EXPECT_EQ(events[0].data, "caf\xC3\xA9 \xE2\x82\xAC") << cut;
  }
}

TEST(SseParserTest, EveryTwoWaySplitGivesTheSameEvents) {
  const std::string stream =
      ": hi\r\nevent: e\r\ndata: a\r\ndata:b\r\n\r\ndata: x\rdata: y\r\rdata: [DONE]\n\n";
  const std::vector<SseEvent> expected = ParseInPieces(Whole(stream));
  ASSERT_EQ(expected.size(), 3u);
  EXPECT_EQ(expected[0], (SseEvent{"e", "a\nb"}));
  EXPECT_EQ(expected[1], (SseEvent{"", "x\ny"}));
  EXPECT_TRUE(expected[2].IsDone());
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    EXPECT_EQ(ParseInPieces({stream.substr(0, cut), stream.substr(cut)}), expected) << cut;
  }
}

// ---- ChunkedDecoder -------------------------------------------------------------------------

TEST(ChunkedDecoderTest, DecodesWholeAndByteByByte) {
  const std::string body = "5\r\nhello\r\nA\r\n0123456789\r\n1;name=\"v\"\r\n!\r\n0\r\n\r\n";
  for (const auto& pieces : {Whole(body), ByteByByte(body)}) {
    ChunkedDecoder decoder;
    absl::Status status;
    EXPECT_EQ(Decode(decoder, pieces, &status), "hello0123456789!");
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(decoder.done());
    EXPECT_TRUE(decoder.excess().empty());
  }
}

TEST(ChunkedDecoderTest, AcceptsLowerCaseHexWhitespaceAndTrailers) {
  ChunkedDecoder decoder;
  absl::Status status;
  const std::string out = Decode(
      decoder, Whole("b \t\r\nhello world\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"), &status);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(out, "hello world");
  EXPECT_TRUE(decoder.done());
}

TEST(ChunkedDecoderTest, NotDoneUntilTheFinalEmptyLine) {
  ChunkedDecoder decoder;
  ASSERT_TRUE(decoder.Feed("3\r\nabc\r\n0\r\n").ok());
  EXPECT_FALSE(decoder.done());
  ASSERT_TRUE(decoder.Feed("\r").ok());
  EXPECT_FALSE(decoder.done());
  ASSERT_TRUE(decoder.Feed("\n").ok());
  EXPECT_TRUE(decoder.done());
}

TEST(ChunkedDecoderTest, KeepsBytesAfterTheEndAsExcess) {
  ChunkedDecoder decoder;
  absl::StatusOr<std::string> out = decoder.Feed("2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "hi");
  EXPECT_EQ(decoder.excess(), "HTTP/1.1 200");
}

TEST(ChunkedDecoderTest, RejectsMalformedInputAndStaysFailed) {
  for (const char* bad : {
           "zz\r\n",                // not hex
           "\r\n",                  // no digits
           "-5\r\n",                // sign
           "5x\r\nhello\r\n",       // junk after the size
           "5\nhello\r\n",          // bare LF after the size
           "5\r\rhello",            // CR not followed by LF
           "5\r\nhelloX\r\n",       // data longer than the size
           "5\r\nhello\rX",         // CR LF after the data broken
           "1000000000000000\r\n",  // 16 hex digits
           "0\r\nbad\n",            // trailer line ends in bare LF
       }) {
    for (const auto& pieces : {Whole(bad), ByteByByte(bad)}) {
      ChunkedDecoder decoder;
      absl::Status status;
      Decode(decoder, pieces, &status);
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
      EXPECT_FALSE(decoder.Feed("0\r\n\r\n").ok()) << "error must be sticky: " << bad;
    }
  }
}

// ---- HTTP response head and reader ----------------------------------------------------------

TEST(ParseResponseHeadTest, ParsesStatusAndCaseInsensitiveHeaders) {
  absl::StatusOr<HttpResponseHead> head = ParseResponseHead(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain \r\nX-A: 1\r\nx-a: 2\r\n"
      "Transfer-Encoding: gzip, Chunked\r\n\r\n");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status_code, 503);
  EXPECT_EQ(head->reason, "Service Unavailable");
  EXPECT_EQ(head->Header("content-type"), "text/plain");
  EXPECT_EQ(head->Header("x-a"), "1, 2");
  EXPECT_FALSE(head->Header("content-length").has_value());
  EXPECT_TRUE(head->chunked());
}

TEST(ParseResponseHeadTest, RejectsMalformedHeads) {
  for (const char* bad : {"", "HTTP/2 200 OK\r\n", "HTTP/1.1 2x0 OK\r\n", "HTTP/1.1 200 OK",
                          "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
                          "HTTP/1.1 200 OK\r\n folded: v\r\n\r\n"}) {
    EXPECT_FALSE(ParseResponseHead(bad).ok()) << bad;
  }
}

TEST(HttpResponseReaderTest, CutsBodyAtContentLength) {
  HttpResponseReader reader;
  absl::StatusOr<std::string> body = reader.Feed("HTTP/1.1 200 OK\r\nContent-Le");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, "");
  EXPECT_FALSE(reader.head_complete());
  body = reader.Feed("ngth: 5\r\n\r\nhel");
  ASSERT_TRUE(body.ok());
  EXPECT_TRUE(reader.head_complete());
  EXPECT_EQ(*body, "hel");
  EXPECT_FALSE(reader.body_complete());
  body = reader.Feed("loEXTRA");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, "lo");
  EXPECT_TRUE(reader.body_complete());
}

TEST(HttpResponseReaderTest, NoContentAndCloseDelimitedBodies) {
  HttpResponseReader no_content;
  ASSERT_TRUE(no_content.Feed("HTTP/1.1 204 No Content\r\n\r\n").ok());
  EXPECT_TRUE(no_content.body_complete());

  HttpResponseReader until_close;
  absl::StatusOr<std::string> body = until_close.Feed("HTTP/1.1 200 OK\r\n\r\nabc");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, "abc");
  EXPECT_FALSE(until_close.body_complete());
}

TEST(HttpResponseReaderTest, ErrorsAreSticky) {
  HttpResponseReader bad_length;
  EXPECT_FALSE(bad_length.Feed("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n").ok());
  EXPECT_FALSE(bad_length.Feed("more").ok());

  HttpResponseReader bad_chunk;
  EXPECT_FALSE(bad_chunk.Feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n").ok());
  EXPECT_FALSE(bad_chunk.Feed("0\r\n\r\n").ok());

  HttpResponseReader huge_head;
  EXPECT_TRUE(huge_head.Feed("HTTP/1.1 200 OK\r\n").ok());
  EXPECT_FALSE(
      huge_head.Feed(std::string(HttpResponseReader::kMaxHeadBytes, 'x')).ok());
}

// ---- Recorded llama-server responses (tests/data/fixtures/README.md) ------------------------
// The files hold the status line and headers as sent and the body with the chunked encoding
// already removed; the tests below re-chunk it to exercise the decoder too.

constexpr char kFixtureDir[] = "tests/data/fixtures/";

std::string ReadFixture(const std::string& name) {
  std::ifstream in(kFixtureDir + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << kFixtureDir << name;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Recorded {
  std::string head;  // Through the CRLF that ends the last header line.
  std::string body;
};

Recorded SplitResponse(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  EXPECT_NE(end, std::string::npos);
  if (end == std::string::npos) return {};
  return {response.substr(0, end + 2), response.substr(end + 4)};
}

// Chunked encoding of `body` in seeded random chunk sizes, with a mix of hex cases, an
// extension and a trailer, as a server may send it.
std::string Rechunk(const std::string& body, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> size(1, 300);
  std::string out;
  for (size_t i = 0, n = 0; i < body.size(); i += n) {
    n = std::min(size(rng), body.size() - i);
    std::ostringstream hex;
    hex << std::hex << (rng() % 2 ? std::uppercase : std::nouppercase) << n;
    out += hex.str();
    if (rng() % 4 == 0) out += ";ext=1";
    out += "\r\n" + body.substr(i, n) + "\r\n";
  }
  return out + "0\r\nX-Trailer: done\r\n\r\n";
}

struct StreamFixture {
  const char* file;
  size_t num_chunk_events;  // `data: {...}` events (one per token, plus the final one).
  int completion_tokens;    // usage.completion_tokens and timings.predicted_n.
  int prompt_tokens;
  const char* text;  // The concatenated "text" of every chunk.
};

const StreamFixture kStreams[] = {
    {"llama-server-completions-stream.http", 25, 24, 9,
     "    \"\"\"Return a string of a string.\n\n    The return value is a string, the string.\n\n"},
    {"llama-server-completions-stream-usage.http", 17, 16, 4,
     "\n### Decoding Table\n\nclass Codec(codecs.Codec):"},
};

class RecordedStreamTest : public testing::TestWithParam<StreamFixture> {};

TEST_P(RecordedStreamTest, SameEventsWholeByteByByteAndInRandomPieces) {
  const Recorded rec = SplitResponse(ReadFixture(GetParam().file));
  const std::vector<SseEvent> whole = ParseInPieces(Whole(rec.body));
  ASSERT_EQ(whole.size(), GetParam().num_chunk_events + 1);
  EXPECT_EQ(ParseInPieces(ByteByByte(rec.body)), whole);
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    EXPECT_EQ(ParseInPieces(RandomPieces(rec.body, seed, 1 + seed * 7)), whole) << seed;
  }
}

TEST_P(RecordedStreamTest, PayloadsParseAndMatchTheRecordedCounts) {
  const StreamFixture& f = GetParam();
  const Recorded rec = SplitResponse(ReadFixture(f.file));
  SseParser parser;
  const std::vector<SseEvent> events = parser.Feed(rec.body);
  ASSERT_EQ(events.size(), f.num_chunk_events + 1);
  EXPECT_TRUE(events.back().IsDone());
  EXPECT_TRUE(parser.done());

  int num_token_chunks = 0;
  std::string text;
  std::string finish_reason;
  nlohmann::json usage, timings;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].event, "");
    EXPECT_FALSE(events[i].IsDone());
    const nlohmann::json j = nlohmann::json::parse(events[i].data, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "event " << i << ": " << events[i].data;
    ASSERT_TRUE(j["choices"].is_array() && j["choices"].size() == 1u) << i;
    const nlohmann::json& choice = j["choices"][0];
    ASSERT_TRUE(choice["text"].is_string()) << i;
    const std::string piece = choice["text"].get<std::string>();
    if (!piece.empty()) ++num_token_chunks;
    text += piece;
    const bool last = i + 2 == events.size();
    if (last) {
      ASSERT_TRUE(choice["finish_reason"].is_string());
      finish_reason = choice["finish_reason"].get<std::string>();
      usage = j.value("usage", nlohmann::json());
      timings = j.value("timings", nlohmann::json());
    } else {
      EXPECT_TRUE(choice["finish_reason"].is_null()) << i;
    }
  }
  EXPECT_EQ(finish_reason, "length");
  EXPECT_EQ(num_token_chunks, f.completion_tokens);  // llama-server sends a chunk per token.
  EXPECT_EQ(text, f.text);
  ASSERT_TRUE(usage.is_object());
  EXPECT_EQ(usage.value("completion_tokens", -1), f.completion_tokens);
  EXPECT_EQ(usage.value("prompt_tokens", -1), f.prompt_tokens);
  EXPECT_EQ(usage.value("total_tokens", -1), f.completion_tokens + f.prompt_tokens);
  ASSERT_TRUE(timings.is_object());
  EXPECT_EQ(timings.value("predicted_n", -1), f.completion_tokens);
}

TEST_P(RecordedStreamTest, RechunkedResponseThroughReaderAndParserInRandomReads) {
  const Recorded rec = SplitResponse(ReadFixture(GetParam().file));
  absl::StatusOr<HttpResponseHead> head = ParseResponseHead(rec.head);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status_code, 200);
  EXPECT_EQ(head->Header("content-type"), "text/event-stream");
  ASSERT_TRUE(head->chunked());
  const std::vector<SseEvent> expected = ParseInPieces(Whole(rec.body));

  for (uint32_t seed = 1; seed <= 10; ++seed) {
    const std::string wire = rec.head + "\r\n" + Rechunk(rec.body, seed);
    HttpResponseReader reader;
    SseParser parser;
    std::string body;
    std::vector<SseEvent> events;
    for (const std::string& read : RandomPieces(wire, seed + 100, 97)) {
      absl::StatusOr<std::string> decoded = reader.Feed(read);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      body += *decoded;
      for (SseEvent& e : parser.Feed(*decoded)) events.push_back(std::move(e));
    }
    EXPECT_TRUE(reader.body_complete()) << seed;
    EXPECT_EQ(body, rec.body) << seed;
    EXPECT_EQ(events, expected) << seed;
    EXPECT_TRUE(parser.done());
  }
}

INSTANTIATE_TEST_SUITE_P(LlamaServer, RecordedStreamTest, testing::ValuesIn(kStreams));

TEST(RecordedResponseTest, NonStreamedCompletionReadsToContentLength) {
  const std::string response = ReadFixture("llama-server-completions.http");
  for (const auto& reads : {Whole(response), ByteByByte(response)}) {
    HttpResponseReader reader;
    std::string body;
    for (const std::string& read : reads) {
      absl::StatusOr<std::string> decoded = reader.Feed(read);
      ASSERT_TRUE(decoded.ok()) << decoded.status();
      body += *decoded;
    }
    ASSERT_TRUE(reader.head_complete());
    EXPECT_FALSE(reader.head().chunked());
    EXPECT_TRUE(reader.body_complete());
    EXPECT_EQ(body, SplitResponse(response).body);
    const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    ASSERT_FALSE(j.is_discarded());
    EXPECT_EQ(j["choices"][0].value("finish_reason", ""), "length");
    EXPECT_EQ(j["usage"].value("completion_tokens", -1), 16);
    EXPECT_EQ(j["usage"].value("prompt_tokens", -1), 7);
  }
}

}  // namespace
}  // namespace glimpse::tools::loadgen
