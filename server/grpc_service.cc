#include "server/grpc_service.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/chat_template.h"
#include "server/chunk_merge.h"
#include "spdlog/spdlog.h"

namespace glimpse::server {

namespace v1 = ::glimpse::v1;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

namespace {

// A reactor for a call that failed before it reached the engine: finishes at once.
class FailedWriteReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit FailedWriteReactor(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The RPC's hard deadline on the engine's clock, if it has one.
std::optional<scheduler::Clock::time_point> EngineDeadline(grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline >= now + std::chrono::hours(24 * 365)) return std::nullopt;  // Infinite.
  return scheduler::Clock::now() +
         std::chrono::duration_cast<scheduler::Clock::duration>(deadline - now);
}

}  // namespace

// One Generate call. Lifetime: created by EngineService::Generate, deleted in OnDone — or,
// if an engine-thread listener call is running at that moment, by that call when it returns
// (see Notifier), so the engine never touches a deleted reactor.
//
// Locking: `mu_` guards the write queue and the call's state. Decisions are made under `mu_`
// and StartWrite/Finish are called after releasing it, so a gRPC reaction that runs inline
// cannot deadlock on it. At most one write is in flight (write_in_flight_).
class GenerateReactor final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(EngineService& service, std::shared_ptr<scheduler::RequestStream> stream,
                  ResponseBuilder builder)
      : service_(service),
        stream_(std::move(stream)),
        notifier_(std::make_shared<Notifier>()),
        builder_(std::move(builder)) {
    notifier_->reactor = this;
  }

  // Registers the listener; outputs already waiting are written right away. The listener runs
  // on the engine thread and only signals a Notify on the service's WriteDispatcher (a
  // CoalescedTask: one pending at a time, each draining whatever the stream holds by then).
  void Begin() {
    std::shared_ptr<Notifier> notifier = notifier_;
    std::shared_ptr<CoalescedTask> notify = CoalescedTask::Create(
        service_.write_dispatcher_, [notifier] { Notifier::Notify(*notifier); });
    stream_->SetListener([notify] { notify->Signal(); });
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) cancelled_ = true;  // The call is broken; nothing more can be sent.
    }
    if (!ok) stream_->Cancel();
    Pump();
  }

  void OnCancel() override {
    stream_->Cancel();  // The engine frees the request's blocks at its next step.
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Pump();
  }

  void OnDone() override {
    service_.Forget(stream_->request_id());
    bool delete_now;
    {
      absl::MutexLock lock(&notifier_->mu);
      notifier_->reactor = nullptr;
      delete_now = notifier_->active == 0;
      notifier_->delete_pending = !delete_now;
      if (!delete_now) notifier_->to_delete = this;
    }
    if (delete_now) delete this;
  }

 private:
  // Shared between the reactor and the stream's listener: lets the engine thread reach the
  // reactor only while it is alive, and defers its deletion while a listener call runs.
  struct Notifier {
    absl::Mutex mu;
    GenerateReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    int active ABSL_GUARDED_BY(mu) = 0;  // Listener calls in progress.
    bool delete_pending ABSL_GUARDED_BY(mu) = false;
    GenerateReactor* to_delete ABSL_GUARDED_BY(mu) = nullptr;

    static void Notify(Notifier& n) {
      GenerateReactor* reactor;
      {
        absl::MutexLock lock(&n.mu);
        reactor = n.reactor;
        if (reactor == nullptr) return;
        ++n.active;
      }
      reactor->Pump();
      GenerateReactor* doomed = nullptr;
      {
        absl::MutexLock lock(&n.mu);
        if (--n.active == 0 && n.delete_pending) {
          doomed = n.to_delete;
          n.delete_pending = false;
        }
      }
      delete doomed;
    }
  };

  enum class Action { kNone, kWrite, kFinish };

  // Moves every available engine output into the queue. Never blocks.
  void DrainStreamLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!stream_done_) {
      std::optional<scheduler::RequestOutput> out = stream_->TryNext();
      if (!out.has_value()) return;
      std::vector<v1::GenerateResponse> messages;
      builder_.Append(*out, messages);
      for (v1::GenerateResponse& m : messages) queue_.push_back(std::move(m));
      if (out->done) {
        stream_done_ = true;
        final_status_ = ToGrpcStatus(out->status);
      }
    }
  }

  // Starts the next write, or finishes the call, if nothing is in flight. Any thread.
  void Pump() {
    Action action = Action::kNone;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finish_called_ || write_in_flight_) return;
      if (cancelled_) {
        action = Action::kFinish;
        status = grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
      } else {
        DrainStreamLocked();
        if (!queue_.empty()) {
          writing_ = std::move(queue_.front());
          queue_.pop_front();
          // What queued behind the write that just ended goes out in one message.
          const int merged = MergeQueuedChunks(writing_, queue_);
          if (merged > 0 && service_.options_.stream_chunks_merged != nullptr) {
            service_.options_.stream_chunks_merged->Add(merged);
          }
          write_in_flight_ = true;
          action = Action::kWrite;
        } else if (stream_done_) {
          action = Action::kFinish;
          status = final_status_;
        }
      }
      if (action == Action::kFinish) finish_called_ = true;
    }
    if (action == Action::kWrite) StartWrite(&writing_);
    if (action == Action::kFinish) Finish(status);
  }

  EngineService& service_;
  const std::shared_ptr<scheduler::RequestStream> stream_;
  const std::shared_ptr<Notifier> notifier_;

  absl::Mutex mu_;
  ResponseBuilder builder_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);
  // The message being written: set only while no write is in flight, then read by gRPC.
  v1::GenerateResponse writing_;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

EngineService::EngineService(scheduler::Engine& engine, const model::Tokenizer& tokenizer,
                             ServerLifecycle& lifecycle, EngineServiceOptions options)
    : engine_(engine),
      tokenizer_(tokenizer),
      lifecycle_(lifecycle),
      options_(std::move(options)),
      write_dispatcher_(WriteDispatcher::Start(options_.write_threads > 0 ? options_.write_threads
                                                                          : DefaultWriteThreads())),
      start_time_(std::chrono::system_clock::now()) {
  served_.served_model_name = options_.served_model_name;
  served_.tokenizer = &tokenizer_;
  served_.vocab_size = engine_.model_config().vocab_size;
  served_.context_length = engine_.model_config().context_length;
  served_.kv_pool_tokens =
      static_cast<int64_t>(engine_.options().num_kv_blocks) * engine_.options().block_size;
  throughput_time_ = std::chrono::steady_clock::now();
}

EngineService::~EngineService() { write_dispatcher_->Stop(); }

grpc::ServerWriteReactor<v1::GenerateResponse>* EngineService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  switch (lifecycle_.state()) {
    case v1::HEALTH_STATE_READY:
    case v1::HEALTH_STATE_DEGRADED:
      break;
    case v1::HEALTH_STATE_UNSPECIFIED:
    case v1::HEALTH_STATE_STARTING:
    case v1::HEALTH_STATE_DRAINING:
    case v1::HEALTH_STATE_NOT_READY:
    case v1::HealthState_INT_MIN_SENTINEL_DO_NOT_USE_:
    case v1::HealthState_INT_MAX_SENTINEL_DO_NOT_USE_:
      return new FailedWriteReactor(absl::UnavailableError(
          "the server is starting or draining; retry elsewhere"));
  }
  absl::StatusOr<ConvertedRequest> converted =
      ConvertGenerateRequest(*request, served_, EngineDeadline(context));
  if (!converted.ok()) return new FailedWriteReactor(converted.status());
  const std::string id = converted->engine_request.request_id;
  absl::StatusOr<std::shared_ptr<scheduler::RequestStream>> stream =
      engine_.Submit(std::move(converted->engine_request));
  if (!stream.ok()) return new FailedWriteReactor(stream.status());
  {
    absl::MutexLock lock(&mu_);
    active_.insert(id);
  }
  auto* reactor = new GenerateReactor(
      *this, *std::move(stream), ResponseBuilder(std::move(converted->response), tokenizer_));
  reactor->Begin();
  return reactor;
}

void EngineService::Forget(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  active_.erase(request_id);
}

int EngineService::AbortAll() {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    ids.assign(active_.begin(), active_.end());
  }
  int n = 0;
  for (const std::string& id : ids) n += engine_.Abort(id) ? 1 : 0;
  return n;
}

int EngineService::num_active_calls() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(active_.size());
}

// The token ids, their pieces if asked for, and the counts; not the rendered prompt.
void EngineService::FillTokenizeResponse(const v1::TokenizeRequest& request,
                                         const std::vector<int32_t>& ids,
                                         v1::TokenizeResponse* response) const {
  response->mutable_token_ids()->Add(ids.begin(), ids.end());
  if (request.return_pieces()) {
    for (int32_t id : ids) {
      response->add_pieces(SanitizeUtf8(tokenizer_.TokenToPiece(id, /*render_special=*/true)));
    }
  }
  response->set_count(static_cast<uint32_t>(ids.size()));
  response->set_max_context_length(static_cast<uint32_t>(served_.context_length));
}

// Renders chat messages with the model's chat template (or the request's), then tokenizes the
// result with special-token parsing. BOS is added per the model's metadata unless the
// rendered text already starts with it (templates that write bos_token themselves).
grpc::ServerUnaryReactor* EngineService::TokenizeChat(grpc::CallbackServerContext* context,
                                                     const v1::TokenizeRequest* request,
                                                     v1::TokenizeResponse* response) {
  const v1::ChatInput& chat = request->chat();
  if (chat.messages().empty()) {
    return FinishUnary(context, absl::InvalidArgumentError(
                                    "chat.messages: at least one message is required"));
  }
  std::vector<model::ChatMessage> messages;
  for (const v1::ChatMessage& m : chat.messages()) messages.push_back({m.role(), m.content()});
  const std::string bos = tokenizer_.bos_id() >= 0 ? tokenizer_.piece(tokenizer_.bos_id()) : "";
  const std::string eos = tokenizer_.eos_id() >= 0 ? tokenizer_.piece(tokenizer_.eos_id()) : "";
  const model::ChatTemplate chat_template = model::ChatTemplate::FromText(
      chat.has_chat_template() ? chat.chat_template() : options_.chat_template, bos, eos);
  absl::StatusOr<std::string> rendered = chat_template.Render(
      messages, chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true);
  if (!rendered.ok()) return FinishUnary(context, rendered.status());
  const bool starts_with_bos = !bos.empty() && absl::StartsWith(*rendered, bos);
  const bool add_special =
      (request->has_add_special_tokens() ? request->add_special_tokens() : true) && !starts_with_bos;
  FillTokenizeResponse(*request, tokenizer_.Encode(*rendered, add_special, /*parse_special=*/true),
                       response);
  response->set_rendered_prompt(*std::move(rendered));
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::Tokenize(grpc::CallbackServerContext* context,
                                                 const v1::TokenizeRequest* request,
                                                 v1::TokenizeResponse* response) {
  switch (request->input_case()) {
    case v1::TokenizeRequest::kText:
      break;
    case v1::TokenizeRequest::kChat:
      return TokenizeChat(context, request, response);
    case v1::TokenizeRequest::INPUT_NOT_SET:
      return FinishUnary(context, absl::InvalidArgumentError(
                                      "input: exactly one of text or chat is required"));
  }
  const bool add_special =
      request->has_add_special_tokens() ? request->add_special_tokens() : true;
  FillTokenizeResponse(
      *request, tokenizer_.Encode(request->text(), add_special, /*parse_special=*/true), response);
  response->set_rendered_prompt(request->text());
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::Detokenize(grpc::CallbackServerContext* context,
                                                   const v1::DetokenizeRequest* request,
                                                   v1::DetokenizeResponse* response) {
  std::vector<int32_t> ids;
  ids.reserve(request->token_ids_size());
  for (int i = 0; i < request->token_ids_size(); ++i) {
    const uint32_t id = request->token_ids(i);
    if (id >= static_cast<uint32_t>(served_.vocab_size)) {
      return FinishUnary(context, absl::InvalidArgumentError(absl::StrCat(
                                      "token_ids[", i, "]: token id ", id,
                                      " is outside the vocabulary [0, ", served_.vocab_size, ")")));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  const bool skip = request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
  response->set_text(SanitizeUtf8(tokenizer_.Decode(ids, skip)));
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::Abort(grpc::CallbackServerContext* context,
                                              const v1::AbortRequest* request,
                                              v1::AbortResponse* response) {
  if (request->reason().size() > 1024) {
    return FinishUnary(context, absl::InvalidArgumentError(absl::StrCat(
                                    "reason: at most 1024 bytes, got ", request->reason().size())));
  }
  std::vector<std::string> ids;
  if (request->all()) {
    absl::MutexLock lock(&mu_);
    ids.assign(active_.begin(), active_.end());
  } else {
    ids.assign(request->request_ids().begin(), request->request_ids().end());
  }
  for (const std::string& id : ids) {
    if (engine_.Abort(id, request->reason().empty() ? "aborted by request" : request->reason())) {
      response->add_aborted(id);
    } else {
      response->add_not_found(id);
    }
  }
  if (response->aborted_size() > 0) {
    spdlog::info("abort: {} request(s) aborted", response->aborted_size());
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::HealthCheck(grpc::CallbackServerContext* context,
                                                    const v1::HealthCheckRequest* request,
                                                    v1::HealthCheckResponse* response) {
  const v1::HealthState state = lifecycle_.state();
  response->set_state(state);
  response->set_healthy(state == v1::HEALTH_STATE_READY);
  switch (state) {
    case v1::HEALTH_STATE_READY:
      break;
    case v1::HEALTH_STATE_STARTING:
      response->set_message("loading the model");
      break;
    case v1::HEALTH_STATE_DRAINING:
      response->set_message("draining for shutdown");
      break;
    case v1::HEALTH_STATE_UNSPECIFIED:
    case v1::HEALTH_STATE_DEGRADED:
    case v1::HEALTH_STATE_NOT_READY:
    case v1::HealthState_INT_MIN_SENTINEL_DO_NOT_USE_:
    case v1::HealthState_INT_MAX_SENTINEL_DO_NOT_USE_:
      response->set_message("not serving");
      break;
  }
  if (request->probe() && state == v1::HEALTH_STATE_READY) {
    // TODO(#3): run a 1-token generation through the engine for deep checks.
    response->set_message("probe not implemented; answered from state");
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::GetModelInfo(grpc::CallbackServerContext* context,
                                                     const v1::GetModelInfoRequest* /*request*/,
                                                     v1::GetModelInfoResponse* response) {
  response->set_model_path(options_.model_path);
  response->set_served_model_name(options_.served_model_name);
  response->set_model_type(options_.model_type);
  response->add_architectures("LlamaForCausalLM");
  response->set_is_generation(true);
  response->set_max_context_length(static_cast<uint32_t>(served_.context_length));
  response->set_max_req_input_len(static_cast<uint32_t>(served_.max_req_input_len()));
  response->set_vocab_size(static_cast<uint32_t>(served_.vocab_size));
  for (int32_t id : tokenizer_.end_of_generation_ids()) {
    response->add_eos_token_ids(static_cast<uint32_t>(id));
  }
  if (tokenizer_.bos_id() >= 0) response->set_bos_token_id(static_cast<uint32_t>(tokenizer_.bos_id()));
  if (tokenizer_.pad_id() >= 0) response->set_pad_token_id(static_cast<uint32_t>(tokenizer_.pad_id()));
  response->set_default_sampling_params_json("{}");
  response->set_supports_vision(false);
  response->set_chat_template(options_.chat_template);
  response->set_weights_dtype(options_.weights_dtype);
  if (options_.weights_dtype == "q8_0") response->set_quantization("q8_0");
  v1::ModelCapabilities* caps = response->mutable_capabilities();
  caps->set_supports_text_input(true);
  caps->set_supports_token_input(true);
  caps->set_max_top_logprobs(static_cast<uint32_t>(model::kMaxNumLogprobs));
  caps->set_max_n(kMaxN);
  caps->set_supports_priority(true);
  caps->set_supports_cache_salt(true);
  caps->mutable_speculation()->set_supported(false);
  caps->mutable_speculation()->set_max_draft_tokens(kMaxDraftTokens);
  caps->mutable_eviction()->set_supported(false);
  caps->mutable_eviction()->set_min_budget_tokens(kMinEvictionBudgetTokens);
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* EngineService::GetServerInfo(grpc::CallbackServerContext* context,
                                                      const v1::GetServerInfoRequest* /*request*/,
                                                      v1::GetServerInfoResponse* response) {
  const scheduler::EngineOptions& o = engine_.options();
  const scheduler::EngineLoad load = engine_.GetLoad();
  response->set_engine_name("glimpse");
  response->set_version(kGlimpseVersion);
  response->set_backend(options_.backend);
  response->set_device(options_.device);
  response->set_server_type("glimpse-grpc");
  response->set_active_requests(static_cast<uint32_t>(load.num_requests));
  response->set_is_paused(false);
  response->set_draining(engine_.draining());
  const auto now = std::chrono::system_clock::now();
  response->set_uptime_seconds(std::chrono::duration<double>(now - start_time_).count());
  response->set_start_time_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       start_time_.time_since_epoch())
                                       .count());
  response->set_kv_block_size(static_cast<uint32_t>(o.block_size));
  response->set_total_kv_blocks(static_cast<uint32_t>(o.num_kv_blocks));
  response->set_host_tier_blocks(static_cast<uint32_t>(o.num_host_blocks));
  response->set_max_running_requests(static_cast<uint32_t>(o.scheduler.max_running_sequences));
  response->set_max_batched_tokens(static_cast<uint32_t>(o.scheduler.max_step_tokens));
  response->set_tensor_parallel_size(static_cast<uint32_t>(options_.tensor_parallel_size));
  response->set_data_parallel_size(1);
  response->set_schema_revision(1);
  response->set_max_waiting_requests(static_cast<uint32_t>(o.max_waiting_requests));
  response->set_prefix_caching(o.scheduler.enable_prefix_caching);
  response->set_preemption_mode(options_.preemption_mode);
  response->set_kv_cache_bytes(options_.kv_cache_bytes);
  response->set_kv_cache_dtype(options_.kv_cache_dtype);
  return FinishUnary(context, absl::OkStatus());
}

double EngineService::GenThroughput(int64_t generation_tokens) {
  // A window of at least one second between samples, so that back-to-back calls do not divide
  // by a tiny interval; the figure is the rate over the last completed window.
  absl::MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - throughput_time_).count();
  if (seconds >= 1.0) {
    throughput_ = static_cast<double>(generation_tokens - throughput_tokens_) / seconds;
    throughput_time_ = now;
    throughput_tokens_ = generation_tokens;
  }
  return throughput_;
}

grpc::ServerUnaryReactor* EngineService::GetLoads(grpc::CallbackServerContext* context,
                                                 const v1::GetLoadsRequest* request,
                                                 v1::GetLoadsResponse* response) {
  if (request->has_dp_rank() && request->dp_rank() != 0) {
    return FinishUnary(context, absl::InvalidArgumentError(absl::StrCat(
                                    "dp_rank: this server has one rank (0), got ",
                                    request->dp_rank())));
  }
  bool spec = request->include().empty(), kv = spec, queues = spec;
  for (const std::string& name : request->include()) {
    spec |= name == "spec" || name == "all";
    kv |= name == "kv" || name == "all";
    queues |= name == "queues" || name == "all";
  }
  const scheduler::EngineLoad load = engine_.GetLoad();
  const scheduler::EngineOptions& o = engine_.options();
  response->set_timestamp(
      absl::FormatTime("%Y-%m-%d%ET%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()));
  response->set_version(kGlimpseVersion);
  response->set_dp_rank_count(1);
  v1::SchedulerLoad* l = response->add_loads();
  l->set_dp_rank(0);
  l->set_num_running_reqs(load.num_running);
  l->set_num_waiting_reqs(load.num_waiting + load.num_swapped);
  l->set_num_total_reqs(load.num_running + load.num_waiting + load.num_swapped);
  l->set_num_used_tokens(load.kv_blocks_used * o.block_size);
  l->set_max_total_num_tokens(load.kv_blocks_total * o.block_size);
  l->set_token_usage(load.kv_blocks_total > 0
                         ? static_cast<double>(load.kv_blocks_used) / load.kv_blocks_total
                         : 0.0);
  l->set_gen_throughput(GenThroughput(load.num_generation_tokens));
  // TODO(#3): a recent window; this is the hit rate since start.
  l->set_cache_hit_rate(load.prefix_cache_queried_tokens > 0
                            ? static_cast<double>(load.prefix_cache_hit_tokens) /
                                  load.prefix_cache_queried_tokens
                            : 0.0);
  l->set_utilization(o.scheduler.max_running_sequences > 0
                         ? static_cast<double>(load.num_running) /
                               o.scheduler.max_running_sequences
                         : 0.0);
  l->set_max_running_requests(o.scheduler.max_running_sequences);
  l->set_num_waiting_uncached_tokens(static_cast<int32_t>(
      std::min<int64_t>(load.num_waiting_tokens, std::numeric_limits<int32_t>::max())));
  if (spec) l->mutable_speculation();  // No speculation yet: all zero.
  if (kv) {
    l->mutable_kv()->set_used_blocks(static_cast<uint32_t>(load.kv_blocks_used));
    l->mutable_kv()->set_total_blocks(static_cast<uint32_t>(load.kv_blocks_total));
    l->mutable_kv()->set_cached_free_blocks(static_cast<uint32_t>(load.kv_blocks_cached_free));
  }
  if (queues) {
    l->mutable_queues()->set_waiting(static_cast<uint32_t>(load.num_waiting));
    l->mutable_queues()->set_preempted(static_cast<uint32_t>(load.num_swapped));
  }
  return FinishUnary(context, absl::OkStatus());
}

}  // namespace glimpse::server
