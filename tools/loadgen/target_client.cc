#include "tools/loadgen/target_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "tools/loadgen/sse_parser.h"

namespace glimpse::tools::loadgen {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A connected TCP socket whose reads and writes give up after `io_timeout_s` (so a silent
// server cannot hang a client thread past its request deadline); -1 when it cannot connect.
int ConnectTcp(const std::string& host, int port, double io_timeout_s, std::string* error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* address = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &address) != 0) {
    *error = "dns";
    return -1;
  }
  const int fd = socket(address->ai_family, SOCK_STREAM, 0);
  if (fd >= 0) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(io_timeout_s);
    tv.tv_usec = static_cast<suseconds_t>((io_timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));  // Also bounds connect().
  }
  const bool connected = fd >= 0 && connect(fd, address->ai_addr, address->ai_addrlen) == 0;
  freeaddrinfo(address);
  if (!connected) {
    if (fd >= 0) close(fd);
    *error = "connect";
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// True if `choice` of a streamed chunk carries generated text (completions: "text"; chat:
// "delta.content"). Role-only and empty deltas are not tokens.
bool ChoiceHasText(const nlohmann::json& choice) {
  if (choice.contains("text") && choice["text"].is_string()) {
    return !choice["text"].get_ref<const std::string&>().empty();
  }
  if (choice.contains("delta") && choice["delta"].is_object()) {
    const nlohmann::json& delta = choice["delta"];
    if (delta.contains("content") && delta["content"].is_string()) {
      return !delta["content"].get_ref<const std::string&>().empty();
    }
  }
  return false;
}

// The error message of a non-200 response whose first body bytes are `body`: OpenAI's
// {"error": {"message": ...}} when it is one, else the body's first 200 bytes.
std::string ReadErrorBody(int fd, HttpResponseReader& http, std::string body) {
  char buf[4096];
  ssize_t n;
  while (body.size() < 16384 && (n = read(fd, buf, sizeof(buf))) > 0) {
    absl::StatusOr<std::string> more = http.Feed(std::string_view(buf, static_cast<size_t>(n)));
    if (!more.ok()) break;
    body += *more;
  }
  nlohmann::json error = nlohmann::json::parse(body, nullptr, false);
  if (!error.is_discarded() && error.contains("error") && error["error"].is_object() &&
      error["error"].contains("message") && error["error"]["message"].is_string()) {
    return error["error"]["message"].get<std::string>();
  }
  return body.substr(0, 200);
}

}  // namespace

std::string Target::ToString() const {
  return grpc ? absl::StrCat("grpc://", host, ":", port)
              : absl::StrCat("http://", host, ":", port, path_prefix);
}

absl::StatusOr<Target> ParseTargetUrl(const std::string& url) {
  Target t;
  std::string rest;
  if (url.rfind("grpc://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("http://", 0) == 0) {
    t.grpc = false;
    rest = url.substr(7);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--url: '", url, "' must start with grpc:// or http:// (https is not supported)"));
  }
  const size_t slash = rest.find('/');
  const std::string host_port = rest.substr(0, slash);
  t.path_prefix = slash == std::string::npos ? "/v1" : rest.substr(slash);
  while (t.path_prefix.size() > 1 && t.path_prefix.back() == '/') t.path_prefix.pop_back();
  if (t.path_prefix == "/") t.path_prefix.clear();
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), &t.port) || t.port <= 0 || t.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--url: '", url, "' needs HOST:PORT"));
  }
  t.host = host_port.substr(0, colon);
  if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') {
    t.host = t.host.substr(1, t.host.size() - 2);
  }
  return t;
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

struct TargetClient::GrpcState {
  std::unique_ptr<glimpse::v1::Engine::Stub> stub;
};

TargetClient::TargetClient(Target target, SendOptions options)
    : target_(std::move(target)), options_(std::move(options)) {}

TargetClient::~TargetClient() = default;

absl::StatusOr<std::unique_ptr<TargetClient>> TargetClient::Connect(const Target& target,
                                                                    const SendOptions& options) {
  if (target.grpc && options.endpoint == Endpoint::kChat) {
    return absl::InvalidArgumentError(
        "--endpoint=chat needs an http:// target (glimpse's gRPC API takes text or token ids; "
        "point --url at the OpenAI gateway, e.g. http://127.0.0.1:8080/v1)");
  }
  std::unique_ptr<TargetClient> client(new TargetClient(target, options));
  if (target.grpc) {
    // One channel (one HTTP/2 connection) for all client threads, as a router would hold.
    auto channel = grpc::CreateChannel(absl::StrCat(target.host, ":", target.port),
                                       grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", target.ToString(),
                                                 "; is `glimpse serve` running there?"));
    }
    client->grpc_ = std::make_unique<GrpcState>();
    client->grpc_->stub = glimpse::v1::Engine::NewStub(channel);
  }
  return client;
}

RequestRecord TargetClient::Send(const WorkItem& item) const {
  return target_.grpc ? SendGrpc(item) : SendHttp(item);
}

RequestRecord TargetClient::SendGrpc(const WorkItem& item) const {
  glimpse::v1::GenerateRequest request;
  if (!item.prompt_ids.empty()) {
    for (int32_t t : item.prompt_ids) request.mutable_token_ids()->add_ids(static_cast<uint32_t>(t));
  } else {
    request.set_text(item.prompt_text);
  }
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(item.max_tokens));
  request.mutable_stopping()->set_ignore_eos(options_.ignore_eos);
  request.mutable_output()->set_detokenize(false);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(
                           static_cast<int64_t>(options_.request_timeout_s * 1e6)));
  RequestRecord r;
  r.input_tokens = static_cast<int32_t>(item.prompt_ids.size());
  r.start_s = Now();
  auto reader = grpc_->stub->Generate(&context, request);
  glimpse::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_prompt()) {
      r.input_tokens = static_cast<int32_t>(response.prompt().prompt_tokens());
    } else if (response.has_complete()) {
      r.input_tokens = static_cast<int32_t>(response.complete().usage().prompt_tokens());
    } else if (response.has_chunk() && response.chunk().token_ids_size() > 0) {
      const double now = Now();
      if (r.output_tokens == 0) r.first_token_s = now;
      r.token_times_s.push_back(now);
      r.output_tokens += response.chunk().token_ids_size();
    }
  }
  const grpc::Status status = reader->Finish();
  r.end_s = Now();
  r.ok = status.ok();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    r.error_kind = "timeout";
  } else if (!status.ok()) {
    r.error_kind = absl::StrCat("grpc_", static_cast<int>(status.error_code()));
  }
  if (!status.ok()) r.error_detail = status.error_message();
  return r;
}

// One streaming request on its own connection ("Connection: close"), read with the SSE parser.
RequestRecord TargetClient::SendHttp(const WorkItem& item) const {
  RequestRecord r;
  nlohmann::json body = {{"max_tokens", item.max_tokens},
                         {"temperature", 0},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
  if (!options_.model.empty()) body["model"] = options_.model;
  if (options_.ignore_eos) body["ignore_eos"] = true;
  std::string path;
  if (options_.endpoint == Endpoint::kChat) {
    path = "/chat/completions";
    nlohmann::json messages = nlohmann::json::array();
    if (item.messages.empty()) {
      messages.push_back({{"role", "user"}, {"content", item.prompt_text}});
    } else {
      for (const ChatMessage& m : item.messages) {
        messages.push_back({{"role", m.role}, {"content", m.content}});
      }
    }
    body["messages"] = std::move(messages);
  } else {
    path = "/completions";
    if (!item.prompt_ids.empty()) {
      body["prompt"] = item.prompt_ids;
      r.input_tokens = static_cast<int32_t>(item.prompt_ids.size());
    } else {
      body["prompt"] = item.prompt_text;
    }
  }
  const std::string payload = body.dump();
  const std::string request = absl::StrCat(
      "POST ", target_.path_prefix, path, " HTTP/1.1\r\nHost: ", target_.host, ":", target_.port,
      "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\n"
      "Content-Length: ",
      payload.size(), "\r\n\r\n", payload);
  r.start_s = Now();
  const double deadline = r.start_s + options_.request_timeout_s;
  std::string error;
  const int fd = ConnectTcp(target_.host, target_.port, 1.0, &error);
  if (fd < 0) {
    r.error_kind = error;
    r.end_s = Now();
    return r;
  }
  if (!SendAll(fd, request)) {
    close(fd);
    r.error_kind = "send";
    r.end_s = Now();
    return r;
  }
  HttpResponseReader http;
  SseParser sse;
  int32_t usage_completion_tokens = -1;
  bool done = false;
  char buf[16384];
  while (!done) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) break;  // Server closed.
    if (n < 0) {
      if ((errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && Now() < deadline) {
        continue;  // Read timeout tick; the request deadline has not passed yet.
      }
      r.error_kind = Now() >= deadline ? "timeout" : "read";
      break;
    }
    const double now = Now();
    if (now >= deadline) {
      r.error_kind = "timeout";
      break;
    }
    absl::StatusOr<std::string> bytes = http.Feed(std::string_view(buf, static_cast<size_t>(n)));
    if (!bytes.ok()) {
      r.error_kind = "bad_http";
      break;
    }
    if (http.head_complete() && http.head().status_code != 200) {
      r.error_kind = absl::StrCat("http_", http.head().status_code);
      r.error_detail = ReadErrorBody(fd, http, *bytes);
      break;
    }
    for (const SseEvent& event : sse.Feed(*bytes)) {
      if (event.IsDone()) {
        done = true;
        break;
      }
      nlohmann::json chunk = nlohmann::json::parse(event.data, nullptr, false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("error")) {
        r.error_kind = "stream_error";
        done = true;
        break;
      }
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        const nlohmann::json& usage = chunk["usage"];
        usage_completion_tokens = usage.value("completion_tokens", -1);
        if (usage.contains("prompt_tokens") && usage["prompt_tokens"].is_number_integer()) {
          r.input_tokens = usage["prompt_tokens"].get<int32_t>();
        }
      }
      if (!chunk.contains("choices") || !chunk["choices"].is_array()) continue;
      for (const auto& choice : chunk["choices"]) {
        if (ChoiceHasText(choice)) {
          if (r.token_times_s.empty()) r.first_token_s = now;
          r.token_times_s.push_back(now);
          break;  // One timing entry per chunk (stats.h, ITL).
        }
      }
    }
  }
  close(fd);
  r.end_s = Now();
  // Tokens: the server's usage when it reports it, else one per chunk that carried text.
  r.output_tokens = usage_completion_tokens >= 0 ? usage_completion_tokens
                                                 : static_cast<int32_t>(r.token_times_s.size());
  r.ok = done && r.error_kind.empty();
  if (!r.ok && r.error_kind.empty()) r.error_kind = "incomplete_stream";
  return r;
}

std::optional<int32_t> TargetClient::CountTokens(std::string_view text) const {
  if (!target_.grpc) return std::nullopt;
  glimpse::v1::TokenizeRequest request;
  request.set_text(std::string(text));
  request.set_add_special_tokens(false);
  glimpse::v1::TokenizeResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!grpc_->stub->Tokenize(&context, request, &response).ok()) return std::nullopt;
  return static_cast<int32_t>(response.count());
}

std::optional<int32_t> TargetClient::VocabSize() const {
  if (!target_.grpc) return std::nullopt;
  glimpse::v1::GetModelInfoRequest request;
  glimpse::v1::GetModelInfoResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (!grpc_->stub->GetModelInfo(&context, request, &response).ok()) return std::nullopt;
  return static_cast<int32_t>(response.vocab_size());
}

absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    double timeout_s) {
  std::string error;
  const int fd = ConnectTcp(host, port, timeout_s, &error);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("GET http://", host, ":", port, path, ": ", error,
                                               " failed"));
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: ", host, ":", port,
                                           "\r\nConnection: close\r\n\r\n");
  if (!SendAll(fd, request)) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("GET ", path, ": send failed"));
  }
  HttpResponseReader http;
  std::string body;
  char buf[16384];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    absl::StatusOr<std::string> bytes = http.Feed(std::string_view(buf, static_cast<size_t>(n)));
    if (!bytes.ok()) {
      close(fd);
      return bytes.status();
    }
    body += *bytes;
  }
  close(fd);
  if (!http.head_complete()) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": no HTTP response"));
  }
  if (http.head().status_code != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": HTTP ", http.head().status_code));
  }
  return body;
}

}  // namespace glimpse::tools::loadgen
