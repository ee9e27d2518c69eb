#include "server/gateway.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "model/chat_template.h"
#include "nlohmann/json.hpp"
#include "server/openai_errors.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "spdlog/spdlog.h"

namespace glimpse::server {
namespace {

using openai::OpenAiError;
using Clock = std::chrono::steady_clock;

HttpResponse JsonResponse(int status, std::string body) {
  return HttpResponse::Text(status, std::move(body), "application/json");
}

bool Retryable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE;
}

}  // namespace

// One HTTP completion request: its Generate calls (one per prompt), the translation of their
// messages into the response, and the client connection. Shared by the HTTP handler, the
// calls' gRPC callbacks and the client-close callback; every member is guarded by mu_.
class Gateway::RequestCall : public std::enable_shared_from_this<Gateway::RequestCall> {
 public:
  RequestCall(Gateway& gateway, openai::ParsedRequest parsed, std::shared_ptr<Responder> responder)
      : gateway_(gateway),
        parsed_(std::move(parsed)),
        responder_(std::move(responder)),
        meta_(openai::NewResponseMeta(parsed_.endpoint, gateway.served_model().name)),
        start_(Clock::now()) {
    const openai::ResponseOptions options = openai::ResponseOptionsFor(parsed_);
    if (parsed_.stream) {
      translator_.emplace(options, meta_);
    } else {
      aggregator_.emplace(options, meta_);
    }
  }

  // Starts every prompt's Generate call (after chat rendering for chat requests).
  void Begin();
  void OnMessage(int prompt_index, const glimpse::v1::GenerateResponse& message);
  class GenerateCall;
  // `call` is about to delete itself; it is forgotten first.
  void OnCallDone(GenerateCall* call, int prompt_index, const grpc::Status& status,
                  bool got_message, Backend* backend);
  void OnClientClosed();
  void Fail(const OpenAiError& error);

 private:
  void StartCall(int prompt_index, const Backend* exclude);
  // Sends the SSE response head; returns the translator's opening events.
  std::string BeginStreamLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RenderChatThenStart();

  Gateway& gateway_;
  absl::Mutex mu_;
  openai::ParsedRequest parsed_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Responder> responder_;
  const openai::ResponseMeta meta_;
  const Clock::time_point start_;
  std::optional<openai::StreamTranslator> translator_ ABSL_GUARDED_BY(mu_);
  std::optional<openai::Aggregator> aggregator_ ABSL_GUARDED_BY(mu_);
  std::vector<GenerateCall*> calls_ ABSL_GUARDED_BY(mu_);  // Live calls, for cancellation.
  std::vector<int> retries_ ABSL_GUARDED_BY(mu_);
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
  bool headers_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
};

// One streaming Generate call to one replica. Deletes itself when gRPC is done with it.
class Gateway::RequestCall::GenerateCall
    : public grpc::ClientReadReactor<glimpse::v1::GenerateResponse> {
 public:
  GenerateCall(std::shared_ptr<RequestCall> owner, int prompt_index,
               std::unique_ptr<BackendLease> lease, glimpse::v1::GenerateRequest request)
      : owner_(std::move(owner)), prompt_index_(prompt_index), lease_(std::move(lease)),
        request_(std::move(request)) {}

  void Start() {
    lease_->backend().stub().async()->Generate(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended; OnDone follows.
    got_message_ = true;
    owner_->OnMessage(prompt_index_, response_);
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    owner_->OnCallDone(this, prompt_index_, status, got_message_, &lease_->backend());
    delete this;
  }

 private:
  std::shared_ptr<RequestCall> owner_;
  const int prompt_index_;
  std::unique_ptr<BackendLease> lease_;
  glimpse::v1::GenerateRequest request_;
  glimpse::v1::GenerateResponse response_;
  grpc::ClientContext context_;
  bool got_message_ = false;
};

void Gateway::RequestCall::Begin() {
  auto self = shared_from_this();
  responder_->OnClose([self] { self->OnClientClosed(); });
  if (parsed_.stream) gateway_.StreamOpened();
  {
    absl::MutexLock lock(&mu_);
    retries_.assign(std::max<size_t>(1, parsed_.prompts.size()), 1);
  }
  if (parsed_.chat()) {
    RenderChatThenStart();
    return;
  }
  int num_prompts;
  {
    absl::MutexLock lock(&mu_);
    num_prompts = static_cast<int>(parsed_.prompts.size());
    remaining_ = num_prompts;
  }
  for (int i = 0; i < num_prompts; ++i) StartCall(i, nullptr);
}

// Chat: a replica renders the messages with the model's chat template and tokenizes them.
void Gateway::RequestCall::RenderChatThenStart() {
  std::string affinity_text;
  auto tokenize = std::make_shared<glimpse::v1::TokenizeRequest>();
  {
    absl::MutexLock lock(&mu_);
    for (const openai::ChatMessageIn& m : parsed_.messages) {
      auto* message = tokenize->mutable_chat()->add_messages();
      message->set_role(m.role);
      message->set_content(m.content);
      absl::StrAppend(&affinity_text, m.role, ":", m.content, "\n");
    }
    tokenize->mutable_chat()->set_add_generation_prompt(parsed_.add_generation_prompt);
  }
  std::shared_ptr<BackendLease> lease =
      gateway_.pool().Acquire(gateway_.pool().router().AffinityKey(affinity_text));
  if (lease == nullptr) return Fail(openai::FromGrpcStatus(grpc::StatusCode::UNAVAILABLE, "no healthy backend"));
  auto context = std::make_shared<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto response = std::make_shared<glimpse::v1::TokenizeResponse>();
  auto self = shared_from_this();
  lease->backend().stub().async()->Tokenize(
      context.get(), tokenize.get(), response.get(),
      [self, context, tokenize, response, lease](grpc::Status status) {
        if (!status.ok()) {
          return self->Fail(openai::FromGrpcStatus(status.error_code(), status.error_message()));
        }
        {
          absl::MutexLock lock(&self->mu_);
          self->parsed_.prompts = {openai::Prompt::Tokens(
              std::vector<uint32_t>(response->token_ids().begin(), response->token_ids().end()))};
          self->remaining_ = 1;
        }
        self->StartCall(0, nullptr);
      });
}

void Gateway::RequestCall::StartCall(int prompt_index, const Backend* exclude) {
  glimpse::v1::GenerateRequest request;
  std::optional<uint64_t> key;
  {
    absl::MutexLock lock(&mu_);
    if (ended_ || client_gone_) return;
    request = openai::BuildGenerateRequest(parsed_, static_cast<size_t>(prompt_index), "");
    const openai::Prompt& p = parsed_.prompts[static_cast<size_t>(prompt_index)];
    key = p.is_tokens ? gateway_.pool().router().AffinityKey(std::span<const uint32_t>(p.token_ids))
                      : gateway_.pool().router().AffinityKey(std::string_view(p.text));
  }
  std::unique_ptr<BackendLease> lease = gateway_.pool().Acquire(key, exclude);
  if (lease == nullptr) {
    return Fail(openai::FromGrpcStatus(grpc::StatusCode::UNAVAILABLE,
                                       "no healthy backend; retry later"));
  }
  auto* call = new GenerateCall(shared_from_this(), prompt_index, std::move(lease), std::move(request));
  {
    absl::MutexLock lock(&mu_);
    calls_.push_back(call);
  }
  call->Start();
}

void Gateway::RequestCall::OnMessage(int prompt_index, const glimpse::v1::GenerateResponse& message) {
  absl::MutexLock lock(&mu_);
  if (ended_) return;
  if (!translator_.has_value()) {
    aggregator_->Add(message, prompt_index);
    return;
  }
  std::string events;
  if (!headers_sent_) events = BeginStreamLocked();
  events += translator_->Feed(message, prompt_index);
  if (!events.empty()) responder_->Write(std::move(events));
}

std::string Gateway::RequestCall::BeginStreamLocked() {
  headers_sent_ = true;
  HttpHeaders headers;
  headers.Add("Content-Type", "text/event-stream");
  headers.Add("Cache-Control", "no-cache");
  responder_->BeginStream(200, std::move(headers));
  return translator_->Start();
}

void Gateway::RequestCall::OnCallDone(GenerateCall* call, int prompt_index,
                                      const grpc::Status& status, bool got_message,
                                      Backend* backend) {
  bool retry = false;
  {
    absl::MutexLock lock(&mu_);
    calls_.erase(std::remove(calls_.begin(), calls_.end(), call), calls_.end());
    if (ended_) return;
    if (!status.ok() && !got_message && Retryable(status) && !client_gone_ &&
        retries_[static_cast<size_t>(prompt_index)]-- > 0) {
      retry = true;
    }
  }
  if (retry) {
    spdlog::warn("replica {} failed before the first token ({}); retrying elsewhere",
                 backend->target(), status.error_message());
    gateway_.pool().ReportFailure(*backend);
    return StartCall(prompt_index, backend);
  }
  if (!status.ok()) {
    return Fail(openai::FromGrpcStatus(status.error_code(), status.error_message()));
  }
  absl::MutexLock lock(&mu_);
  if (--remaining_ > 0 || ended_) return;
  ended_ = true;
  if (translator_.has_value()) {
    // Nothing streamed yet (cannot happen with a healthy replica).
    if (!headers_sent_) responder_->Write(BeginStreamLocked());
    responder_->Write(translator_->Finish());
    responder_->Finish();
    gateway_.StreamClosed();
  } else {
    responder_->Send(JsonResponse(200, aggregator_->Finish()));
  }
  gateway_.CountResponse(200, std::chrono::duration<double>(Clock::now() - start_).count());
}

void Gateway::RequestCall::Fail(const OpenAiError& error) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    // Under the lock: a call removes itself (OnCallDone, same lock) before it is deleted, so
    // every pointer here is alive. gRPC does not run reactions inline from TryCancel.
    for (GenerateCall* c : calls_) c->Cancel();
    if (headers_sent_) {
      // The status line is gone: report in-band, as vLLM does, then end the stream.
      responder_->Write(openai::StreamTranslator::ErrorEvents(error));
      responder_->Finish();
    } else {
      responder_->Send(JsonResponse(error.http_status, openai::ToJson(error)));
    }
    if (translator_.has_value()) gateway_.StreamClosed();
  }
  gateway_.CountResponse(error.http_status,
                         std::chrono::duration<double>(Clock::now() - start_).count());
}

void Gateway::RequestCall::OnClientClosed() {
  {
    absl::MutexLock lock(&mu_);
    client_gone_ = true;
    if (ended_) return;
    ended_ = true;
    for (GenerateCall* c : calls_) c->Cancel();  // See Fail() on why under the lock.
    if (translator_.has_value()) gateway_.StreamClosed();
  }
  gateway_.CountResponse(499, std::chrono::duration<double>(Clock::now() - start_).count());
}

Gateway::Gateway(GatewayOptions options) : options_(std::move(options)) {
  latency_seconds_ = *registry_.AddHistogram(
      "glimpse_gateway_request_latency_seconds",
      "Time from a completion request's arrival to its last byte, by the gateway's clock.",
      {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120});
  open_streams_gauge_ = *registry_.AddGauge("glimpse_gateway_open_streams",
                                            "Streaming (SSE) responses in progress.");
}

Gateway::~Gateway() { Shutdown(); }

absl::Status Gateway::Start(absl::Duration model_info_timeout) {
  if (!options_.api_keys_file.empty()) {
    std::ifstream in(options_.api_keys_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read --api_keys_file '", options_.api_keys_file, "'"));
    }
    std::string line;
    while (std::getline(in, line)) {
      std::string key(absl::StripAsciiWhitespace(line));
      if (!key.empty() && key[0] != '#') api_keys_.insert(std::move(key));
    }
    if (api_keys_.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api_keys_file '", options_.api_keys_file, "' holds no key"));
    }
  }
  pool_ = std::make_unique<BackendPool>(options_.backends);
  if (absl::Status s = pool_->Start(); !s.ok()) return s;
  if (absl::Status s = LearnServedModel(model_info_timeout); !s.ok()) return s;
  http_ = std::make_unique<AsyncHttpServer>(options_.http);
  http_->Handle("POST", "/v1/completions", [this](HttpRequest r, std::shared_ptr<Responder> out) {
    HandleCompletion(false, std::move(r), std::move(out));
  });
  http_->Handle("POST", "/v1/chat/completions", [this](HttpRequest r, std::shared_ptr<Responder> out) {
    HandleCompletion(true, std::move(r), std::move(out));
  });
  http_->Handle("GET", "/v1/models", [this](HttpRequest, std::shared_ptr<Responder> out) {
    HandleModels(std::move(out));
  });
  http_->Handle("GET", "/health", [this](HttpRequest, std::shared_ptr<Responder> out) {
    HandleHealth(std::move(out));
  });
  http_->Handle("GET", "/metrics", [this](HttpRequest, std::shared_ptr<Responder> out) {
    HandleMetrics(std::move(out));
  });
  return http_->Start();
}

void Gateway::Shutdown() {
  if (http_ != nullptr) http_->Shutdown();
  if (pool_ != nullptr) pool_->Stop();
}

absl::Status Gateway::LearnServedModel(absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (true) {
    std::unique_ptr<BackendLease> lease = pool_->Acquire(std::nullopt);
    if (lease != nullptr) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      glimpse::v1::GetModelInfoResponse info;
      if (lease->backend().stub().GetModelInfo(&context, glimpse::v1::GetModelInfoRequest(), &info).ok()) {
        absl::MutexLock lock(&mu_);
        served_.name = info.served_model_name();
        served_.max_context_length = info.max_context_length();
        served_.chat_template_name =
            model::ChatTemplate::FromText(info.chat_template(), "", "").name();
        return absl::OkStatus();
      }
    }
    if (absl::Now() >= until) {
      return absl::UnavailableError("no glimpse replica answered GetModelInfo; are the backends up?");
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

ServedModel Gateway::served_model() const {
  absl::MutexLock lock(&mu_);
  return served_;
}

bool Gateway::Authorized(const HttpRequest& request) const {
  if (api_keys_.empty()) return true;
  const std::optional<std::string_view> header = request.headers.Get("Authorization");
  if (!header.has_value()) return false;
  const std::string value(*header);
  constexpr std::string_view kBearer = "Bearer ";
  if (value.compare(0, kBearer.size(), kBearer) != 0) return false;
  return api_keys_.contains(std::string(absl::StripAsciiWhitespace(value.substr(kBearer.size()))));
}

void Gateway::HandleCompletion(bool chat, HttpRequest request, std::shared_ptr<Responder> responder) {
  const auto reply_error = [&](const OpenAiError& e) {
    responder->Send(JsonResponse(e.http_status, openai::ToJson(e)));
    CountResponse(e.http_status, 0);
  };
  if (!Authorized(request)) {
    return reply_error(openai::FromStatus(absl::UnauthenticatedError(
        "missing or invalid API key: send 'Authorization: Bearer <key>'")));
  }
  absl::StatusOr<openai::ParsedRequest> parsed = openai::ParseRequest(
      chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions, request.body);
  if (!parsed.ok()) return reply_error(openai::FromStatus(parsed.status()));
  const ServedModel model = served_model();
  if (!parsed->model.empty() && parsed->model != model.name) {
    return reply_error(openai::FromStatus(absl::NotFoundError(absl::StrCat(
        "The model '", parsed->model, "' does not exist; this server serves '", model.name, "'"))));
  }
  auto call = std::make_shared<RequestCall>(*this, *std::move(parsed), std::move(responder));
  call->Begin();
}

void Gateway::HandleModels(std::shared_ptr<Responder> responder) {
  const ServedModel model = served_model();
  nlohmann::json body = {
      {"object", "list"},
      {"data",
       {{{"id", model.name},
         {"object", "model"},
         {"created", 0},
         {"owned_by", "glimpse"},
         {"max_model_len", model.max_context_length},
         {"chat_template", model.chat_template_name}}}}};
  responder->Send(JsonResponse(200, body.dump()));
}

void Gateway::HandleHealth(std::shared_ptr<Responder> responder) {
  if (pool_->AnyHealthy()) {
    responder->Send(JsonResponse(200, "{\"status\":\"ok\"}"));
  } else {
    responder->Send(JsonResponse(503, "{\"status\":\"no healthy backend\"}"));
  }
}

void Gateway::HandleMetrics(std::shared_ptr<Responder> responder) {
  std::string text = registry_.RenderText();
  text += "# HELP glimpse_gateway_backend_healthy Whether the replica passed its last health check.\n"
          "# TYPE glimpse_gateway_backend_healthy gauge\n";
  const std::vector<BackendStatus> backends = pool_->Snapshot();
  for (const BackendStatus& b : backends) {
    absl::StrAppend(&text, "glimpse_gateway_backend_healthy{backend=\"", EscapeLabelValue(b.target),
                    "\"} ", b.healthy ? 1 : 0, "\n");
  }
  text += "# HELP glimpse_gateway_backend_outstanding_requests Requests in flight at the replica.\n"
          "# TYPE glimpse_gateway_backend_outstanding_requests gauge\n";
  for (const BackendStatus& b : backends) {
    absl::StrAppend(&text, "glimpse_gateway_backend_outstanding_requests{backend=\"",
                    EscapeLabelValue(b.target), "\"} ", b.outstanding, "\n");
  }
  text += "# HELP glimpse_gateway_backend_requests_total Requests sent to the replica.\n"
          "# TYPE glimpse_gateway_backend_requests_total counter\n";
  for (const BackendStatus& b : backends) {
    absl::StrAppend(&text, "glimpse_gateway_backend_requests_total{backend=\"",
                    EscapeLabelValue(b.target), "\"} ", b.requests_total, "\n");
  }
  if (options_.extra_metrics) text += options_.extra_metrics();
  HttpResponse r;
  r.headers.Add("Content-Type", MetricsRegistry::kContentType);
  r.body = std::move(text);
  responder->Send(std::move(r));
}

void Gateway::CountResponse(int http_status, double seconds) {
  Counter* counter = nullptr;
  {
    absl::MutexLock lock(&counters_mu_);
    for (const auto& [status, c] : responses_by_status_) {
      if (status == http_status) counter = c;
    }
    if (counter == nullptr) {
      auto added = registry_.AddCounter("glimpse_gateway_responses",
                                        "Completion requests answered, by HTTP status.",
                                        {{"status", std::to_string(http_status)}});
      if (added.ok()) {
        counter = *added;
        responses_by_status_.emplace_back(http_status, counter);
      }
    }
  }
  if (counter != nullptr) counter->Increment();
  if (seconds > 0) latency_seconds_->Observe(seconds);
}

void Gateway::StreamOpened() { open_streams_gauge_->Set(++open_streams_); }
void Gateway::StreamClosed() { open_streams_gauge_->Set(--open_streams_); }

}  // namespace glimpse::server
