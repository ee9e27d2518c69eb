#include "server/async_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace glimpse::server {
namespace {

int Connect(int port) {
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

void SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// Reads until `done(buffer)` or EOF or the timeout.
std::string ReadUntil(int fd, const std::function<bool(const std::string&)>& done,
                      int timeout_ms = 5000) {
  std::string out;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done(out) && std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool HasCompleteResponse(const std::string& s) {
  const size_t head_end = s.find("\r\n\r\n");
  if (head_end == std::string::npos) return false;
  const size_t cl = s.find("Content-Length: ");
  if (cl == std::string::npos || cl > head_end) return s.find("0\r\n\r\n", head_end) != std::string::npos;
  const size_t len = std::stoul(s.substr(cl + 16));
  return s.size() >= head_end + 4 + len;
}

class AsyncHttpServerTest : public ::testing::Test {
 protected:
  void StartServer(AsyncHttpServerOptions options = {}) {
    server_ = std::make_unique<AsyncHttpServer>(options);
    server_->Handle("GET", "/hello", [](HttpRequest req, std::shared_ptr<Responder> r) {
      HttpResponse resp;
      resp.headers.Add("Content-Type", "text/plain");
      resp.body = "hello " + req.query;
      r->Send(std::move(resp));
    });
    server_->Handle("POST", "/echo", [](HttpRequest req, std::shared_ptr<Responder> r) {
      HttpResponse resp;
      resp.body = req.body;
      r->Send(std::move(resp));
    });
    // Streams `n` chunks from another thread, 2 ms apart; reports a client that left.
    server_->Handle("GET", "/stream", [this](HttpRequest req, std::shared_ptr<Responder> r) {
      const int n = req.query.empty() ? 5 : std::stoi(req.query);
      r->OnClose([this] { ++closed_streams_; });
      r->BeginStream(200, HttpHeaders());
      std::lock_guard<std::mutex> lock(mu_);
      producers_.emplace_back([r, n] {
        for (int i = 0; i < n && !r->closed(); ++i) {
          r->Write("data: " + std::to_string(i) + "\n\n");
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        r->Finish();
      });
    });
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& t : producers_) t.join();
      producers_.clear();
    }
    if (server_) server_->Shutdown();
  }

  std::unique_ptr<AsyncHttpServer> server_;
  std::mutex mu_;
  std::vector<std::thread> producers_;
  std::atomic<int> closed_streams_{0};
};

TEST_F(AsyncHttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /hello?a HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string first = ReadUntil(fd, HasCompleteResponse);
  EXPECT_NE(first.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(first.find("hello a"), std::string::npos);
  SendAll(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde");
  std::string second = ReadUntil(fd, HasCompleteResponse);
  EXPECT_NE(second.find("abcde"), std::string::npos);
  close(fd);
}

TEST_F(AsyncHttpServerTest, ErrorsForUnknownPathsMethodsGarbageAndBigBodies) {
  AsyncHttpServerOptions options;
  options.max_body_bytes = 100;
  StartServer(options);
  auto roundtrip = [&](const std::string& request) {
    const int fd = Connect(server_->port());
    SendAll(fd, request);
    std::string out = ReadUntil(fd, HasCompleteResponse);
    close(fd);
    return out;
  };
  EXPECT_NE(roundtrip("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").find(" 404 "), std::string::npos);
  EXPECT_NE(roundtrip("DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n").find(" 405 "), std::string::npos);
  // A path with a quote and a backslash still gets a well-formed JSON error naming it.
  const std::string quoted = roundtrip("GET /a\"b\\c HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_NE(quoted.find(" 404 "), std::string::npos);
  const nlohmann::json error =
      nlohmann::json::parse(quoted.substr(quoted.find("\r\n\r\n") + 4), nullptr, false);
  ASSERT_FALSE(error.is_discarded()) << quoted;
  EXPECT_EQ(error["error"]["message"], "not found: GET /a\"b\\c");
  EXPECT_EQ(error["error"]["type"], "invalid_request_error");
  EXPECT_NE(roundtrip("BLAH\r\n\r\n").find(" 400 "), std::string::npos);
  EXPECT_NE(roundtrip("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" +
                      std::string(1000, 'x'))
                .find(" 413 "),
            std::string::npos);
  // The server is still fine.
  EXPECT_NE(roundtrip("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").find(" 200 "), std::string::npos);
}

TEST_F(AsyncHttpServerTest, StreamsChunksWrittenFromAnotherThread) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /stream?4 HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string out = ReadUntil(fd, [](const std::string& s) { return s.find("\r\n0\r\n\r\n") != std::string::npos; });
  close(fd);
  EXPECT_NE(out.find("Transfer-Encoding: chunked"), std::string::npos);
  for (int i = 0; i < 4; ++i) EXPECT_NE(out.find("data: " + std::to_string(i)), std::string::npos);
  EXPECT_NE(out.find("\r\n0\r\n\r\n"), std::string::npos);
}

TEST_F(AsyncHttpServerTest, ClientLeavingMidStreamIsReportedToTheHandler) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /stream?100000 HTTP/1.1\r\nHost: x\r\n\r\n");
  ReadUntil(fd, [](const std::string& s) { return s.find("data: 3") != std::string::npos; });
  close(fd);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (closed_streams_.load() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(closed_streams_.load(), 1);
}

// Many concurrent long streams on two I/O threads: every one completes.
TEST_F(AsyncHttpServerTest, HoldsAThousandConcurrentStreams) {
  rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 8192);
  setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2200) GTEST_SKIP() << "file descriptor limit too low";
  StartServer();
  constexpr int kStreams = 1000;
  std::vector<int> fds;
  for (int i = 0; i < kStreams; ++i) {
    const int fd = Connect(server_->port());
    ASSERT_GE(fd, 0) << i;
    SendAll(fd, "GET /stream?40 HTTP/1.1\r\nHost: x\r\n\r\n");
    fds.push_back(fd);
  }
  int peak = 0;
  int complete = 0;
  std::vector<std::string> buffers(kStreams);
  std::vector<bool> done(kStreams, false);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (complete < kStreams && std::chrono::steady_clock::now() < until) {
    peak = std::max(peak, server_->num_connections());
    std::vector<pollfd> polls;
    for (int i = 0; i < kStreams; ++i) {
      if (!done[i]) polls.push_back({fds[i], POLLIN, 0});
    }
    if (poll(polls.data(), polls.size(), 100) <= 0) continue;
    for (const pollfd& p : polls) {
      if (!(p.revents & (POLLIN | POLLHUP))) continue;
      const int i = static_cast<int>(std::find(fds.begin(), fds.end(), p.fd) - fds.begin());
      char buf[8192];
      const ssize_t n = read(p.fd, buf, sizeof(buf));
      if (n > 0) buffers[i].append(buf, static_cast<size_t>(n));
      if (n <= 0 || buffers[i].find("\r\n0\r\n\r\n") != std::string::npos) {
        done[i] = true;
        ++complete;
      }
    }
  }
  for (int fd : fds) close(fd);
  EXPECT_EQ(complete, kStreams);
  EXPECT_GE(peak, kStreams);
  int full = 0;
  for (const std::string& b : buffers) full += b.find("data: 39") != std::string::npos ? 1 : 0;
  EXPECT_EQ(full, kStreams);
}

}  // namespace
}  // namespace glimpse::server
