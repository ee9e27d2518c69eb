#include "server/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace glimpse::server {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point DeadlineAfter(absl::Duration d) {
  return Clock::now() + absl::ToChronoMilliseconds(d);
}

// Milliseconds until `deadline` for poll(), clamped to [0, INT32_MAX].
int RemainingMs(Clock::time_point deadline) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (ms <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(ms, INT32_MAX));
}

std::string ErrnoMessage(int err) {
  return std::error_code(err, std::generic_category()).message();
}

const char* ReasonPhrase(int status) {
  // clang-format off
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
  // clang-format on
}

// RFC 9110 token characters (method and header names).
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  // clang-format off
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
  // clang-format on
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Field values: visible ASCII, space, tab and obs-text (>= 0x80); no other control bytes.
bool IsValidFieldValue(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header list (e.g. Connection) holds `token`.
bool ListHasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (EqualsIgnoreAsciiCase(TrimOws(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::string FormatAddress(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
    return absl::StrCat(host, ":", port);
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
    return absl::StrCat("[", host, "]:", port);
  }
  return "unknown";
}

// ---- Socket I/O with deadlines -------------------------------------------------------------
// Connection sockets are non-blocking; every wait is a poll() on the socket and on the
// server's wake pipe, so Shutdown() interrupts any wait that should not outlive it.

enum class IoResult { kOk, kTimeout, kClosed, kStopped };

// Appends whatever arrives next to `buf`. kClosed: EOF or a socket error.
IoResult ReadMore(int fd, int wake_fd, std::string& buf, Clock::time_point deadline) {
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const int n = poll(fds, 2, RemainingMs(deadline));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoResult::kClosed;
    }
    if (fds[1].revents != 0) return IoResult::kStopped;
    if (n == 0) return IoResult::kTimeout;
    if (fds[0].revents & POLLNVAL) return IoResult::kClosed;
    char chunk[16 * 1024];
    const ssize_t got = recv(fd, chunk, sizeof(chunk), 0);
    if (got > 0) {
      buf.append(chunk, static_cast<size_t>(got));
      return IoResult::kOk;
    }
    if (got == 0) return IoResult::kClosed;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
    return IoResult::kClosed;
  }
}

// Sends all of `data`. `wake_fd` -1: not interrupted by Shutdown().
IoResult SendAll(int fd, int wake_fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t sent = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      data.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd fds[2] = {{fd, POLLOUT, 0}, {wake_fd, POLLIN, 0}};  // poll() skips fd -1.
      const int n = poll(fds, 2, RemainingMs(deadline));
      if (n < 0 && errno != EINTR) return IoResult::kClosed;
      if (fds[1].revents != 0) return IoResult::kStopped;
      if (n == 0) return IoResult::kTimeout;
      continue;  // Writable, or an error that the next send() reports.
    }
    return IoResult::kClosed;
  }
  return IoResult::kOk;
}

// Closes our side gracefully: FIN, then discard what the client still sends for a moment, so
// that unread request bytes do not make the kernel answer with a RST that destroys the
// response before the client reads it.
void LingeringClose(int fd, int wake_fd) {
  shutdown(fd, SHUT_WR);
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(2);
  std::string discard;
  size_t discarded = 0;
  while (discarded < (1 << 20)) {
    discard.clear();
    if (ReadMore(fd, wake_fd, discard, deadline) != IoResult::kOk) break;
    discarded += discard.size();
  }
}

// A complete response with Connection: close, for errors the server answers itself.
std::string ErrorResponseBytes(int status, std::string_view message,
                               std::string_view extra_headers = "") {
  const std::string body =
      absl::StrCat(status, " ", ReasonPhrase(status), ": ", std::string(message), "\n");
  return absl::StrCat(
      "HTTP/1.1 ", status, " ", ReasonPhrase(status),
      "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ", body.size(), "\r\n",
      std::string(extra_headers), "Connection: close\r\n\r\n", body);
}

// ---- Request parsing -----------------------------------------------------------------------

// Where the header block ends (the index after its blank line), or npos. Accepts CRLF and bare
// LF line ends.
size_t FindHeaderEnd(const std::string& buf) {
  for (size_t i = buf.find('\n'); i != std::string::npos; i = buf.find('\n', i + 1)) {
    if (i + 1 < buf.size() && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return std::string::npos;
}

// RFC 9112 §2.2: ignore empty lines before a request line.
void StripLeadingEmptyLines(std::string& buf) {
  size_t i = 0;
  while (i < buf.size() &&
         (buf[i] == '\n' || (buf[i] == '\r' && i + 1 < buf.size() && buf[i + 1] == '\n'))) {
    i += buf[i] == '\r' ? 2 : 1;
  }
  buf.erase(0, i);
}

// A response the server gives instead of calling a handler; status 0 closes silently.
struct Failure {
  int status = 0;
  std::string message;
};

struct BodyFraming {
  bool chunked = false;
  size_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;
};

std::optional<Failure> ParseRequestLine(std::string_view line, HttpRequest& request) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Failure{400, "malformed request line; expected 'METHOD /path HTTP/1.1'"};
  }
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return Failure{400, "malformed method in request line"};
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    if (version.size() == 8 && version.starts_with("HTTP/") && version[6] == '.') {
      return Failure{505, "only HTTP/1.0 and HTTP/1.1 are supported"};
    }
    return Failure{400, "malformed HTTP version in request line"};
  }
  if (target.empty() || !IsValidFieldValue(target) || target.find('\t') != std::string_view::npos) {
    return Failure{400, "malformed request target"};
  }
  // Absolute form (proxies send it): keep only the path and query.
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() > scheme.size() &&
        EqualsIgnoreAsciiCase(target.substr(0, scheme.size()), scheme)) {
      const size_t slash = target.find_first_of("/?", scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
      break;
    }
  }
  if (target != "*" && target.front() != '/') {
    return Failure{400, "request target must start with '/'"};
  }
  const size_t question = target.find('?');
  request.method = std::string(method);
  request.path = std::string(target.substr(0, question));
  request.query =
      question == std::string_view::npos ? "" : std::string(target.substr(question + 1));
  request.version = std::string(version);
  return std::nullopt;
}

// Parses the header block (request line through the blank line) into `request` and `framing`.
std::optional<Failure> ParseHead(std::string_view head, HttpRequest& request,
                                 BodyFraming& framing) {
  bool first = true;
  while (!head.empty()) {
    const size_t eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (first) {
      first = false;
      if (std::optional<Failure> f = ParseRequestLine(line, request)) return f;
      continue;
    }
    if (line.empty()) break;  // The blank line ending the block.
    if (line.front() == ' ' || line.front() == '\t') {
      return Failure{400, "obsolete header line folding is not accepted"};
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
      return Failure{400, "malformed header line; expected 'Name: value'"};
    }
    const std::string_view value = TrimOws(line.substr(colon + 1));
    if (!IsValidFieldValue(value)) return Failure{400, "control character in a header value"};
    request.headers.Add(std::string(line.substr(0, colon)), std::string(value));
  }

  const bool http11 = request.version == "HTTP/1.1";
  framing.keep_alive = http11;
  std::optional<size_t> content_length;
  bool has_transfer_encoding = false;
  for (const auto& [name, value] : request.headers) {
    if (EqualsIgnoreAsciiCase(name, "Connection")) {
      if (ListHasToken(value, "close")) {
        framing.keep_alive = false;
      } else if (!http11 && ListHasToken(value, "keep-alive")) {
        framing.keep_alive = true;
      }
    } else if (EqualsIgnoreAsciiCase(name, "Content-Length")) {
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return Failure{400, "Content-Length must be a decimal number"};
      }
      const size_t length = std::stoull(value);
      if (content_length.has_value() && *content_length != length) {
        return Failure{400, "conflicting Content-Length headers"};
      }
      content_length = length;
    } else if (EqualsIgnoreAsciiCase(name, "Transfer-Encoding")) {
      if (has_transfer_encoding || !EqualsIgnoreAsciiCase(value, "chunked")) {
        return Failure{501, "only 'Transfer-Encoding: chunked' is supported for request bodies"};
      }
      has_transfer_encoding = true;
    } else if (EqualsIgnoreAsciiCase(name, "Expect")) {
      framing.expect_continue = http11 && EqualsIgnoreAsciiCase(value, "100-continue");
    }
  }
  if (has_transfer_encoding && content_length.has_value()) {
    return Failure{400, "a request may not carry both Content-Length and Transfer-Encoding"};
  }
  framing.chunked = has_transfer_encoding;
  framing.content_length = content_length.value_or(0);
  return std::nullopt;
}

// Parses a chunk-size line ("1a;ext=x"), or nullopt.
std::optional<size_t> ParseChunkSize(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  line = TrimOws(line.substr(0, line.find(';')));
  if (line.empty() || line.size() > 15) return std::nullopt;
  size_t size = 0;
  for (const char c : line) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    size = size * 16 + static_cast<size_t>(digit);
  }
  return size;
}

Failure FailureFor(IoResult result, std::string_view what) {
  if (result == IoResult::kTimeout) {
    return Failure{408, absl::StrCat("the ", std::string(what), " did not arrive in time")};
  }
  return Failure{};  // Closed or stopping: nothing to say to anyone.
}

}  // namespace

// ---- HttpResponseWriter --------------------------------------------------------------------

HttpResponseWriter::HttpResponseWriter(const Options& options) : options_(options) {}

absl::Status HttpResponseWriter::SendHead(int status, const HttpHeaders& headers, bool streaming,
                                          size_t content_length, std::string* out) {
  if (status < 200 || status > 599) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP status ", status, " cannot be sent; use a status in 200..599"));
  }
  keep_alive_ = options_.keep_alive && !options_.stopping->load();
  chunked_ = streaming && options_.http11;
  if (streaming && !options_.http11) keep_alive_ = false;  // The body ends at close.
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n");
  for (const auto& [name, value] : headers) {
    if (!IsToken(name) || !IsValidFieldValue(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("response header '", name,
                       "' has an invalid name or a control character (CR/LF) in "
                       "its value; sanitize it before sending"));
    }
    if (EqualsIgnoreAsciiCase(name, "Connection")) {
      if (ListHasToken(value, "close")) keep_alive_ = false;
      continue;
    }
    if (EqualsIgnoreAsciiCase(name, "Content-Length") ||
        EqualsIgnoreAsciiCase(name, "Transfer-Encoding")) {
      continue;  // Framing is the server's job.
    }
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  const bool bodyless = status == 204 || status == 304;
  if (!streaming && content_length > 0 && !headers.Has("Content-Type")) {
    head.append("Content-Type: text/plain; charset=utf-8\r\n");
  }
  if (chunked_) {
    head.append("Transfer-Encoding: chunked\r\n");
  } else if (!streaming && !bodyless) {
    absl::StrAppend(&head, "Content-Length: ", content_length, "\r\n");
  }
  if (!keep_alive_) {
    head.append("Connection: close\r\n");
  } else if (!options_.http11) {
    head.append("Connection: keep-alive\r\n");
  }
  head.append("\r\n");
  *out = std::move(head);
  return absl::OkStatus();
}

absl::Status HttpResponseWriter::SendBytes(std::string_view data, bool abort_on_stop) {
  const IoResult result = SendAll(options_.fd, abort_on_stop ? options_.wake_fd : -1, data,
                                  DeadlineAfter(options_.write_timeout));
  switch (result) {
    case IoResult::kOk:
      return absl::OkStatus();
    case IoResult::kStopped:
      state_ = State::kFailed;
      return absl::UnavailableError("the HTTP server is shutting down; stop this response");
    case IoResult::kTimeout:
      state_ = State::kFailed;
      return absl::CancelledError(absl::StrCat("the client did not read the response for ",
                                               absl::FormatDuration(options_.write_timeout),
                                               "; stop producing output for this request"));
    case IoResult::kClosed:
      state_ = State::kFailed;
      return absl::CancelledError(
          "the client closed the connection; stop producing output for this request");
  }
  return absl::InternalError("unreachable");
}

absl::Status HttpResponseWriter::Send(const HttpResponse& response) {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kIdle) {
    return absl::FailedPreconditionError(
        "a response was already started for this request; call Send or BeginStream once");
  }
  const bool bodyless = response.status == 204 || response.status == 304;
  std::string bytes;
  if (absl::Status s = SendHead(response.status, response.headers, /*streaming=*/false,
                                bodyless ? 0 : response.body.size(), &bytes);
      !s.ok()) {
    return s;
  }
  if (!bodyless) bytes.append(response.body);
  if (absl::Status s = SendBytes(bytes, /*abort_on_stop=*/false); !s.ok()) return s;
  state_ = State::kDone;
  return absl::OkStatus();
}

absl::Status HttpResponseWriter::BeginStream(int status, const HttpHeaders& headers) {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kIdle) {
    return absl::FailedPreconditionError(
        "a response was already started for this request; call Send or BeginStream once");
  }
  std::string bytes;
  if (absl::Status s = SendHead(status, headers, /*streaming=*/true, 0, &bytes); !s.ok()) {
    return s;
  }
  if (absl::Status s = SendBytes(bytes, /*abort_on_stop=*/true); !s.ok()) return s;
  state_ = State::kStreaming;
  return absl::OkStatus();
}

absl::Status HttpResponseWriter::Write(std::string_view data) {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kFailed) {
    return absl::CancelledError("an earlier write to this client failed; stop this response");
  }
  if (state_ != State::kStreaming) {
    return absl::FailedPreconditionError("Write needs BeginStream first and no Finish yet");
  }
  if (options_.stopping->load()) {
    state_ = State::kFailed;
    return absl::UnavailableError("the HTTP server is shutting down; stop this response");
  }
  // A closed client may still accept a write or two into the kernel buffer; ask first.
  pollfd pfd = {options_.fd, POLLRDHUP, 0};
  if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
    state_ = State::kFailed;
    return absl::CancelledError(
        "the client closed the connection; stop producing output for this request");
  }
  if (data.empty()) return absl::OkStatus();  // An empty chunk would end the stream.
  if (!chunked_) return SendBytes(data, /*abort_on_stop=*/true);
  char size_line[32];
  const int n = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", data.size());
  std::string bytes;
  bytes.reserve(static_cast<size_t>(n) + data.size() + 2);
  bytes.append(size_line, static_cast<size_t>(n));
  bytes.append(data);
  bytes.append("\r\n");
  return SendBytes(bytes, /*abort_on_stop=*/true);
}

absl::Status HttpResponseWriter::Finish() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kFailed) {
    return absl::CancelledError("an earlier write to this client failed; stop this response");
  }
  if (state_ != State::kStreaming) {
    return absl::FailedPreconditionError("Finish needs BeginStream first and only once");
  }
  if (chunked_) {
    if (absl::Status s = SendBytes("0\r\n\r\n", /*abort_on_stop=*/true); !s.ok()) return s;
  }
  state_ = State::kDone;
  return absl::OkStatus();
}

bool HttpResponseWriter::ClientDisconnected() const {
  pollfd pfd = {options_.fd, POLLRDHUP, 0};
  return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool HttpResponseWriter::CompleteAfterHandler() {
  State state;
  {
    absl::MutexLock lock(&mu_);
    state = state_;
  }
  switch (state) {
    case State::kIdle: {
      HttpResponse response = HttpResponse::Text(500,
                                                 "500 Internal Server Error: the handler "
                                                 "sent no response\n");
      response.headers.Add("Connection", "close");
      (void)Send(response);
      return false;
    }
    case State::kStreaming:
      if (!Finish().ok()) return false;
      break;
    case State::kDone:
      break;
    case State::kFailed:
      return false;
  }
  absl::MutexLock lock(&mu_);
  return state_ == State::kDone && keep_alive_;
}

// ---- HttpServer ----------------------------------------------------------------------------

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {}

HttpServer::~HttpServer() { Shutdown(); }

absl::Status HttpServer::AddRoute(Route route) {
  if (started_.load()) {
    return absl::FailedPreconditionError(
        "HTTP routes must be registered before HttpServer::Start()");
  }
  if (!IsToken(route.method)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", route.method, "' is not an HTTP method; use e.g. \"GET\""));
  }
  if (route.path.empty() || route.path.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("route path '", route.path, "' must start with '/'"));
  }
  if (!route.handler) return absl::InvalidArgumentError("route handler is empty");
  for (const Route& r : routes_) {
    if (r.method == route.method && r.path == route.path && r.prefix == route.prefix) {
      return absl::AlreadyExistsError(
          absl::StrCat(route.method, " ", route.path, " is already registered; register it once"));
    }
  }
  routes_.push_back(std::move(route));
  return absl::OkStatus();
}

absl::Status HttpServer::Handle(std::string method, std::string path, HttpHandler handler) {
  if (!handler) return absl::InvalidArgumentError("route handler is empty");
  return AddRoute(
      Route{std::move(method), std::move(path), /*prefix=*/false,
            [handler = std::move(handler)](const HttpRequest& request, HttpResponseWriter& writer) {
              (void)writer.Send(handler(request));
            }});
}

absl::Status HttpServer::HandleStreaming(std::string method, std::string path,
                                         HttpStreamHandler handler) {
  return AddRoute(Route{std::move(method), std::move(path), /*prefix=*/false, std::move(handler)});
}

absl::Status HttpServer::HandlePrefix(std::string method, std::string prefix,
                                      HttpStreamHandler handler) {
  return AddRoute(Route{std::move(method), std::move(prefix), /*prefix=*/true, std::move(handler)});
}

absl::Status HttpServer::SetFallback(HttpStreamHandler handler) {
  if (started_.load()) {
    return absl::FailedPreconditionError(
        "the fallback handler must be set before HttpServer::Start()");
  }
  fallback_ = std::move(handler);
  return absl::OkStatus();
}

absl::Status HttpServer::Start() {
  if (started_.load()) return absl::FailedPreconditionError("HttpServer::Start() called twice");
  if (options_.max_connections < 1) {
    return absl::InvalidArgumentError("max_connections must be at least 1");
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const std::string port_string = std::to_string(options_.port);
  if (const int rc = getaddrinfo(options_.host.c_str(), port_string.c_str(), &hints, &addresses);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve HTTP host '", options_.host,
                                                   "': ", gai_strerror(rc),
                                                   "; pass an address such as 127.0.0.1"));
  }
  std::string last_error = "no addresses";
  for (addrinfo* ai = addresses; ai != nullptr && listen_fd_ < 0; ai = ai->ai_next) {
    const int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_error = ErrnoMessage(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
      last_error = ErrnoMessage(errno);
      close(fd);
      continue;
    }
    listen_fd_ = fd;
  }
  freeaddrinfo(addresses);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", last_error,
                     "; choose another port or stop the process using it"));
  }
  sockaddr_storage bound = {};
  socklen_t bound_len = sizeof(bound);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    const int err = errno;
    close(listen_fd_);
    listen_fd_ = -1;
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a pipe: ", ErrnoMessage(err), "; raise the fd limit"));
  }
  wake_read_fd_ = wake[0];
  wake_write_fd_ = wake[1];
  started_.store(true);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  spdlog::info("HTTP server listening on {}:{}", options_.host, port_);
  return absl::OkStatus();
}

void HttpServer::ReapFinishedConnections() {
  std::list<std::unique_ptr<Connection>> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      auto next = std::next(it);
      if ((*it)->done.load()) finished.splice(finished.end(), connections_, it);
      it = next;
    }
  }
  for (auto& connection : finished) connection->thread.join();
}

void HttpServer::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("HTTP server: poll on the listening socket failed: {}", ErrnoMessage(errno));
      return;
    }
    if (fds[1].revents != 0) return;  // Shutdown().
    if ((fds[0].revents & POLLIN) == 0) continue;
    sockaddr_storage addr = {};
    socklen_t addr_len = sizeof(addr);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &addr_len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) continue;
      spdlog::warn("HTTP server: accept failed: {}", ErrnoMessage(err));
      // Out of fds or memory: back off instead of spinning on a still-readable socket.
      pollfd wake = {wake_read_fd_, POLLIN, 0};
      poll(&wake, 1, 100);
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ReapFinishedConnections();
    absl::MutexLock lock(&mu_);
    if (connections_.size() >= static_cast<size_t>(options_.max_connections)) {
      // Best effort, never blocking the acceptor: the reply fits in the socket buffer.
      const std::string reply =
          ErrorResponseBytes(503, "too many connections; retry shortly", "Retry-After: 1\r\n");
      (void)send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      shutdown(fd, SHUT_WR);
      char drain[4096];
      while (recv(fd, drain, sizeof(drain), MSG_DONTWAIT) > 0) {
      }
      close(fd);
      // Logged at 1, 2, 4, 8, ... rejections so that a flood cannot flood the log.
      ++num_rejected_;
      if ((num_rejected_ & (num_rejected_ - 1)) == 0) {
        spdlog::warn(
            "HTTP server: {} connection(s) rejected so far with 503; {} already open "
            "(raise max_connections if this is normal load)",
            num_rejected_, options_.max_connections);
      }
      continue;
    }
    connections_.push_back(std::make_unique<Connection>());
    Connection* connection = connections_.back().get();
    connection->fd = fd;
    connection->remote_address = FormatAddress(addr);
    connection->thread = std::thread([this, connection] { ServeConnection(connection); });
  }
}

void HttpServer::Dispatch(const HttpRequest& request, HttpResponseWriter& writer) const {
  const Route* best_prefix = nullptr;
  std::vector<std::string> allowed;  // Methods of routes that match the path.
  for (const Route& route : routes_) {
    const bool path_matches =
        route.prefix ? request.path.starts_with(route.path) : request.path == route.path;
    if (!path_matches) continue;
    if (route.method != request.method) {
      if (std::find(allowed.begin(), allowed.end(), route.method) == allowed.end()) {
        allowed.push_back(route.method);
      }
      continue;
    }
    if (!route.prefix) {
      route.handler(request, writer);
      return;
    }
    if (best_prefix == nullptr || route.path.size() > best_prefix->path.size()) {
      best_prefix = &route;
    }
  }
  if (best_prefix != nullptr) {
    best_prefix->handler(request, writer);
    return;
  }
  if (!allowed.empty()) {
    std::string allow;
    for (const std::string& method : allowed) {
      absl::StrAppend(&allow, allow.empty() ? "" : ", ", method);
    }
    HttpResponse response = HttpResponse::Text(
        405, absl::StrCat("405 Method Not Allowed: ", request.path, " accepts ", allow, "\n"));
    response.headers.Add("Allow", allow);
    (void)writer.Send(response);
    return;
  }
  if (fallback_) {
    fallback_(request, writer);
    return;
  }
  (void)writer.Send(HttpResponse::Text(404, "404 Not Found: no handler for this path\n"));
}

void HttpServer::ServeConnection(Connection* connection) {
  const int fd = connection->fd;
  std::string buf;  // Bytes received but not yet consumed (may hold pipelined requests).
  bool peer_closed = false;
  std::optional<Failure> failure;
  // A new connection gets header_timeout from accept() to its first complete header block, so
  // that silent connections cannot hold the connection slots for a whole idle_timeout.
  const Clock::time_point first_deadline = DeadlineAfter(options_.header_timeout);
  // Reads more of the request into `buf`; on EOF, timeout or shutdown records why (as the
  // failure for `what`) and returns false.
  const auto read_more = [&](Clock::time_point deadline, std::string_view what) {
    const IoResult r = ReadMore(fd, wake_read_fd_, buf, deadline);
    if (r == IoResult::kOk) return true;
    peer_closed = r == IoResult::kClosed;
    failure = FailureFor(r, what);
    return false;
  };
  for (bool first_request = true; !stopping_.load(); first_request = false) {
    // 1. Wait for the next request, unless a pipelined one is already here.
    if (buf.empty()) {
      const IoResult r =
          ReadMore(fd, wake_read_fd_, buf,
                   first_request ? first_deadline : DeadlineAfter(options_.idle_timeout));
      if (r != IoResult::kOk) {
        peer_closed = r == IoResult::kClosed;
        break;
      }
    }
    // 2. The header block, within header_timeout of its first byte.
    const Clock::time_point header_deadline =
        first_request ? first_deadline : DeadlineAfter(options_.header_timeout);
    size_t head_end = std::string::npos;
    for (;;) {
      StripLeadingEmptyLines(buf);
      head_end = FindHeaderEnd(buf);
      if (head_end != std::string::npos || buf.size() > options_.max_header_bytes) break;
      if (!read_more(header_deadline, "request headers")) break;
    }
    if (failure) break;
    if (head_end == std::string::npos || head_end > options_.max_header_bytes) {
      failure = Failure{
          431, absl::StrCat("request headers exceed ", options_.max_header_bytes, " bytes")};
      break;
    }
    HttpRequest request;
    request.remote_address = connection->remote_address;
    BodyFraming framing;
    failure = ParseHead(std::string_view(buf).substr(0, head_end), request, framing);
    buf.erase(0, head_end);
    if (failure) break;

    // 3. The body, within body_timeout of the end of the headers.
    if (!framing.chunked && framing.content_length > options_.max_body_bytes) {
      failure = Failure{413, absl::StrCat("request body of ", framing.content_length,
                                          " bytes exceeds the limit of ", options_.max_body_bytes)};
      break;
    }
    const bool body_expected = framing.chunked || framing.content_length > 0;
    if (framing.expect_continue && body_expected && buf.empty()) {
      if (SendAll(fd, wake_read_fd_, "HTTP/1.1 100 Continue\r\n\r\n",
                  DeadlineAfter(options_.write_timeout)) != IoResult::kOk) {
        break;
      }
    }
    const Clock::time_point body_deadline = DeadlineAfter(options_.body_timeout);
    if (!framing.chunked) {
      while (buf.size() < framing.content_length) {
        if (!read_more(body_deadline, "request body")) break;
      }
      if (failure) break;
      request.body = buf.substr(0, framing.content_length);
      buf.erase(0, framing.content_length);
    } else {
      // Chunked: size line, data, CRLF, ..., "0", trailers, blank line.
      size_t line_limit = 1024;  // Chunk-size lines; trailers get the header limit.
      bool in_trailers = false;
      for (;;) {
        size_t eol;
        while ((eol = buf.find('\n')) == std::string::npos) {
          if (buf.size() > line_limit) {
            failure = Failure{400, "malformed chunked request body (line too long)"};
            break;
          }
          if (!read_more(body_deadline, "request body")) break;
        }
        if (failure) break;
        const std::string line = buf.substr(0, eol);
        buf.erase(0, eol + 1);
        if (in_trailers) {
          if (line.empty() || line == "\r") break;  // End of the message.
          if (line.size() + 1 > line_limit) {
            failure = Failure{431, "request trailers are too large"};
            break;
          }
          line_limit -= line.size() + 1;
          continue;
        }
        const std::optional<size_t> size = ParseChunkSize(line);
        if (!size) {
          failure = Failure{400, "malformed chunk size in chunked request body"};
          break;
        }
        if (*size == 0) {
          in_trailers = true;
          line_limit = options_.max_header_bytes;
          continue;
        }
        if (*size > options_.max_body_bytes - request.body.size()) {
          failure = Failure{413, absl::StrCat("request body exceeds the limit of ",
                                              options_.max_body_bytes, " bytes")};
          break;
        }
        while (buf.size() < *size + 2) {
          if (!read_more(body_deadline, "request body")) break;
        }
        if (failure) break;
        if (buf.compare(*size, 2, "\r\n") != 0) {
          failure = Failure{400, "malformed chunked request body (missing CRLF after data)"};
          break;
        }
        request.body.append(buf, 0, *size);
        buf.erase(0, *size + 2);
      }
      if (failure) break;
    }

    // 4. The handler.
    HttpResponseWriter::Options writer_options;
    writer_options.fd = fd;
    writer_options.wake_fd = wake_read_fd_;
    writer_options.stopping = &stopping_;
    writer_options.write_timeout = options_.write_timeout;
    writer_options.http11 = request.version == "HTTP/1.1";
    writer_options.keep_alive = framing.keep_alive;
    HttpResponseWriter writer(writer_options);
    Dispatch(request, writer);
    if (!writer.CompleteAfterHandler()) break;
  }

  if (failure && failure->status != 0) {
    (void)SendAll(fd, -1, ErrorResponseBytes(failure->status, failure->message),
                  DeadlineAfter(options_.write_timeout));
  }
  if (!peer_closed) LingeringClose(fd, wake_read_fd_);
  close(fd);
  absl::MutexLock lock(&mu_);
  connection->done.store(true);
}

void HttpServer::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  if (!started_.load() || stopping_.load()) return;
  stopping_.store(true);
  // The pipe stays readable from now on, waking every poll() in the acceptor and connections.
  while (write(wake_write_fd_, "x", 1) < 0 && errno == EINTR) {
  }
  acceptor_.join();
  close(listen_fd_);
  listen_fd_ = -1;
  std::list<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    connections.swap(connections_);
  }
  for (auto& connection : connections) connection->thread.join();
  close(wake_read_fd_);
  close(wake_write_fd_);
  wake_read_fd_ = wake_write_fd_ = -1;
  spdlog::info("HTTP server on port {} stopped", port_);
}

}  // namespace glimpse::server
