// Incremental parsing of what an OpenAI-compatible HTTP server streams back, for
// `glimpse loadgen`'s raw-socket HTTP client:
//   - HttpResponseReader: the HTTP/1.1 response head, then the body, de-chunked when the server
//     uses `Transfer-Encoding: chunked` (ChunkedDecoder) or bounded by Content-Length;
//   - SseParser: Server-Sent Events (the WHATWG "event stream" format) from that body, including
//     OpenAI's terminal `data: [DONE]`.
// Each takes bytes exactly as the network delivers them: a read may end anywhere (inside a
// "\r\n", a chunk-size line, an event, or a UTF-8 character), and one read may hold many events.
// The classes are plain state machines: not thread-safe, one instance per connection/stream.
#ifndef GLIMPSE_TOOLS_LOADGEN_SSE_PARSER_H_
#define GLIMPSE_TOOLS_LOADGEN_SSE_PARSER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace glimpse::tools::loadgen {

// One dispatched event. `event` is the `event:` field ("" when the stream sent none, which SSE
// calls the default "message" type); `data` is its `data:` lines joined with "\n".
struct SseEvent {
  std::string event;
  std::string data;

  // OpenAI's end-of-stream marker, `data: [DONE]`.
  bool IsDone() const { return data == "[DONE]"; }
  bool operator==(const SseEvent&) const = default;
};

// Splits an event stream into events. Lines end in CRLF, LF or CR (a CR at the end of one
// Feed and the LF that starts the next are one line end); an empty line dispatches the event
// if it has data; lines starting with ':' are comments; `field:value` drops one space after
// the colon, and a line without a colon is a field with an empty value. `id` and `retry` are
// accepted and ignored; unknown fields are ignored; a UTF-8 BOM at the very start is skipped.
// A partial event at the end of the stream is never returned (SSE discards it too).
class SseParser {
 public:
  // Consumes `bytes` and returns the events they complete, in order.
  std::vector<SseEvent> Feed(std::string_view bytes);

  // Whether a `data: [DONE]` event has been returned.
  bool done() const { return done_; }

 private:
  void ProcessLine(std::vector<SseEvent>& out);

  std::string line_;           // The current, not yet terminated line.
  std::string event_;          // `event:` of the event being built.
  std::string data_;           // Its data lines, each followed by "\n".
  bool has_data_ = false;      // Whether a `data` field was seen for this event.
  bool skip_lf_ = false;       // The previous byte was a CR: an LF now ends nothing.
  size_t bom_bytes_seen_ = 0;  // How many bytes of a leading BOM were matched (3 = done).
  bool done_ = false;
};

// Decodes an HTTP/1.1 `Transfer-Encoding: chunked` body (RFC 9112 §7.1) incrementally:
//   chunk-size (hex) [ ; extensions ] CRLF  chunk-data CRLF ... 0 CRLF [ trailers ] CRLF
// Chunk sizes must be 1-15 hex digits (whitespace before `;` or CRLF is tolerated); any other
// byte in a size line, or anything but CRLF after a chunk's data, is an error. Errors are sticky.
class ChunkedDecoder {
 public:
  // Returns the body bytes that `bytes` decode to (possibly none), or InvalidArgument.
  absl::StatusOr<std::string> Feed(std::string_view bytes);

  // Whether the last chunk and the trailer section have been read.
  bool done() const { return state_ == State::kDone; }
  // Bytes fed after the end of the body (the next response on a keep-alive connection).
  const std::string& excess() const { return excess_; }

 private:
  enum class State {
    kSize,          // Reading hex digits of a chunk size.
    kSizeSpace,     // After the digits: whitespace, then ';' or CR.
    kExtension,     // Inside `;ext=...`, up to CR.
    kSizeLf,        // Saw the CR ending a size line.
    kData,          // Inside chunk data.
    kDataCr,        // Expecting the CR after chunk data.
    kDataLf,        // Expecting the LF after chunk data.
    kTrailerStart,  // At the start of a trailer line (an empty one ends the body).
    kTrailerLine,   // Inside a trailer field line.
    kTrailerLf,     // Saw the CR ending a trailer line (`trailer_line_empty_` says which).
    kDone,
  };

  absl::Status Fail(std::string message);

  State state_ = State::kSize;
  uint64_t chunk_size_ = 0;  // Size being parsed, then the data bytes left in the chunk.
  int num_size_digits_ = 0;
  bool trailer_line_empty_ = false;
  std::string excess_;
  absl::Status error_;  // OK until the first error.
};

// An HTTP/1.1 response's status line and header fields.
struct HttpResponseHead {
  int status_code = 0;
  std::string reason;
  // Field names lower-cased; repeated fields joined with ", ".
  std::map<std::string, std::string> headers;

  // The value of `name` (lower-case), if present.
  std::optional<std::string> Header(const std::string& name) const;
  // Whether the last transfer coding is `chunked`.
  bool chunked() const;
};

// Parses "HTTP/1.x NNN reason\r\n(field: value\r\n)*" (with or without the final empty line).
absl::StatusOr<HttpResponseHead> ParseResponseHead(std::string_view head);

// Reads one HTTP/1.1 response from raw socket bytes: buffers until the head is complete, then
// returns body bytes as they arrive, de-chunked for `Transfer-Encoding: chunked`, cut at
// Content-Length otherwise; without either, the body runs until the connection closes (the
// caller knows when). Errors (malformed head or chunking, a head over 64 KiB) are sticky.
class HttpResponseReader {
 public:
  static constexpr size_t kMaxHeadBytes = 64 * 1024;

  // Returns the body bytes that `bytes` complete (possibly none), or InvalidArgument.
  absl::StatusOr<std::string> Feed(std::string_view bytes);

  bool head_complete() const { return head_.has_value(); }
  // Valid once head_complete().
  const HttpResponseHead& head() const { return *head_; }
  // Whether the body is known to be complete (chunked terminator read, or Content-Length
  // bytes read). Always false for a body delimited by the connection closing.
  bool body_complete() const;

 private:
  absl::StatusOr<std::string> FeedBody(std::string_view bytes);

  std::string head_buffer_;
  std::optional<HttpResponseHead> head_;
  std::optional<uint64_t> body_bytes_left_;  // For a Content-Length body.
  ChunkedDecoder chunked_;
  absl::Status error_;
};

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_SSE_PARSER_H_
