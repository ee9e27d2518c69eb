// An asynchronous HTTP/1.1 server on Boost.Beast over Asio, for the OpenAI gateway: a few I/O
// threads hold thousands of connections, including long-lived streamed (chunked, SSE)
// responses, which a thread-per-connection server cannot.
//
// A handler is called on an I/O thread with the parsed request and a Responder. It must not
// block: it either answers at once (Responder::Send) or keeps the Responder and answers
// later, from any thread — typically it starts a gRPC call whose callbacks stream chunks
// through Responder::Write. The Responder tells the handler when the client goes away
// (OnClose), so that it can cancel its upstream work.
//
// Limits: header and body sizes (431/413), a header-read timeout, an idle keep-alive timeout,
// and a connection cap (503 beyond it). Malformed requests get 400 and a closed connection.
//
// Thread-safety: Handle before Start; Responder methods from any thread.
#ifndef GLIMPSE_SERVER_ASYNC_HTTP_SERVER_H_
#define GLIMPSE_SERVER_ASYNC_HTTP_SERVER_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/http_message.h"

namespace glimpse::server {

class AsyncHttpSession;

// Answers one request. Thread-safe; every method may be called from any thread, and calls
// after the response ended (or the client left) are ignored.
class Responder {
 public:
  virtual ~Responder() = default;
  // A complete response (Content-Length framing).
  virtual void Send(HttpResponse response) = 0;
  // Starts a chunked response; then Write any number of times, then Finish.
  virtual void BeginStream(int status, HttpHeaders headers) = 0;
  virtual void Write(std::string data) = 0;
  virtual void Finish() = 0;
  // True once the client disconnected, a write failed, or the server is stopping.
  virtual bool closed() const = 0;
  // Called once (on an I/O thread) when the connection closes before the response ended.
  // If it already has, the callback runs at once on the caller's thread.
  virtual void OnClose(std::function<void()> callback) = 0;
};

using AsyncHttpHandler = std::function<void(HttpRequest request, std::shared_ptr<Responder>)>;

struct AsyncHttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: an ephemeral port (see port()).
  int num_threads = 2;
  int max_connections = 10000;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  absl::Duration header_timeout = absl::Seconds(10);
  absl::Duration idle_timeout = absl::Seconds(60);
};

class AsyncHttpServer {
 public:
  explicit AsyncHttpServer(AsyncHttpServerOptions options);
  ~AsyncHttpServer();  // Shutdown()s.
  AsyncHttpServer(const AsyncHttpServer&) = delete;
  AsyncHttpServer& operator=(const AsyncHttpServer&) = delete;

  // Routes by method and exact path; anything else gets 405 (a routed path) or 404.
  void Handle(std::string method, std::string path, AsyncHttpHandler handler);

  absl::Status Start();
  int port() const { return port_; }
  int num_connections() const { return num_connections_.load(); }
  // Stops accepting, closes every connection (open streams end; their OnClose callbacks run)
  // and joins the I/O threads.
  void Shutdown();

 private:
  friend class AsyncHttpSession;
  struct Impl;
  void Dispatch(HttpRequest request, std::shared_ptr<Responder> responder) const;

  AsyncHttpServerOptions options_;
  std::map<std::pair<std::string, std::string>, AsyncHttpHandler> routes_;
  std::set<std::string> paths_;  // Every routed path, to tell 405 from 404.
  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  std::atomic<int> num_connections_{0};
  int port_ = 0;
  bool started_ = false;
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_ASYNC_HTTP_SERVER_H_
