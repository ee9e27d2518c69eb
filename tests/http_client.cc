#include "tests/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace glimpse::testing {
namespace {

std::string Dechunk(const std::string& raw) {
  std::string out;
  size_t at = 0;
  while (at < raw.size()) {
    const size_t eol = raw.find("\r\n", at);
    if (eol == std::string::npos) break;
    const size_t size = std::stoul(raw.substr(at, eol - at), nullptr, 16);
    if (size == 0) break;
    out += raw.substr(eol + 2, size);
    at = eol + 2 + size + 2;
  }
  return out;
}

}  // namespace

int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

HttpResult Http(int port, const std::string& method, const std::string& path,
                const std::string& body, const std::string& extra_headers) {
  HttpResult r;
  const int fd = ConnectLoopback(port);
  if (fd < 0) return r;
  const std::string request = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                              extra_headers + "Content-Length: " + std::to_string(body.size()) +
                              "\r\n\r\n" + body;
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) raw.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos || raw.size() < 12) return r;
  r.headers = raw.substr(0, head_end);
  r.status = std::stoi(raw.substr(9, 3));
  const std::string body_raw = raw.substr(head_end + 4);
  r.body = r.headers.find("Transfer-Encoding: chunked") != std::string::npos ? Dechunk(body_raw)
                                                                             : body_raw;
  return r;
}

}  // namespace glimpse::testing
