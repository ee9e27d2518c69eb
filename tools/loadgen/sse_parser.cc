#include "tools/loadgen/sse_parser.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include "absl/strings/str_cat.h"

namespace glimpse::tools::loadgen {
namespace {

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view TrimSpaceTab(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An RFC 9110 field name: visible ASCII without separators (so no space, and no obs-fold).
bool IsToken(std::string_view s) {
  for (char c : s) {
    if (c <= ' ' || c >= 127 || std::string_view("\"(),/:;<=>?@[\\]{}").find(c) !=
                                    std::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

absl::Status HeadError(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("HTTP response head: ", message));
}

}  // namespace

// ---- SseParser ------------------------------------------------------------------------------

std::vector<SseEvent> SseParser::Feed(std::string_view bytes) {
  std::vector<SseEvent> out;
  // A stream may start with a BOM, itself split across reads; anything else that began like
  // one is data and is replayed into the line.
  while (bom_bytes_seen_ < kUtf8Bom.size() && !bytes.empty()) {
    if (bytes.front() == kUtf8Bom[bom_bytes_seen_]) {
      ++bom_bytes_seen_;
      bytes.remove_prefix(1);
      continue;
    }
    line_.append(kUtf8Bom.substr(0, bom_bytes_seen_));
    bom_bytes_seen_ = kUtf8Bom.size();
  }
  while (!bytes.empty()) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes.front() == '\n') {
        bytes.remove_prefix(1);
        continue;
      }
    }
    const size_t end = bytes.find_first_of("\r\n");
    if (end == std::string_view::npos) {
      line_.append(bytes);
      break;
    }
    line_.append(bytes.substr(0, end));
    skip_lf_ = bytes[end] == '\r';
    bytes.remove_prefix(end + 1);
    ProcessLine(out);
  }
  return out;
}

void SseParser::ProcessLine(std::vector<SseEvent>& out) {
  const std::string_view line = line_;
  if (line.empty()) {
    // Dispatch. An event without data lines is dropped, and its type is reset either way.
    if (has_data_) {
      data_.pop_back();  // The "\n" after the last data line.
      SseEvent event{std::move(event_), std::move(data_)};
      if (event.IsDone()) done_ = true;
      out.push_back(std::move(event));
    }
    event_.clear();
    data_.clear();
    has_data_ = false;
  } else if (line.front() != ':') {  // ':' starts a comment.
    const size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    std::string_view value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      data_.append(value);
      data_.push_back('\n');
      has_data_ = true;
    } else if (field == "event") {
      event_ = std::string(value);
    }
    // "id", "retry" and unknown fields do not matter to a benchmark client.
  }
  line_.clear();
}

// ---- ChunkedDecoder -------------------------------------------------------------------------

absl::Status ChunkedDecoder::Fail(std::string message) {
  error_ = absl::InvalidArgumentError(absl::StrCat("chunked body: ", message));
  return error_;
}

absl::StatusOr<std::string> ChunkedDecoder::Feed(std::string_view bytes) {
  if (!error_.ok()) return error_;
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const char c = bytes[i];
    switch (state_) {
      case State::kSize: {
        const int digit = HexValue(c);
        if (digit >= 0) {
          // 15 hex digits (< 2^60) is far beyond any real chunk and cannot overflow.
          if (num_size_digits_ == 15) return Fail("chunk size has more than 15 hex digits");
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(digit);
          ++num_size_digits_;
          ++i;
        } else if (num_size_digits_ == 0) {
          return Fail(absl::StrCat("chunk size line starts with byte ",
                                   static_cast<int>(static_cast<unsigned char>(c)),
                                   ", not a hex digit"));
        } else {
          state_ = State::kSizeSpace;  // Look at `c` again there.
        }
        break;
      }
      case State::kSizeSpace:
        if (c == ';') {
          state_ = State::kExtension;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c != ' ' && c != '\t') {
          return Fail(absl::StrCat("unexpected byte ",
                                   static_cast<int>(static_cast<unsigned char>(c)),
                                   " after the chunk size"));
        }
        ++i;
        break;
      case State::kExtension:
        if (c == '\n') return Fail("chunk size line ends in a bare LF");
        if (c == '\r') state_ = State::kSizeLf;
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') return Fail("chunk size line: CR not followed by LF");
        ++i;
        num_size_digits_ = 0;
        state_ = chunk_size_ == 0 ? State::kTrailerStart : State::kData;
        break;
      case State::kData: {
        const size_t n =
            static_cast<size_t>(std::min<uint64_t>(chunk_size_, bytes.size() - i));
        out.append(bytes.substr(i, n));
        i += n;
        chunk_size_ -= n;
        if (chunk_size_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return Fail("chunk data is longer than its size (no CRLF after it)");
        ++i;
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return Fail("chunk data: CR not followed by LF");
        ++i;
        state_ = State::kSize;
        break;
      case State::kTrailerStart:
      case State::kTrailerLine:
        if (c == '\n') return Fail("trailer line ends in a bare LF");
        if (c == '\r') {
          trailer_line_empty_ = state_ == State::kTrailerStart;
          state_ = State::kTrailerLf;
        } else {
          state_ = State::kTrailerLine;
        }
        ++i;
        break;
      case State::kTrailerLf:
        if (c != '\n') return Fail("trailer line: CR not followed by LF");
        ++i;
        state_ = trailer_line_empty_ ? State::kDone : State::kTrailerStart;
        break;
      case State::kDone:
        excess_.append(bytes.substr(i));
        i = bytes.size();
        break;
    }
  }
  return out;
}

// ---- HTTP response head and reader ----------------------------------------------------------

std::optional<std::string> HttpResponseHead::Header(const std::string& name) const {
  const auto it = headers.find(name);
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

bool HttpResponseHead::chunked() const {
  const std::optional<std::string> te = Header("transfer-encoding");
  if (!te) return false;
  std::string_view codings = *te;
  const size_t comma = codings.rfind(',');
  if (comma != std::string_view::npos) codings.remove_prefix(comma + 1);
  return ToLower(TrimSpaceTab(codings)) == "chunked";
}

absl::StatusOr<HttpResponseHead> ParseResponseHead(std::string_view head) {
  HttpResponseHead out;
  bool first = true;
  while (!head.empty()) {
    const size_t eol = head.find("\r\n");
    if (eol == std::string_view::npos) return HeadError("a line does not end in CRLF");
    const std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (first) {
      // "HTTP/1.1 200 OK": version, 3-digit code, optional reason.
      first = false;
      if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ' ||
          (line.size() > 12 && line[12] != ' ')) {
        return HeadError(absl::StrCat("bad status line '", std::string(line), "'"));
      }
      const std::string_view code = line.substr(9, 3);
      const auto [end, ec] = std::from_chars(code.data(), code.data() + 3, out.status_code);
      if (ec != std::errc() || end != code.data() + 3 || out.status_code < 100) {
        return HeadError(absl::StrCat("bad status code in '", std::string(line), "'"));
      }
      if (line.size() > 13) out.reason = std::string(line.substr(13));
      continue;
    }
    if (line.empty()) break;  // End of the head.
    const size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
      return HeadError(absl::StrCat("bad header line '", std::string(line), "'"));
    }
    const std::string name = ToLower(line.substr(0, colon));
    const std::string value(TrimSpaceTab(line.substr(colon + 1)));
    auto [it, inserted] = out.headers.emplace(name, value);
    if (!inserted) it->second = absl::StrCat(it->second, ", ", value);
  }
  if (first) return HeadError("empty");
  return out;
}

bool HttpResponseReader::body_complete() const {
  if (!head_) return false;
  if (head_->chunked()) return chunked_.done();
  return body_bytes_left_.has_value() && *body_bytes_left_ == 0;
}

absl::StatusOr<std::string> HttpResponseReader::Feed(std::string_view bytes) {
  if (!error_.ok()) return error_;
  if (head_) return FeedBody(bytes);
  head_buffer_.append(bytes);
  const size_t end = head_buffer_.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (head_buffer_.size() > kMaxHeadBytes) {
      error_ = HeadError(absl::StrCat("longer than ", kMaxHeadBytes, " bytes"));
      return error_;
    }
    return std::string();
  }
  absl::StatusOr<HttpResponseHead> head =
      ParseResponseHead(std::string_view(head_buffer_).substr(0, end + 2));
  if (!head.ok()) {
    error_ = head.status();
    return error_;
  }
  head_ = *std::move(head);
  if (!head_->chunked()) {
    const int code = head_->status_code;
    if (code == 204 || code == 304 || code < 200) {
      body_bytes_left_ = 0;
    } else if (const std::optional<std::string> length = head_->Header("content-length")) {
      uint64_t n = 0;
      const auto [ptr, ec] = std::from_chars(length->data(), length->data() + length->size(), n);
      if (ec != std::errc() || ptr != length->data() + length->size() || length->empty()) {
        error_ = HeadError(absl::StrCat("bad Content-Length '", *length, "'"));
        return error_;
      }
      body_bytes_left_ = n;
    }
  }
  const std::string rest = head_buffer_.substr(end + 4);
  head_buffer_.clear();
  head_buffer_.shrink_to_fit();
  return FeedBody(rest);
}

absl::StatusOr<std::string> HttpResponseReader::FeedBody(std::string_view bytes) {
  if (head_->chunked()) {
    absl::StatusOr<std::string> decoded = chunked_.Feed(bytes);
    if (!decoded.ok()) error_ = decoded.status();
    return decoded;
  }
  if (body_bytes_left_) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(*body_bytes_left_, bytes.size()));
    *body_bytes_left_ -= n;
    return std::string(bytes.substr(0, n));
  }
  return std::string(bytes);
}

}  // namespace glimpse::tools::loadgen
