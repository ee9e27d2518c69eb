// HTTP/1.1 message types shared by glimpse's HTTP servers (the small blocking one in
// http_server.h and the asynchronous one in async_http_server.h): headers with
// case-insensitive lookup, a parsed request, a complete response.
#ifndef GLIMPSE_SERVER_HTTP_MESSAGE_H_
#define GLIMPSE_SERVER_HTTP_MESSAGE_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace glimpse::server {

// Header fields in arrival order; names compare case-insensitively (ASCII).
class HttpHeaders {
 public:
  using Entry = std::pair<std::string, std::string>;

  // Appends a field (repeated names are kept, in order).
  void Add(std::string name, std::string value);
  // Replaces every field named `name` with one field.
  void Set(std::string name, std::string value);
  void Remove(std::string_view name);
  // The first field named `name`, or nullopt. The view is valid until this object changes.
  std::optional<std::string_view> Get(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }

  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;
};

// ASCII case-insensitive equality (header names, tokens).
bool EqualsIgnoreAsciiCase(std::string_view a, std::string_view b);

struct HttpRequest {
  std::string method;   // As sent, e.g. "GET" (methods are case-sensitive).
  std::string path;     // Origin-form path without the query, e.g. "/v1/models".
  std::string query;    // After '?', raw (not decoded); empty if none.
  std::string version;  // "HTTP/1.1" or "HTTP/1.0".
  HttpHeaders headers;
  std::string body;            // Decoded (de-chunked) body; empty if none.
  std::string remote_address;  // Peer "ip:port", for logs.
};

struct HttpResponse {
  int status = 200;
  // Content-Length, Transfer-Encoding and Connection are set by the server (a handler's
  // `Connection: close` is honoured). Content-Type defaults to text/plain for a non-empty body.
  HttpHeaders headers;
  std::string body;

  // Convenience: a response with a body and its Content-Type.
  static HttpResponse Text(int status, std::string body,
                           std::string content_type = "text/plain; charset=utf-8");
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_HTTP_MESSAGE_H_
