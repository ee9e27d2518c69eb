#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glimpse::server {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---- A raw-socket HTTP client, deliberately independent of the server's parser ---------------

// A loopback TCP connection with a 5 s receive timeout (a hung test fails instead of hanging).
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv = {5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() { Close(); }

  bool connected() const { return connected_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool Send(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads more bytes into buf_; false on EOF, error or timeout.
  bool Fill() {
    char chunk[4096];
    const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  // A line without its CRLF, or nullopt at EOF.
  std::optional<std::string> ReadLine() {
    size_t eol;
    while ((eol = buf_.find("\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    std::string line = buf_.substr(0, eol);
    buf_.erase(0, eol + 2);
    return line;
  }

  std::optional<std::string> ReadExactly(size_t n) {
    while (buf_.size() < n) {
      if (!Fill()) return std::nullopt;
    }
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }

  struct Response {
    int status = 0;
    std::map<std::string, std::string> headers;  // Lower-case names.
    std::string body;
    std::vector<std::string> chunks;  // For chunked responses.
  };

  // Status line and headers only.
  std::optional<Response> ReadHead() {
    std::optional<std::string> status_line = ReadLine();
    if (!status_line || !status_line->starts_with("HTTP/1.1 ")) return std::nullopt;
    Response r;
    r.status = std::stoi(status_line->substr(9, 3));
    for (;;) {
      std::optional<std::string> line = ReadLine();
      if (!line) return std::nullopt;
      if (line->empty()) break;
      const size_t colon = line->find(':');
      if (colon == std::string::npos) return std::nullopt;
      std::string name = line->substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = line->substr(line->find_first_not_of(' ', colon + 1));
    }
    return r;
  }

  // One whole response: Content-Length, chunked, or (neither) up to EOF.
  std::optional<Response> ReadResponse() {
    std::optional<Response> r = ReadHead();
    if (!r) return std::nullopt;
    if (r->headers.count("transfer-encoding")) {
      for (;;) {
        std::optional<std::string> size_line = ReadLine();
        if (!size_line) return std::nullopt;
        const size_t size = std::stoul(*size_line, nullptr, 16);
        if (size == 0) {
          if (ReadLine() != std::string()) return std::nullopt;  // Trailer-less end.
          break;
        }
        std::optional<std::string> data = ReadExactly(size + 2);
        if (!data || !data->ends_with("\r\n")) return std::nullopt;
        r->chunks.push_back(data->substr(0, size));
        r->body += r->chunks.back();
      }
    } else if (r->headers.count("content-length")) {
      std::optional<std::string> body = ReadExactly(std::stoul(r->headers["content-length"]));
      if (!body) return std::nullopt;
      r->body = *body;
    } else {
      while (Fill()) {
      }
      r->body = buf_;
      buf_.clear();
    }
    return r;
  }

  // True if the server closed the connection (EOF) with nothing more to read.
  bool AtEof() { return buf_.empty() && !Fill(); }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string Get(const std::string& path, const std::string& extra_headers = "") {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n", extra_headers, "\r\n");
}

HttpServerOptions LoopbackOptions() {
  HttpServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  return options;
}

class HttpServerTest : public ::testing::Test {
 protected:
  // Registers the common routes and starts the server.
  void StartServer(HttpServerOptions options = LoopbackOptions()) {
    server_ = std::make_unique<HttpServer>(options);
    ASSERT_TRUE(server_
                    ->Handle("GET", "/hello",
                             [this](const HttpRequest&) {
                               ++hello_calls_;
                               return HttpResponse::Text(200, "hello");
                             })
                    .ok());
    ASSERT_TRUE(
        server_
            ->Handle("POST", "/echo",
                     [](const HttpRequest& request) {
                       HttpResponse r = HttpResponse::Text(
                           200,
                           absl::StrCat(request.method, " ", request.path, "?", request.query, " [",
                                        std::string(request.headers.Get("x-test").value_or("-")),
                                        "] ", request.body));
                       r.headers.Add("X-Body-Size", std::to_string(request.body.size()));
                       return r;
                     })
            .ok());
    for (auto& [method, path, handler] : extra_streaming_routes_) {
      ASSERT_TRUE(server_->HandleStreaming(method, path, handler).ok());
    }
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  void AddStreamingRoute(std::string method, std::string path, HttpStreamHandler handler) {
    extra_streaming_routes_.push_back({std::move(method), std::move(path), std::move(handler)});
  }

  std::unique_ptr<HttpServer> server_;
  std::atomic<int> hello_calls_{0};
  struct StreamingRoute {
    std::string method;
    std::string path;
    HttpStreamHandler handler;
  };
  std::vector<StreamingRoute> extra_streaming_routes_;
};

TEST_F(HttpServerTest, GetTwiceOnOneKeepAliveConnection) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client.Send(Get("/hello")));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value()) << "request " << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello");
    EXPECT_EQ(r->headers.count("connection"), 0u);  // Keep-alive is HTTP/1.1's default.
    EXPECT_EQ(r->headers["content-type"], "text/plain; charset=utf-8");
  }
  EXPECT_EQ(hello_calls_.load(), 2);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/hello") + Get("/nope") + Get("/hello")));
  EXPECT_EQ(client.ReadResponse()->status, 200);
  EXPECT_EQ(client.ReadResponse()->status, 404);
  EXPECT_EQ(client.ReadResponse()->status, 200);
}

TEST_F(HttpServerTest, PostBodyQueryAndCaseInsensitiveHeadersReachTheHandler) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(
      "POST /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-TEST:  value \r\nContent-Length: 11\r\n\r\n"
      "hello world"));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "POST /echo?a=1&b=2 [value] hello world");
  EXPECT_EQ(r->headers["x-body-size"], "11");
}

TEST_F(HttpServerTest, ChunkedRequestBodyIsDecoded) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(
      client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "POST /echo? [-] hello world");
  // The connection stays usable.
  ASSERT_TRUE(client.Send(Get("/hello")));
  EXPECT_EQ(client.ReadResponse()->status, 200);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  EXPECT_EQ(client.ReadLine(), "HTTP/1.1 100 Continue");
  EXPECT_EQ(client.ReadLine(), "");
  ASSERT_TRUE(client.Send("abc"));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "POST /echo? [-] abc");
}

TEST_F(HttpServerTest, MalformedRequestLineGets400AndClose) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send("THIS IS NOT HTTP\r\n\r\n"));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->headers["connection"], "close");
  EXPECT_TRUE(client.AtEof());
}

TEST_F(HttpServerTest, OversizedBodyGets413) {
  HttpServerOptions options = LoopbackOptions();
  options.max_body_bytes = 1024;
  StartServer(options);
  {
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send(absl::StrCat("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000",
                                         "\r\n\r\n", std::string(2000, 'x'))));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(client.AtEof());
  }
  {
    // A chunked body is cut off once it passes the limit.
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send(
        absl::StrCat("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                     "400\r\n", std::string(1024, 'x'), "\r\n1\r\ny\r\n0\r\n\r\n")));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 413);
  }
  {
    // Exactly at the limit is fine.
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send(absl::StrCat("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024",
                                         "\r\n\r\n", std::string(1024, 'x'))));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->headers["x-body-size"], "1024");
  }
}

TEST_F(HttpServerTest, OversizedHeadersGet431) {
  HttpServerOptions options = LoopbackOptions();
  options.max_header_bytes = 512;
  StartServer(options);
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/hello", absl::StrCat("X-Big: ", std::string(1000, 'a'), "\r\n"))));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 431);
}

TEST_F(HttpServerTest, UnknownPathGets404AndWrongMethodGets405) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/missing")));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);
  // Not an error the connection has to die for.
  ASSERT_TRUE(client.Send(Get("/echo")));
  r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->headers["allow"], "POST");
}

TEST_F(HttpServerTest, LongestPrefixThenFallback) {
  HttpServer server(LoopbackOptions());
  auto reply = [](std::string text) {
    return [text](const HttpRequest& request, HttpResponseWriter& writer) {
      (void)writer.Send(HttpResponse::Text(200, text + " " + request.path));
    };
  };
  ASSERT_TRUE(server.HandlePrefix("GET", "/v1/", reply("v1")).ok());
  ASSERT_TRUE(server.HandlePrefix("GET", "/v1/models/", reply("models")).ok());
  ASSERT_TRUE(server.SetFallback(reply("fallback")).ok());
  ASSERT_TRUE(server.Start().ok());
  RawClient client(server.port());
  ASSERT_TRUE(client.Send(Get("/v1/models/tiny") + Get("/v1/x") + Get("/other")));
  EXPECT_EQ(client.ReadResponse()->body, "models /v1/models/tiny");
  EXPECT_EQ(client.ReadResponse()->body, "v1 /v1/x");
  EXPECT_EQ(client.ReadResponse()->body, "fallback /other");
}

TEST_F(HttpServerTest, RegistrationErrors) {
  HttpServer server(LoopbackOptions());
  auto ok = [](const HttpRequest&) { return HttpResponse(); };
  ASSERT_TRUE(server.Handle("GET", "/a", ok).ok());
  EXPECT_EQ(server.Handle("GET", "/a", ok).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(server.Handle("GET", "no-slash", ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.Handle("BAD METHOD", "/b", ok).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(server.Handle("GET", "/c", ok).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(HttpServerTest, StartFailsWhenPortIsTaken) {
  StartServer();
  HttpServerOptions options = LoopbackOptions();
  options.port = server_->port();
  HttpServer second(options);
  absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("choose another port"));
}

TEST_F(HttpServerTest, StreamingResponseIsChunkedAndConnectionStaysUsable) {
  AddStreamingRoute("GET", "/stream", [](const HttpRequest&, HttpResponseWriter& writer) {
    HttpHeaders headers;
    headers.Add("Content-Type", "text/event-stream");
    headers.Add("Cache-Control", "no-cache");
    ASSERT_TRUE(writer.BeginStream(200, headers).ok());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(writer.Write(absl::StrCat("data: {\"i\":", i, "}\n\n")).ok());
    }
    ASSERT_TRUE(writer.Write("").ok());  // Sends nothing; must not end the stream.
    ASSERT_TRUE(writer.Write("data: [DONE]\n\n").ok());
    ASSERT_TRUE(writer.Finish().ok());
    EXPECT_EQ(writer.Send(HttpResponse()).code(), absl::StatusCode::kFailedPrecondition);
  });
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream")));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["transfer-encoding"], "chunked");
  EXPECT_EQ(r->headers["content-type"], "text/event-stream");
  EXPECT_EQ(r->headers.count("content-length"), 0u);
  ASSERT_EQ(r->chunks.size(), 4u);
  EXPECT_EQ(r->chunks[0], "data: {\"i\":0}\n\n");
  EXPECT_EQ(r->chunks[3], "data: [DONE]\n\n");
  ASSERT_TRUE(client.Send(Get("/hello")));
  EXPECT_EQ(client.ReadResponse()->body, "hello");
}

TEST_F(HttpServerTest, StreamToHttp10ClientIsCloseDelimited) {
  AddStreamingRoute("GET", "/stream", [](const HttpRequest&, HttpResponseWriter& writer) {
    ASSERT_TRUE(writer.BeginStream(200, HttpHeaders()).ok());
    ASSERT_TRUE(writer.Write("one,").ok());
    ASSERT_TRUE(writer.Write("two").ok());
    // Returning without Finish(): the server finishes the stream.
  });
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send("GET /stream HTTP/1.0\r\n\r\n"));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->headers.count("transfer-encoding"), 0u);
  EXPECT_EQ(r->headers["connection"], "close");
  EXPECT_EQ(r->body, "one,two");
}

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAliveRequested) {
  StartServer();
  {
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send("GET /hello HTTP/1.0\r\n\r\n"));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->headers["connection"], "close");
    EXPECT_TRUE(client.AtEof());
  }
  {
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->headers["connection"], "keep-alive");
    ASSERT_TRUE(client.Send(Get("/hello", "Connection: close\r\n")));
    r = client.ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->headers["connection"], "close");
    EXPECT_TRUE(client.AtEof());
  }
}

TEST_F(HttpServerTest, ClientDisconnectMidStreamMakesWriterFail) {
  std::promise<absl::Status> write_status;
  std::promise<bool> saw_disconnect;
  AddStreamingRoute("GET", "/stream", [&](const HttpRequest&, HttpResponseWriter& writer) {
    ASSERT_TRUE(writer.BeginStream(200, HttpHeaders()).ok());
    absl::Status status;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (status.ok() && std::chrono::steady_clock::now() < give_up) {
      status = writer.Write("data: tick\n\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    saw_disconnect.set_value(writer.ClientDisconnected());
    write_status.set_value(status);
  });
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream")));
  ASSERT_TRUE(client.ReadHead().has_value());
  client.Close();
  std::future<absl::Status> status = write_status.get_future();
  ASSERT_EQ(status.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(status.get().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(saw_disconnect.get_future().get());
}

TEST_F(HttpServerTest, HandlerThatSendsNothingGets500) {
  AddStreamingRoute("GET", "/silent", [](const HttpRequest&, HttpResponseWriter&) {});
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/silent")));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 500);
}

TEST_F(HttpServerTest, HeaderInjectionIsRefused) {
  AddStreamingRoute("GET", "/inject", [](const HttpRequest&, HttpResponseWriter& writer) {
    HttpResponse response = HttpResponse::Text(200, "x");
    response.headers.Add("X-Evil", "a\r\nSet-Cookie: b");
    EXPECT_EQ(writer.Send(response).code(), absl::StatusCode::kInvalidArgument);
  });
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/inject")));
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->headers.count("set-cookie"), 0u);
}

TEST_F(HttpServerTest, SlowHeadersGet408) {
  HttpServerOptions options = LoopbackOptions();
  options.header_timeout = absl::Milliseconds(200);
  StartServer(options);
  RawClient client(server_->port());
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(client.Send("GET /hello HTTP/1.1\r\nHost: x\r\n"));  // No blank line, ever.
  std::optional<RawClient::Response> r = client.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 408);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(HttpServerTest, SilentNewConnectionIsClosedAfterHeaderTimeout) {
  HttpServerOptions options = LoopbackOptions();
  options.header_timeout = absl::Milliseconds(200);
  StartServer(options);
  RawClient client(server_->port());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(client.AtEof());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosedAfterIdleTimeout) {
  HttpServerOptions options = LoopbackOptions();
  options.idle_timeout = absl::Milliseconds(100);
  StartServer(options);
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/hello")));
  ASSERT_TRUE(client.ReadResponse().has_value());
  EXPECT_TRUE(client.AtEof());
}

TEST_F(HttpServerTest, ConnectionsOverTheBoundGet503) {
  HttpServerOptions options = LoopbackOptions();
  options.max_connections = 2;
  StartServer(options);
  RawClient a(server_->port());
  RawClient b(server_->port());
  // A served request proves each connection was accepted and counted.
  for (RawClient* c : {&a, &b}) {
    ASSERT_TRUE(c->Send(Get("/hello")));
    ASSERT_EQ(c->ReadResponse()->status, 200);
  }
  RawClient c(server_->port());
  std::optional<RawClient::Response> r = c.ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->headers["retry-after"], "1");
  // Once one closes, a new connection is served again.
  a.Close();
  bool served = false;
  for (int attempt = 0; attempt < 50 && !served; ++attempt) {
    RawClient d(server_->port());
    d.Send(Get("/hello"));
    std::optional<RawClient::Response> rd = d.ReadResponse();
    served = rd.has_value() && rd->status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
}

TEST_F(HttpServerTest, GarbageInputNeverCrashesTheServer) {
  StartServer();
  const std::vector<std::pair<std::string, int>> cases = {
      {"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nX: a\x01"
       "b\r\n\r\n",
       400},
      {std::string("GET /\0 HTTP/1.1\r\n\r\n", 20), 400},
      {"GET relative HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\n\r\n", 505},
      {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
      {"GET / HTTP/1.1 extra\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
      {"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n", 400},
      {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15), 400},  // TLS.
  };
  for (const auto& [request, status] : cases) {
    RawClient client(server_->port());
    ASSERT_TRUE(client.Send(request));
    std::optional<RawClient::Response> r = client.ReadResponse();
    ASSERT_TRUE(r.has_value()) << testing::PrintToString(request);
    EXPECT_EQ(r->status, status) << testing::PrintToString(request);
  }
  // Deterministic pseudo-random bytes, closed abruptly.
  uint32_t seed = 12345;
  for (int i = 0; i < 20; ++i) {
    RawClient client(server_->port());
    std::string junk;
    for (int j = 0; j < 300; ++j) {
      seed = seed * 1103515245 + 12345;
      junk.push_back(static_cast<char>(seed >> 24));
    }
    client.Send(junk);
  }
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/hello")));
  EXPECT_EQ(client.ReadResponse()->status, 200);
}

TEST_F(HttpServerTest, ShutdownWithIdleClientReturnsPromptly) {
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/hello")));
  ASSERT_TRUE(client.ReadResponse().has_value());
  RawClient half_sent(server_->port());
  ASSERT_TRUE(half_sent.Send("GET /hello HTTP/1.1\r\n"));
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_TRUE(client.AtEof());
  server_->Shutdown();  // Idempotent.
  RawClient late(server_->port());
  EXPECT_FALSE(late.connected());
}

TEST_F(HttpServerTest, ShutdownEndsARunningStream) {
  std::promise<void> streaming;
  std::promise<absl::Status> write_status;
  AddStreamingRoute("GET", "/stream", [&](const HttpRequest&, HttpResponseWriter& writer) {
    ASSERT_TRUE(writer.BeginStream(200, HttpHeaders()).ok());
    streaming.set_value();
    absl::Status status;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (status.ok() && std::chrono::steady_clock::now() < give_up) {
      status = writer.Write("data: tick\n\n");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    write_status.set_value(status);
  });
  StartServer();
  RawClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream")));
  streaming.get_future().wait();
  const auto start = std::chrono::steady_clock::now();
  server_->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(write_status.get_future().get().code(), absl::StatusCode::kUnavailable);
}

TEST(HttpHeadersTest, LookupIsCaseInsensitiveAndSetReplaces) {
  HttpHeaders headers;
  headers.Add("Content-Type", "a");
  headers.Add("X-Multi", "1");
  headers.Add("x-multi", "2");
  EXPECT_EQ(headers.Get("content-type"), "a");
  EXPECT_EQ(headers.Get("X-MULTI"), "1");
  EXPECT_FALSE(headers.Get("missing").has_value());
  headers.Set("X-MULTI", "3");
  EXPECT_EQ(headers.size(), 2u);
  EXPECT_EQ(headers.Get("x-multi"), "3");
  headers.Remove("CONTENT-TYPE");
  EXPECT_FALSE(headers.Has("Content-Type"));
}

}  // namespace
}  // namespace glimpse::server
