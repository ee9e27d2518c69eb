#include "server/async_http_server.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <array>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace glimpse::server {
namespace {

// OpenAI's error shape for errors the server itself answers. The message may hold client text
// (a request path), so it is JSON-escaped; ordered_json keeps OpenAI's field order.
std::string ErrorBody(const std::string& message) {
  return nlohmann::ordered_json{{"error",
                                 {{"message", message},
                                  {"type", "invalid_request_error"},
                                  {"param", nullptr},
                                  {"code", nullptr}}}}
      .dump();
}

}  // namespace


namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

namespace {

std::string_view Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

bool IsSafeHeader(const std::string& name, const std::string& value) {
  return name.find_first_of("\r\n:") == std::string::npos &&
         value.find_first_of("\r\n") == std::string::npos;
}

// Status line and headers; the server owns Content-Length, Transfer-Encoding and Connection.
std::string Head(int status, const HttpHeaders& headers, bool keep_alive) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", std::string(Reason(status)), "\r\n");
  for (const auto& [name, value] : headers) {
    if (EqualsIgnoreAsciiCase(name, "Content-Length") ||
        EqualsIgnoreAsciiCase(name, "Transfer-Encoding") ||
        EqualsIgnoreAsciiCase(name, "Connection") || !IsSafeHeader(name, value)) {
      continue;
    }
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  absl::StrAppend(&head, "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n");
  return head;
}

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::nanoseconds(absl::ToInt64Nanoseconds(d));
}

}  // namespace

struct AsyncHttpServer::Impl {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::unordered_set<AsyncHttpSession*> sessions;  // Guarded by mu.
};

// One connection. Lives as long as an operation or a Responder holds it. Everything that
// touches the socket runs on its strand.
class AsyncHttpSession : public std::enable_shared_from_this<AsyncHttpSession> {
 public:
  AsyncHttpSession(tcp::socket socket, AsyncHttpServer& server)
      : stream_(std::move(socket)), server_(server) {
    std::lock_guard<std::mutex> lock(server_.impl_->mu);
    server_.impl_->sessions.insert(this);
    ++server_.num_connections_;
  }
  ~AsyncHttpSession() {
    std::lock_guard<std::mutex> lock(server_.impl_->mu);
    server_.impl_->sessions.erase(this);
    --server_.num_connections_;
  }

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); });
  }
  // Called by Shutdown (which holds a reference) to close the connection on its strand.
  void CloseFromServer() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->Close(); });
  }
  // Responder entry points: hop onto the strand.
  void Post(std::function<void(AsyncHttpSession&)> fn) {
    net::post(stream_.get_executor(), [self = shared_from_this(), fn = std::move(fn)] { fn(*self); });
  }

  void SendResponse(HttpResponse response);
  void BeginStream(int status, HttpHeaders headers);
  void WriteChunk(std::string data);
  void FinishStream();

  class ResponderImpl;

 private:
  void ReadRequest();
  void OnRead(beast::error_code ec);
  void Reject(int status, std::string message);
  void Enqueue(std::string bytes);
  void Flush();
  void OnWrite(beast::error_code ec);
  void WatchForClose();
  void GracefulClose();
  void DrainInput();
  void Close();

  beast::tcp_stream stream_;
  AsyncHttpServer& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<ResponderImpl> responder_;
  std::deque<std::string> queue_;
  std::string writing_buffer_;
  bool writing_ = false;
  bool keep_alive_ = false;
  bool response_started_ = false;
  bool response_done_ = false;
  bool closed_ = false;
  bool first_request_ = true;
  std::array<char, 4096> drain_buffer_;
};

// Holds its session alive (a strong reference) until the response ended or the connection
// closed, so a handler may answer long after the read that produced the request finished;
// then it lets go, breaking the session <-> responder cycle.
class AsyncHttpSession::ResponderImpl : public Responder {
 public:
  explicit ResponderImpl(std::shared_ptr<AsyncHttpSession> session) : session_(std::move(session)) {}

  void Send(HttpResponse response) override {
    if (auto s = Live()) s->Post([r = std::move(response)](AsyncHttpSession& x) mutable { x.SendResponse(std::move(r)); });
  }
  void BeginStream(int status, HttpHeaders headers) override {
    if (auto s = Live()) {
      s->Post([status, h = std::move(headers)](AsyncHttpSession& x) mutable { x.BeginStream(status, std::move(h)); });
    }
  }
  void Write(std::string data) override {
    if (auto s = Live()) s->Post([d = std::move(data)](AsyncHttpSession& x) mutable { x.WriteChunk(std::move(d)); });
  }
  void Finish() override {
    if (auto s = Live()) s->Post([](AsyncHttpSession& x) { x.FinishStream(); });
  }
  bool closed() const override { return closed_.load(); }
  void OnClose(std::function<void()> callback) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_.load()) {
      lock.unlock();
      callback();
      return;
    }
    on_close_ = std::move(callback);
  }

  // Session side (strand): the connection ended before the response did.
  void MarkClosed() {
    std::function<void()> callback;
    std::shared_ptr<AsyncHttpSession> release;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_.exchange(true)) return;
      callback = std::move(on_close_);
      release = std::move(session_);
    }
    if (callback) callback();
  }
  // Session side (strand): the response is complete; later calls are ignored.
  void MarkDone() {
    std::shared_ptr<AsyncHttpSession> release;
    std::lock_guard<std::mutex> lock(mu_);
    done_.store(true);
    release = std::move(session_);
  }

 private:
  std::shared_ptr<AsyncHttpSession> Live() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_.load() || done_.load()) return nullptr;
    return session_;
  }
  std::atomic<bool> closed_{false};
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::shared_ptr<AsyncHttpSession> session_;  // Guarded by mu_; null once done or closed.
  std::function<void()> on_close_;
};

void AsyncHttpSession::ReadRequest() {
  if (closed_) return;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(server_.options_.max_header_bytes));
  parser_->body_limit(server_.options_.max_body_bytes);
  stream_.expires_after(ToChrono(first_request_ ? server_.options_.header_timeout
                                                : server_.options_.idle_timeout));
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
}

void AsyncHttpSession::OnRead(beast::error_code ec) {
  first_request_ = false;
  if (ec == http::error::body_limit) return Reject(413, "request body too large");
  if (ec == http::error::header_limit) return Reject(431, "request headers too large");
  if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
      ec == net::error::operation_aborted || ec == net::error::connection_reset || ec == net::error::eof) {
    return Close();
  }
  if (ec) return Reject(400, absl::StrCat("malformed HTTP request: ", ec.message()));
  stream_.expires_never();
  http::request<http::string_body> msg = parser_->release();
  HttpRequest request;
  request.method = std::string(msg.method_string());
  const std::string target(msg.target());
  const size_t q = target.find('?');
  request.path = target.substr(0, q);
  if (q != std::string::npos) request.query = target.substr(q + 1);
  request.version = msg.version() == 10 ? "HTTP/1.0" : "HTTP/1.1";
  for (const auto& field : msg) {
    request.headers.Add(std::string(field.name_string()), std::string(field.value()));
  }
  request.body = std::move(msg.body());
  beast::error_code ignored;
  const auto endpoint = stream_.socket().remote_endpoint(ignored);
  if (!ignored) request.remote_address = absl::StrCat(endpoint.address().to_string(), ":", endpoint.port());
  keep_alive_ = msg.keep_alive() && !server_.impl_->stopping.load();
  response_started_ = false;
  response_done_ = false;
  responder_ = std::make_shared<ResponderImpl>(shared_from_this());
  // A client that leaves while its request is handled (or streamed) is noticed at once.
  WatchForClose();
  server_.Dispatch(std::move(request), responder_);
}

void AsyncHttpSession::Reject(int status, std::string message) {
  keep_alive_ = false;
  HttpResponse response;
  response.status = status;
  response.headers.Add("Content-Type", "application/json");
  response.body = ErrorBody(message);
  responder_ = std::make_shared<ResponderImpl>(shared_from_this());
  SendResponse(std::move(response));
}

void AsyncHttpSession::SendResponse(HttpResponse response) {
  if (closed_ || response_started_) return;
  response_started_ = true;
  response_done_ = true;
  if (responder_) responder_->MarkDone();
  std::string bytes = Head(response.status, response.headers, keep_alive_);
  absl::StrAppend(&bytes, "Content-Length: ", response.body.size(), "\r\n\r\n", response.body);
  Enqueue(std::move(bytes));
}

void AsyncHttpSession::BeginStream(int status, HttpHeaders headers) {
  if (closed_ || response_started_) return;
  response_started_ = true;
  std::string bytes = Head(status, headers, keep_alive_);
  bytes += "Transfer-Encoding: chunked\r\n\r\n";
  Enqueue(std::move(bytes));
}

void AsyncHttpSession::WriteChunk(std::string data) {
  if (closed_ || !response_started_ || response_done_ || data.empty()) return;
  Enqueue(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"));
}

void AsyncHttpSession::FinishStream() {
  if (closed_ || !response_started_ || response_done_) return;
  response_done_ = true;
  if (responder_) responder_->MarkDone();
  Enqueue("0\r\n\r\n");
}

void AsyncHttpSession::Enqueue(std::string bytes) {
  queue_.push_back(std::move(bytes));
  Flush();
}

void AsyncHttpSession::Flush() {
  if (writing_ || queue_.empty() || closed_) return;
  writing_buffer_.clear();
  while (!queue_.empty()) {
    writing_buffer_ += queue_.front();
    queue_.pop_front();
  }
  writing_ = true;
  net::async_write(stream_, net::buffer(writing_buffer_),
                   [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnWrite(ec); });
}

void AsyncHttpSession::OnWrite(beast::error_code ec) {
  writing_ = false;
  if (ec) return Close();
  if (!queue_.empty()) return Flush();
  if (!response_done_) return;
  if (keep_alive_ && !server_.impl_->stopping.load()) {
    ReadRequest();
  } else {
    GracefulClose();
  }
}

// Ends the connection after a response without keep-alive: stop sending, then read and
// discard what the client still sends (for up to a second) before closing, so that a client
// still writing (an oversized body, say) gets to read our answer instead of a reset.
void AsyncHttpSession::GracefulClose() {
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream_.expires_after(std::chrono::seconds(1));
  DrainInput();
}

void AsyncHttpSession::DrainInput() {
  stream_.async_read_some(net::buffer(drain_buffer_),
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (ec) return self->Close();
                            self->DrainInput();
                          });
}

// While streaming, a readable socket that holds no data means the client hung up.
void AsyncHttpSession::WatchForClose() {
  stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
    if (ec || self->closed_ || self->response_done_) return;
    char byte;
    const ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) self->Close();
    // n > 0: a pipelined request; it is read after this response.
  });
}

void AsyncHttpSession::Close() {
  if (closed_) return;
  closed_ = true;
  beast::error_code ignored;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
  if (responder_ && !response_done_) responder_->MarkClosed();
  responder_.reset();
}

AsyncHttpServer::AsyncHttpServer(AsyncHttpServerOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

AsyncHttpServer::~AsyncHttpServer() { Shutdown(); }

void AsyncHttpServer::Handle(std::string method, std::string path, AsyncHttpHandler handler) {
  paths_.insert(path);
  routes_[{std::move(method), std::move(path)}] = std::move(handler);
}

void AsyncHttpServer::Dispatch(HttpRequest request, std::shared_ptr<Responder> responder) const {
  auto it = routes_.find({request.method, request.path});
  if (it != routes_.end()) return it->second(std::move(request), std::move(responder));
  HttpResponse response;
  const bool known_path = paths_.contains(request.path);
  response.status = known_path ? 405 : 404;
  response.headers.Add("Content-Type", "application/json");
  response.body = ErrorBody(absl::StrCat(known_path ? "method not allowed" : "not found", ": ",
                                         request.method, " ", request.path));
  responder->Send(std::move(response));
}

namespace {

void Accept(AsyncHttpServer* server, tcp::acceptor& acceptor, std::atomic<bool>& stopping,
            const std::function<void(tcp::socket)>& on_socket) {
  acceptor.async_accept(net::make_strand(acceptor.get_executor()),
                        [server, &acceptor, &stopping, on_socket](beast::error_code ec, tcp::socket socket) {
                          if (stopping.load()) return;
                          if (!ec) on_socket(std::move(socket));
                          Accept(server, acceptor, stopping, on_socket);
                        });
}

}  // namespace

absl::Status AsyncHttpServer::Start() {
  beast::error_code ec;
  const auto address = net::ip::make_address(options_.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad listen address '", options_.host, "'"));
  tcp::endpoint endpoint(address, static_cast<unsigned short>(options_.port));
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.host, ":", options_.port,
                                               ": ", ec.message()));
  }
  port_ = impl_->acceptor.local_endpoint().port();
  Accept(this, impl_->acceptor, impl_->stopping, [this](tcp::socket socket) {
    if (num_connections_.load() >= options_.max_connections) {
      // Over the cap: a short 503 and close, written synchronously (tiny, non-blocking enough).
      static constexpr char kBusy[] =
          "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      beast::error_code ignored;
      net::write(socket, net::buffer(kBusy, sizeof(kBusy) - 1), ignored);
      socket.close(ignored);
      return;
    }
    std::make_shared<AsyncHttpSession>(std::move(socket), *this)->Start();
  });
  impl_->work.emplace(impl_->ioc.get_executor());
  for (int i = 0; i < std::max(1, options_.num_threads); ++i) {
    threads_.emplace_back([this] { impl_->ioc.run(); });
  }
  started_ = true;
  return absl::OkStatus();
}

void AsyncHttpServer::Shutdown() {
  if (!started_) return;
  started_ = false;
  impl_->stopping.store(true);
  net::post(impl_->ioc, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  // Take references under the lock, but close (and drop them) outside it: a session's
  // destructor takes the same lock, and the last reference may be the one dropped here.
  std::vector<std::shared_ptr<AsyncHttpSession>> live;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (AsyncHttpSession* s : impl_->sessions) {
      // A session whose last owner is gone (its destructor waits for this lock) is skipped.
      if (std::shared_ptr<AsyncHttpSession> p = s->weak_from_this().lock()) live.push_back(std::move(p));
    }
  }
  for (const auto& session : live) session->CloseFromServer();
  live.clear();
  impl_->work.reset();
  // Sessions close on their strands; give them a moment, then stop whatever is left.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (num_connections_.load() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->ioc.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace glimpse::server
