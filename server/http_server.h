// A minimal HTTP/1.1 server on POSIX sockets, for `/metrics`, `/health` and the OpenAI
// gateway (SSE streaming). No third-party HTTP library is available offline.
//
// What it does:
//   - Routes by exact (method, path), then by longest path prefix, then a fallback; a path that
//     is registered under other methods only gets 405 (with Allow), an unknown path 404.
//   - Keep-alive (HTTP/1.1 default, HTTP/1.0 with `Connection: keep-alive`) and pipelining;
//     Content-Length and chunked request bodies; `Expect: 100-continue`.
//   - Limits: header bytes (431), body bytes (413, before reading the body), a deadline for the
//     whole header block (408; slowloris protection), for the body, for idle keep-alive
//     connections and for each response write (a client that stops reading).
//   - Responses are complete (HttpResponse, sent with Content-Length) or streamed through
//     HttpResponseWriter (Transfer-Encoding: chunked; close-delimited for HTTP/1.0 clients),
//     which reports a client that went away — what SSE needs.
//   - Malformed input gets 400 (or 501/505) and the connection is closed; it never crashes.
//
// Threads: one acceptor thread plus one thread per connection, at most
// `max_connections` at a time; a connection over the bound gets 503 and is closed. A thread per
// connection keeps handlers plain blocking code (an SSE handler can wait on its request's output
// channel) and is cheap at this server's scale: tens of concurrent clients in front of one
// engine, not tens of thousands.
//
// Paths are matched as sent (no percent-decoding or dot-segment normalisation); the query
// string is split off and left raw.
#ifndef GLIMPSE_SERVER_HTTP_SERVER_H_
#define GLIMPSE_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "server/http_message.h"

namespace glimpse::server {


// Sends the response to one request: either once, complete (Send), or as a stream
// (BeginStream, then Write any number of times, then Finish). Created by the server for each
// request and valid only during the handler call that received it (not owned by the handler).
// If the handler returns without responding, the server sends 500; if it returns mid-stream,
// the server finishes the stream.
//
// Errors: Cancelled when the client has gone away or stopped reading (write failed or timed
// out; stop producing output for this request), Unavailable when the server is shutting down
// (streams only), FailedPrecondition for calls out of order, InvalidArgument for header values
// with CR/LF. After any write error every later call fails too.
//
// Thread-safety: the methods are internally serialized, so a handler may hand the writer to
// another thread (e.g. the engine's output callback), but must not return before that thread
// is done with it.
class HttpResponseWriter {
 public:
  HttpResponseWriter(const HttpResponseWriter&) = delete;
  HttpResponseWriter& operator=(const HttpResponseWriter&) = delete;

  absl::Status Send(const HttpResponse& response);

  // Sends the status line and headers. For SSE pass `Content-Type: text/event-stream` and
  // `Cache-Control: no-cache`.
  absl::Status BeginStream(int status, const HttpHeaders& headers);
  // Sends `data` right away as one chunk (empty data sends nothing).
  absl::Status Write(std::string_view data);
  // Ends the stream (the terminating zero-length chunk).
  absl::Status Finish();

  // True once the client has closed or reset its side of the connection (a half-close counts:
  // HTTP clients do not half-close while waiting for a response). Cheap (a zero-timeout poll);
  // for a handler that waits a long time between writes.
  bool ClientDisconnected() const;

 private:
  friend class HttpServer;
  enum class State { kIdle, kStreaming, kDone, kFailed };

  struct Options {
    int fd = -1;                                  // The connection; not owned.
    int wake_fd = -1;                             // Readable once the server stops; not owned.
    const std::atomic<bool>* stopping = nullptr;  // The server's flag; not owned.
    absl::Duration write_timeout;
    bool http11 = true;
    bool keep_alive = true;  // What the request asked for.
  };
  explicit HttpResponseWriter(const Options& options);

  // Called by the server after the handler returns: sends 500 or finishes the stream if the
  // handler did not. Returns whether the connection may serve another request.
  bool CompleteAfterHandler();

  absl::Status SendHead(int status, const HttpHeaders& headers, bool streaming,
                        size_t content_length, std::string* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SendBytes(std::string_view data, bool abort_on_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kIdle;
  bool chunked_ ABSL_GUARDED_BY(mu_) = false;
  bool keep_alive_ ABSL_GUARDED_BY(mu_) = false;  // Decided when the head is sent.
};

// A complete response for a request.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;
// Responds through the writer (complete or streamed). Handlers run on connection threads,
// several at once, so they must be thread-safe.
using HttpStreamHandler = std::function<void(const HttpRequest&, HttpResponseWriter&)>;

struct HttpServerOptions {
  // Numeric address or host name to bind; "0.0.0.0" or "::" for all interfaces.
  std::string host = "127.0.0.1";
  int port = 0;  // 0: an ephemeral port; see HttpServer::port().
  int max_connections = 64;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  // First byte to end of headers (for a new connection: accept to end of headers).
  absl::Duration header_timeout = absl::Seconds(5);
  absl::Duration body_timeout = absl::Seconds(30);   // End of headers to end of body.
  absl::Duration idle_timeout = absl::Seconds(60);   // Keep-alive wait for the next request.
  absl::Duration write_timeout = absl::Seconds(30);  // Per send, client not reading.
};

// Owns the listening socket, the acceptor thread and the connection threads.
//
// Usage: construct, register handlers, Start(), ..., Shutdown() (or destroy). Registration must
// happen before Start() (the route table is read without locks afterwards). Start/Shutdown may be
// called from any thread but not from a handler.
class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Calls Shutdown().
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Exact method + path. AlreadyExists for a duplicate, FailedPrecondition after Start().
  absl::Status Handle(std::string method, std::string path, HttpHandler handler);
  absl::Status HandleStreaming(std::string method, std::string path, HttpStreamHandler handler);
  // Method + every path starting with `prefix` (the longest matching prefix wins).
  absl::Status HandlePrefix(std::string method, std::string prefix, HttpStreamHandler handler);
  // Any method and path nothing else matched (instead of 404/405).
  absl::Status SetFallback(HttpStreamHandler handler);

  // Binds, listens and starts accepting. Unavailable if the address cannot be bound.
  absl::Status Start();
  // The bound port (the ephemeral one if options.port was 0); 0 before Start().
  int port() const { return port_; }

  // Stops accepting, closes idle and half-read connections, makes stream writes fail with
  // Unavailable, waits for running handlers to return and joins all threads. A complete
  // response already being sent gets up to write_timeout. Idempotent.
  void Shutdown();

 private:
  struct Route {
    std::string method;
    std::string path;
    bool prefix = false;
    HttpStreamHandler handler;
  };
  struct Connection {
    int fd = -1;
    std::string remote_address;
    std::thread thread;
    // Set when the thread is about to exit (then ReapFinishedConnections may join it). Atomic
    // although accessed under mu_: ThreadSanitizer cannot see Debian's uninstrumented absl.
    std::atomic<bool> done{false};
  };

  absl::Status AddRoute(Route route);
  void AcceptLoop();
  void ServeConnection(Connection* connection);
  // Calls the matching handler, or answers 404/405.
  void Dispatch(const HttpRequest& request, HttpResponseWriter& writer) const;
  // Joins and removes connections whose thread has finished.
  void ReapFinishedConnections();

  const HttpServerOptions options_;
  std::vector<Route> routes_;   // Written before Start() only.
  HttpStreamHandler fallback_;  // Written before Start() only.

  std::atomic<bool> started_{false};
  std::atomic<bool> stopping_{false};
  int listen_fd_ = -1;
  int port_ = 0;
  // A pipe written once by Shutdown(): its read end stays readable, waking every poll().
  int wake_read_fd_ = -1;
  int wake_write_fd_ = -1;
  std::thread acceptor_;
  uint64_t num_rejected_ = 0;  // Acceptor thread only.

  absl::Mutex shutdown_mu_;  // Serializes Shutdown() calls.
  absl::Mutex mu_;
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace glimpse::server

#endif  // GLIMPSE_SERVER_HTTP_SERVER_H_
