// A minimal blocking HTTP/1.1 client over loopback sockets for end-to-end tests: one request
// per connection ("Connection: close"), chunked bodies decoded. Test-only; no TLS, no proxies.
#ifndef GLIMPSE_TESTS_HTTP_CLIENT_H_
#define GLIMPSE_TESTS_HTTP_CLIENT_H_

#include <string>

namespace glimpse::testing {

struct HttpResult {
  int status = 0;        // 0 when nothing (or no valid head) came back.
  std::string headers;   // Status line and header lines, without the blank line.
  std::string body;      // De-chunked.
};

// A connected socket to 127.0.0.1:port, or -1.
int ConnectLoopback(int port);

// Sends one request and reads until the server closes. Writes use MSG_NOSIGNAL, so a server
// that answers early and closes (413) cannot kill the test with SIGPIPE.
HttpResult Http(int port, const std::string& method, const std::string& path,
                const std::string& body = "", const std::string& extra_headers = "");

}  // namespace glimpse::testing

#endif  // GLIMPSE_TESTS_HTTP_CLIENT_H_
