#include "scheduler/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "model/sampling_params.h"
#include "model/step_batch.h"
#include "scheduler/output_text.h"

namespace glimpse::scheduler {
namespace {

int64_t MicrosBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
}

}  // namespace

absl::Status Engine::ValidateOptions(const EngineOptions& options) {
  if (options.num_kv_blocks < 1 || options.block_size < 1 || options.block_size > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache needs at least one block and a block size in 1..1024 (got ",
        options.num_kv_blocks, " blocks of ", options.block_size, ")"));
  }
  if (options.scheduler.preemption_mode == PreemptionMode::kSwap && options.num_host_blocks < 1) {
    return absl::InvalidArgumentError("swap preemption needs host swap space (num_host_blocks > 0)");
  }
  if (options.sampling_threads < 1 || options.sampling_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling threads must be in 1..256 (got ", options.sampling_threads, ")"));
  }
  if (options.step_logits.max_device_top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the device top-k limit must be >= 0, 0 to turn it off (got ",
                     options.step_logits.max_device_top_k, ")"));
  }
  if (options.step_logits.nucleus_candidates < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the nucleus candidates must be >= 0, 0 to turn them off (got ",
                     options.step_logits.nucleus_candidates, ")"));
  }
  if (options.step_logits.adjusted_extra_candidates < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the extra candidates of biased or penalised rows must be >= 0, 0 to turn them off (got ",
        options.step_logits.adjusted_extra_candidates, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(model::StepRunner& runner,
                                                       const model::Tokenizer& tokenizer,
                                                       const EngineOptions& options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  return std::unique_ptr<Engine>(new Engine(nullptr, runner, tokenizer, options));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(model::LlamaModel& model,
                                                       const model::Tokenizer& tokenizer,
                                                       const EngineOptions& options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  auto runner = std::make_unique<model::LlamaStepRunner>(model);
  model::StepRunner& ref = *runner;
  return std::unique_ptr<Engine>(new Engine(std::move(runner), ref, tokenizer, options));
}

Engine::Engine(std::unique_ptr<model::StepRunner> owned_runner, model::StepRunner& runner,
               const model::Tokenizer& tokenizer, const EngineOptions& options)
    : owned_runner_(std::move(owned_runner)),
      runner_(runner),
      tokenizer_(tokenizer),
      options_(options) {
  runner_.AllocateKvCache(options.num_kv_blocks, options.block_size, options.num_host_blocks);
  // Activations for the step budget now: a step that grew them later would move them and
  // leave every CUDA graph captured before unusable. Logits rows: one per running sequence (a
  // step asking for more, e.g. for prompt logprobs, grows them then).
  runner_.ReserveActivations(options.scheduler.max_step_tokens,
                             options.scheduler.max_running_sequences);
  // And the host memory whole rows land in (page-locked on a GPU: pinning it mid-serving would
  // stall the first step that brings back or fetches whole rows).
  step_logits_.Reserve(runner_, static_cast<size_t>(options.scheduler.max_running_sequences),
                       runner_.config().vocab_size);
  kvcache::KvCacheManagerOptions kv_options;
  kv_options.num_blocks = options.num_kv_blocks;
  kv_options.block_size = options.block_size;
  kv_options.num_host_blocks = options.num_host_blocks;
  kv_manager_ = std::make_unique<kvcache::KvCacheManager>(kv_options);
  scheduler_ = std::make_unique<Scheduler>(*kv_manager_, options.scheduler);
  if (options.sampling_threads > 1) {
    // A job per sampled step at most two (the draws, then the fetched rows' draws), steps
    // milliseconds apart on a GPU: a spin long enough to bridge the two, not the step.
    constexpr std::chrono::microseconds kSamplingPoolSpin{50};
    sampling_pool_ =
        std::make_unique<kernels::cpu::ThreadPool>(options.sampling_threads, kSamplingPoolSpin);
  }
  absl::MutexLock lock(&mu_);
  load_.kv_blocks_total = options.num_kv_blocks;
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  CHECK(!thread_.joinable());
  thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // The thread is gone: fail whatever is left, including requests never admitted.
  for (auto& [id, request] : requests_) {
    RequestOutput out;
    out.done = true;
    out.status = absl::UnavailableError("the server is shutting down");
    request->stream->Push(std::move(out));
  }
  requests_.clear();
  absl::MutexLock lock(&mu_);
  for (auto& stream : inbox_streams_) {
    RequestOutput out;
    out.done = true;
    out.status = absl::UnavailableError("the server is shutting down");
    stream->Push(std::move(out));
  }
  inbox_.clear();
  inbox_streams_.clear();
  in_flight_ids_.clear();
}

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(EngineRequest request) {
  const model::LlamaConfig& config = runner_.config();
  const int64_t prompt = static_cast<int64_t>(request.prompt_tokens.size());
  if (prompt == 0) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t t : request.prompt_tokens) {
    if (t < 0 || t >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", t, " is outside the vocabulary of ", config.vocab_size));
    }
  }
  if (request.n < 1 || request.n > 16) {
    return absl::InvalidArgumentError(absl::StrCat("n must be in 1..16, got ", request.n));
  }
  if (request.stopping.max_tokens < 1) {
    return absl::InvalidArgumentError("max_tokens must be at least 1");
  }
  if (prompt + request.stopping.max_tokens > config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context_length_exceeded: the prompt has ", prompt, " tokens and max_tokens is ",
        request.stopping.max_tokens, ", but the model's context is ", config.context_length,
        " tokens"));
  }
  const int64_t pool_tokens = static_cast<int64_t>(options_.num_kv_blocks) * options_.block_size;
  if (prompt + 1 > pool_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context_length_exceeded: the prompt has ", prompt,
        " tokens but the whole KV cache holds ", pool_tokens, " tokens"));
  }
  if (request.stopping.min_tokens < 0 ||
      request.stopping.min_tokens > request.stopping.max_tokens) {
    return absl::InvalidArgumentError("min_tokens must be in 0..max_tokens");
  }
  // The samplers' top logprobs are the output's (what the step's plan reads too).
  request.sampling.num_logprobs = std::max(0, request.output.num_logprobs);
  if (absl::Status s = model::ValidateSamplingParams(request.sampling, config.vocab_size);
      !s.ok()) {
    return s;
  }
  auto stream = std::make_shared<RequestStream>(request.request_id);
  absl::MutexLock lock(&mu_);
  if (stop_ || draining_.load()) {
    return absl::UnavailableError("the server is draining or shutting down; retry elsewhere");
  }
  if (in_flight_ids_.contains(request.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request id '", request.request_id, "' is already in flight"));
  }
  if (num_waiting_requests_ >= options_.max_waiting_requests) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the waiting queue is full (", options_.max_waiting_requests, " requests); retry later"));
  }
  ++num_waiting_requests_;
  in_flight_ids_.insert(request.request_id);
  inbox_.push_back(std::move(request));
  inbox_streams_.push_back(stream);
  return stream;
}

bool Engine::Abort(const std::string& request_id, std::string reason) {
  absl::MutexLock lock(&mu_);
  if (!in_flight_ids_.contains(request_id)) return false;
  abort_inbox_.push_back({request_id, std::move(reason)});
  return true;
}

EngineLoad Engine::GetLoad() const {
  absl::MutexLock lock(&mu_);
  EngineLoad load = load_;
  load.num_waiting += static_cast<int32_t>(inbox_.size());
  load.num_generation_tokens = num_generation_tokens_.load(std::memory_order_relaxed);
  return load;
}

void Engine::StartDrain() { draining_.store(true); }

bool Engine::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](Engine* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) { return e->in_flight_ids_.empty(); },
          this),
      timeout);
}

void Engine::Loop() {
  std::vector<EngineRequest> requests;
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<AbortOrder> aborts;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // Sleep only when there is nothing to run; poll the inbox between steps otherwise.
      if (requests_.empty()) {
        mu_.Await(absl::Condition(
            +[](Engine* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
              return e->stop_ || !e->inbox_.empty() || !e->abort_inbox_.empty();
            },
            this));
      }
      if (stop_) break;
      requests.swap(inbox_);
      streams.swap(inbox_streams_);
      aborts.swap(abort_inbox_);
    }
    AdmitInbox(requests, streams, aborts);
    CheckCancellations(Clock::now());
    ReleaseFinished();
    if (!requests_.empty()) Step();
    ReleaseFinished();
    PublishLoad();
  }
  // Stopping: what the last step sampled still reaches its clients, before Stop fails them.
  EmitDeferredOutputs();
}

void Engine::AdmitInbox(std::vector<EngineRequest>& requests,
                        std::vector<std::shared_ptr<RequestStream>>& streams,
                        std::vector<AbortOrder>& aborts) {
  const Clock::time_point now = Clock::now();
  for (size_t i = 0; i < requests.size(); ++i) {
    auto request = std::make_unique<Request>();
    request->spec = std::move(requests[i]);
    request->stream = std::move(streams[i]);
    request->arrival_order = next_arrival_++;
    request->arrival_time = now;
    auto seq = std::make_unique<Sequence>();
    seq->request = request.get();
    seq->index = 0;
    seq->key = next_key_++;
    seq->tokens = request->spec.prompt_tokens;
    seq->num_prompt_tokens = static_cast<int32_t>(seq->tokens.size());
    Sequence* raw = seq.get();
    request->sequences.push_back(std::move(seq));
    scheduler_->AddWaiting(raw);
    const std::string id = request->spec.request_id;
    {
      absl::MutexLock lock(&mu_);
      load_.num_prompt_tokens += static_cast<int64_t>(request->spec.prompt_tokens.size());
    }
    requests_[id] = std::move(request);
  }
  requests.clear();
  streams.clear();
  for (const AbortOrder& order : aborts) {
    auto it = requests_.find(order.request_id);
    if (it == requests_.end() || it->second->finished()) continue;
    FinishRequest(it->second.get(), FinishReason::kAbort, order.reason, absl::OkStatus());
  }
  aborts.clear();
}

void Engine::CheckCancellations(Clock::time_point now) {
  for (auto& [id, request] : requests_) {
    Request* r = request.get();
    if (r->finished()) continue;
    const SchedulingOptions& s = r->spec.scheduling;
    if (r->stream->cancelled()) {
      FinishRequest(r, FinishReason::kAbort, "the client cancelled the request",
                    absl::CancelledError("the client cancelled the request"));
    } else if (s.deadline.has_value() && now >= *s.deadline) {
      FinishRequest(r, FinishReason::kAbort, "deadline exceeded",
                    absl::DeadlineExceededError("the request's deadline passed before it finished"));
    } else if (s.timeout.has_value() && now - r->arrival_time >= *s.timeout) {
      FinishRequest(r, FinishReason::kTimeout,
                    absl::StrCat("the request's timeout of ", s.timeout->count(), " ms passed"),
                    absl::OkStatus());
    }
  }
}

void Engine::ExecuteCopies(const std::vector<KvCopy>& copies) {
  // One call for the whole step: a split runner wakes its ranks once, not once per block.
  kv_moves_.clear();
  for (const KvCopy& c : copies) {
    model::KvBlockMove::Kind kind = model::KvBlockMove::Kind::kCopy;
    switch (c.kind) {
      case KvCopy::Kind::kDeviceToDevice: kind = model::KvBlockMove::Kind::kCopy; break;
      case KvCopy::Kind::kDeviceToHost: kind = model::KvBlockMove::Kind::kSwapOut; break;
      case KvCopy::Kind::kHostToDevice: kind = model::KvBlockMove::Kind::kSwapIn; break;
    }
    kv_moves_.push_back({kind, c.src, c.dst});
  }
  runner_.MoveKvBlocks(kv_moves_);
}

void Engine::Step() {
  const Clock::time_point now = Clock::now();
  SchedulerOutput plan = scheduler_->Schedule(now);
  if (plan.scheduled.empty()) {
    EmitDeferredOutputs();  // no forward pass to do it during
    // Nothing could run: a sequence has outgrown the whole KV pool (the last one preempted,
    // or, with nothing running, any waiting one too long for the pool). End it rather than
    // spin; the client gets its partial output with finish reason "length".
    const int64_t pool_tokens = static_cast<int64_t>(options_.num_kv_blocks) * options_.block_size;
    Sequence* stuck = plan.preempted.empty() ? nullptr : plan.preempted.back();
    for (auto it = requests_.begin(); stuck == nullptr && it != requests_.end(); ++it) {
      for (auto& seq : it->second->sequences) {
        if (seq->state == SequenceState::kWaiting &&
            static_cast<int64_t>(seq->tokens.size()) >= pool_tokens) {
          stuck = seq.get();
          break;
        }
      }
    }
    if (stuck != nullptr) {
      FinishSequence(stuck, FinishReason::kLength, "the KV cache cannot hold this sequence");
      EmitOutputs({stuck->request});
    }
    return;
  }
  ExecuteCopies(plan.copies);

  model::StepBatch batch;
  std::vector<Sequence*> logits_owner;
  int32_t num_decoding = 0;
  for (const ScheduledSequence& s : plan.scheduled) {
    Sequence* seq = s.seq;
    if (!seq->request->scheduled_once) {
      seq->request->scheduled_once = true;
      seq->request->first_scheduled_time = now;
      if (options_.observer != nullptr) {
        options_.observer->OnRequestScheduled(
            std::chrono::duration<double>(now - seq->request->arrival_time).count());
      }
    }
    if (s.num_tokens == 1 && !seq->is_prefilling()) ++num_decoding;
    batch.AddSequence(std::span<const int32_t>(seq->tokens).subspan(seq->num_computed_tokens, s.num_tokens),
                      seq->num_computed_tokens, kv_manager_->BlockTable(seq->key),
                      options_.block_size, s.wants_logits);
    if (s.wants_logits) logits_owner.push_back(seq);
  }
  const int32_t vocab = runner_.config().vocab_size;
  // Only what the rows' samples need comes back (StepLogits: the argmax, a few candidates or
  // the rows).
  step_logits_.Begin(options_.step_logits, vocab);
  for (const Sequence* seq : logits_owner) {
    // spec.sampling.num_logprobs is the output's (Submit), as in the row's sampler.
    const EngineRequest& spec = seq->request->spec;
    step_logits_.AddRow(spec.sampling, spec.output.num_logprobs >= 0);
  }
  step_logits_.Finish();
  // The last step's outputs are emitted while this one computes, and in any case before its
  // tokens are sampled (so a request's outputs stay in order).
  if (!deferred_outputs_.empty()) {
    emit_work_.Reset([this] { EmitDeferredOutputs(); });
    runner_.OverlapNextForward(&emit_work_);
  }
  const absl::Status status = step_logits_.Forward(runner_, batch);
  runner_.OverlapNextForward(nullptr);
  emit_work_.Run();    // if the runner did not
  CHECK(status.ok());  // The scheduler builds valid batches; anything else is a bug.
  scheduler_->OnStepComputed(plan);
  {
    // Counted before any output of this step is visible, so a client that saw its output
    // also sees the work that produced it.
    absl::MutexLock lock(&mu_);
    ++load_.num_steps;
    load_.num_forward_tokens += plan.num_tokens;
    load_.num_preemptions += static_cast<int64_t>(plan.preempted.size());
    if (num_decoding > 0) {
      ++load_.num_decode_steps;
      load_.sum_decode_batch += num_decoding;
      load_.max_decode_batch = std::max(load_.max_decode_batch, num_decoding);
    }
    PublishLoadLocked();
  }
  if (options_.observer != nullptr) {
    options_.observer->OnStep(plan.num_tokens, num_decoding,
                              static_cast<int32_t>(plan.preempted.size()));
  }

  std::vector<Request*> touched;
  SampleStep(logits_owner, Clock::now());
  for (Sequence* seq : logits_owner) touched.push_back(seq->request);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  if (!options_.overlap_outputs) {
    EmitOutputs(touched);
    return;
  }
  // Finished requests' outputs now (they are released after this step); the rest during the
  // next step's forward pass.
  auto unfinished = std::partition(touched.begin(), touched.end(),
                                   [](const Request* r) { return r->finished(); });
  deferred_outputs_.assign(unfinished, touched.end());
  touched.erase(unfinished, touched.end());
  EmitOutputs(touched);
}

Sequence* Engine::ForkChild(Request* request, int32_t index) {
  Sequence* parent = request->sequences[0].get();
  auto child = std::make_unique<Sequence>();
  child->request = request;
  child->index = index;
  child->key = next_key_++;
  child->tokens.assign(parent->tokens.begin(), parent->tokens.begin() + parent->num_prompt_tokens);
  child->num_prompt_tokens = parent->num_prompt_tokens;
  child->num_cached_tokens = parent->num_cached_tokens;
  Sequence* raw = child.get();
  request->sequences.push_back(std::move(child));
  scheduler_->AddForked(parent, raw);
  return raw;
}

void Engine::SampleStep(const std::vector<Sequence*>& logits_owner, Clock::time_point now) {
  const int32_t vocab = runner_.config().vocab_size;
  std::vector<SampleJob> jobs;
  jobs.reserve(logits_owner.size());
  for (size_t i = 0; i < logits_owner.size(); ++i) PrepareSampling(logits_owner[i], i, now, jobs);
  std::vector<model::Sampler::SampleResult> samples(jobs.size());
  const int64_t n = static_cast<int64_t>(jobs.size());
  const bool reduced = step_logits_.kind() == model::StepLogits::Kind::kTopK;
  if (reduced) {
    // The few logits biased or penalised rows need besides their candidates, in one go.
    std::vector<size_t> rows(jobs.size());
    std::vector<model::Sampler*> samplers(jobs.size());
    for (size_t j = 0; j < jobs.size(); ++j) {
      rows[j] = jobs[j].row;
      samplers[j] = jobs[j].seq->sampler.get();
    }
    step_logits_.Gather(rows, samplers);
  }
  std::vector<uint8_t> drawn(jobs.size(), 0);
  auto draw = [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      std::optional<model::Sampler::SampleResult> sample =
          step_logits_.TrySample(*jobs[j].seq->sampler, jobs[j].row);
      if (!sample.has_value()) continue;  // nothing drawn: fetched below
      samples[j] = *std::move(sample);
      drawn[j] = 1;
    }
  };
  // Whole rows past the size where a pool pays, or candidate steps with enough rows whose
  // bias or penalties act over a nucleus (~50 us each at a 128k vocabulary). Never argmax
  // steps: a row's draw there is the token it brought back, far less work than waking the
  // pool (whose workers then spin, taking CPUs from the engine thread).
  bool parallel = false;
  if (sampling_pool_ != nullptr && n > 1) {
    switch (step_logits_.kind()) {
      case model::StepLogits::Kind::kRows:
        parallel = n * vocab >= options_.parallel_sampling_min_elements;
        break;
      case model::StepLogits::Kind::kTopK:
        parallel = step_logits_.num_adjusted_nucleus_rows() >= kParallelAdjustedNucleusRows;
        break;
      case model::StepLogits::Kind::kArgMax:
        break;
    }
  }
  if (parallel) {
    // Distinct samplers (each its own RNG and history; scratch is thread-local): no shared
    // state, so the split cannot change a token.
    sampling_pool_->ParallelFor(n, draw);
  } else {
    draw(0, n);
  }
  // The rows those did not decide, fetched in one copy and sampled whole (on the pool when
  // they are many, as whole-row steps are).
  bool fetched_parallel = false;
  std::vector<size_t> left;
  std::vector<size_t> left_rows;
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (drawn[j]) continue;
    left.push_back(j);
    left_rows.push_back(jobs[j].row);
  }
  if (!left.empty()) {
    step_logits_.Fetch(left_rows);
    auto draw_fetched = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const size_t j = left[i];
        samples[j] = step_logits_.SampleFetched(*jobs[j].seq->sampler, jobs[j].row);
      }
    };
    const int64_t num_left = static_cast<int64_t>(left.size());
    if (sampling_pool_ != nullptr && num_left > 1 &&
        num_left * vocab >= options_.parallel_sampling_min_elements) {
      sampling_pool_->ParallelFor(num_left, draw_fetched);
      fetched_parallel = true;
    } else {
      draw_fetched(0, num_left);
    }
  }
  {
    absl::MutexLock lock(&mu_);
    load_.num_nucleus_rows_decided = step_logits_.num_nucleus_rows_decided();
    load_.num_adjusted_rows_decided = step_logits_.num_adjusted_rows_decided();
    load_.num_sampled_rows_fetched = step_logits_.num_rows_fetched();
    load_.num_sampled_rows_gathered = step_logits_.num_rows_gathered();
    if (parallel || fetched_parallel) ++load_.num_parallel_sampled_steps;
  }
  for (size_t j = 0; j < jobs.size(); ++j) AppendToken(jobs[j].seq, samples[j]);
}

void Engine::PrepareSampling(Sequence* seq, size_t row, Clock::time_point now,
                             std::vector<SampleJob>& jobs) {
  Request* request = seq->request;
  const EngineRequest& spec = request->spec;
  if (seq->sampler == nullptr) {
    // First token of sequence 0: set up every sequence's sampler; forks share the prompt.
    const uint64_t base_seed =
        spec.sampling.seed.value_or(options_.seed + static_cast<uint64_t>(request->arrival_order));
    std::vector<Sequence*> seqs = {seq};
    for (int32_t i = 1; i < spec.n; ++i) seqs.push_back(ForkChild(request, i));
    for (Sequence* s : seqs) {
      model::SamplingParams params = spec.sampling;
      params.seed = base_seed + static_cast<uint64_t>(s->index);
      // Without logprobs asked for, a greedy sample skips the log-softmax (most of its cost).
      s->sampler = std::make_unique<model::Sampler>(params, runner_.config().vocab_size, base_seed,
                                                    spec.output.num_logprobs >= 0);
      s->sampler->AddPromptTokens(std::span<const int32_t>(s->tokens).first(s->num_prompt_tokens));
      OutputTextOptions text_options;
      text_options.stop_strings = spec.stopping.stop_strings;
      text_options.stop_token_ids = spec.stopping.stop_token_ids;
      text_options.ignore_eos = spec.stopping.ignore_eos;
      text_options.include_stop_in_output = spec.stopping.include_stop_in_output;
      text_options.skip_special_tokens = spec.output.skip_special_tokens;
      text_options.min_tokens = spec.stopping.min_tokens;
      text_options.render_text = spec.output.detokenize;
      s->output_text = std::make_unique<OutputText>(tokenizer_, std::move(text_options));
    }
    if (!request->got_first_token) {
      request->got_first_token = true;
      request->first_token_time = now;
      if (options_.observer != nullptr) {
        options_.observer->OnFirstToken(
            std::chrono::duration<double>(now - request->arrival_time).count());
      }
    }
    for (Sequence* s : seqs) {
      s->last_token_time = now;
      jobs.push_back({s, row});
    }
    return;
  }
  if (options_.observer != nullptr) {
    options_.observer->OnInterTokenLatency(
        std::chrono::duration<double>(now - seq->last_token_time).count());
  }
  seq->last_token_time = now;
  jobs.push_back({seq, row});
}

void Engine::AppendToken(Sequence* seq, const model::Sampler::SampleResult& sample) {
  seq->sampler->Accept(sample.token);
  seq->tokens.push_back(sample.token);
  // Per token: a relaxed atomic rather than the load lock.
  num_generation_tokens_.fetch_add(1, std::memory_order_relaxed);
  SequenceDelta& delta = seq->pending;
  delta.index = seq->index;
  delta.token_ids.push_back(sample.token);
  if (seq->request->spec.output.num_logprobs >= 0) {
    delta.logprobs.push_back({sample.token, sample.logprob, sample.top_logprobs});
  }
  OutputText& output_text = *seq->output_text;
  const StopDecision* stop = nullptr;
  AppendResult appended;
  if (output_text.has_stop_strings()) {
    // The text decides: render it now.
    appended = output_text.Append(sample.token);
    if (seq->request->spec.output.detokenize) delta.text += appended.text;
    stop = &appended.stop;
  } else {
    // The token's id decides; its text is rendered as the output goes out (EmitOutputs), off
    // the path between two forward passes when outputs overlap the next one.
    stop = &output_text.AppendDeferred(sample.token);
  }
  if (stop->stopped()) {
    StopMatch& m = delta.matched_stop;
    switch (stop->kind) {
      case StopDecision::Kind::kNone: break;
      case StopDecision::Kind::kEos: m.kind = StopMatch::Kind::kEosToken; break;
      case StopDecision::Kind::kStopToken: m.kind = StopMatch::Kind::kStopToken; break;
      case StopDecision::Kind::kStopString: m.kind = StopMatch::Kind::kStopString; break;
    }
    m.token_id = stop->token;
    m.stop_string = stop->stop_string;
    FinishSequence(seq, FinishReason::kStop, "");
  } else if (seq->num_generated() >= seq->request->spec.stopping.max_tokens) {
    FinishSequence(seq, FinishReason::kLength, "");
  }
}

void Engine::FinishSequence(Sequence* seq, FinishReason reason, std::string message) {
  if (seq->state == SequenceState::kFinished) return;
  scheduler_->Remove(seq);
  Request* request = seq->request;
  SequenceDelta& delta = seq->pending;
  delta.index = seq->index;
  if (seq->output_text != nullptr && reason != FinishReason::kStop &&
      request->spec.output.detokenize) {
    delta.text += seq->output_text->Finish();
  }
  delta.finished = true;
  delta.finish_reason = reason;
  delta.message = std::move(message);
  delta.usage.prompt_tokens = seq->num_prompt_tokens;
  delta.usage.completion_tokens = std::max(0, seq->num_generated());
  delta.usage.cached_tokens = seq->num_cached_tokens;
  const Clock::time_point now = Clock::now();
  GenerationStats& stats = delta.stats;
  if (request->scheduled_once) {
    stats.queue_time_us = MicrosBetween(request->arrival_time, request->first_scheduled_time);
  }
  if (request->got_first_token) {
    stats.ttft_us = MicrosBetween(request->arrival_time, request->first_token_time);
  }
  stats.e2e_us = MicrosBetween(request->arrival_time, now);
  stats.num_preemptions = seq->num_preemptions;
  stats.peak_kv_blocks = seq->peak_blocks;
  ++request->num_finished;
  if (request->finished() && options_.observer != nullptr) {
    int32_t generated = 0;
    for (const auto& s : request->sequences) generated += std::max(0, s->num_generated());
    options_.observer->OnRequestFinished(
        std::chrono::duration<double>(now - request->arrival_time).count(),
        static_cast<int32_t>(request->spec.prompt_tokens.size()), generated);
  }
}

void Engine::FinishRequest(Request* request, FinishReason reason, const std::string& message,
                           absl::Status status) {
  // Sequences 1..n-1 may not exist yet (the prompt was not finished): create their slots so
  // that every index gets its completion.
  while (static_cast<int32_t>(request->sequences.size()) < request->spec.n) {
    auto seq = std::make_unique<Sequence>();
    seq->request = request;
    seq->index = static_cast<int32_t>(request->sequences.size());
    seq->key = next_key_++;
    seq->num_prompt_tokens = static_cast<int32_t>(request->spec.prompt_tokens.size());
    seq->tokens = request->spec.prompt_tokens;
    request->sequences.push_back(std::move(seq));
  }
  for (auto& seq : request->sequences) FinishSequence(seq.get(), reason, message);
  if (!status.ok()) {
    // The client will not read the partial output: end the stream with the error.
    RequestOutput out;
    out.done = true;
    out.status = std::move(status);
    PushOutput(request, std::move(out));
    return;
  }
  EmitOutputs({request});
}

void Engine::EmitOutputs(const std::vector<Request*>& touched) {
  for (Request* request : touched) {
    RequestOutput out;
    const OutputOptions& o = request->spec.output;
    if (!request->prompt_info_sent && request->got_first_token) {
      request->prompt_info_sent = true;
      PromptInfo info;
      if (o.return_prompt_token_ids) info.token_ids = request->spec.prompt_tokens;
      info.prompt_tokens = static_cast<int32_t>(request->spec.prompt_tokens.size());
      info.cached_tokens = request->sequences[0]->num_cached_tokens;
      if (request->scheduled_once) {
        info.queue_time_us = MicrosBetween(request->arrival_time, request->first_scheduled_time);
      }
      out.prompt = std::move(info);
    }
    for (auto& seq : request->sequences) {
      SequenceDelta& d = seq->pending;
      // The text AppendToken left (none kept unless the request detokenizes: render_text).
      if (seq->output_text != nullptr) d.text += seq->output_text->TakeText();
      const bool has_news = !d.token_ids.empty() || !d.text.empty() || d.finished;
      if (seq->completion_sent || !has_news || (o.final_only && !d.finished)) continue;
      seq->completion_sent = d.finished;
      out.deltas.push_back(std::move(d));
      d = SequenceDelta();
      d.index = seq->index;
    }
    out.done = request->finished();
    if (out.prompt.has_value() || !out.deltas.empty() || out.done) {
      PushOutput(request, std::move(out));
    }
  }
}

void Engine::EmitDeferredOutputs() {
  // None finished: ReleaseFinished dropped those (their FinishRequest emitted them whole), and
  // EmitOutputs reaches only the streams, never this list.
  EmitOutputs(deferred_outputs_);
  deferred_outputs_.clear();
}

void Engine::PushOutput(Request* request, RequestOutput output) {
  if (output.done) {
    // Before the client can see the end: the id is free again and the load snapshot shows
    // the request's blocks released.
    absl::MutexLock lock(&mu_);
    in_flight_ids_.erase(request->spec.request_id);
    PublishLoadLocked();
  }
  request->stream->Push(std::move(output));
}

void Engine::ReleaseFinished() {
  bool purged = false;
  for (auto it = requests_.begin(); it != requests_.end();) {
    auto current = it++;
    if (!current->second->finished()) continue;
    if (!purged) {
      // A deferred request that finished since was emitted then; it must not outlive this.
      std::erase_if(deferred_outputs_, [](const Request* r) { return r->finished(); });
      purged = true;
    }
    requests_.erase(current);
  }
}

void Engine::PublishLoad() {
  absl::MutexLock lock(&mu_);
  PublishLoadLocked();
}

void Engine::PublishLoadLocked() {
  int32_t waiting_requests = 0;
  int64_t waiting_tokens = 0;
  for (auto& [id, request] : requests_) {
    if (!request->scheduled_once && !request->finished()) ++waiting_requests;
    for (const auto& seq : request->sequences) {
      if (seq->state == SequenceState::kWaiting) waiting_tokens += seq->num_uncomputed();
    }
  }
  load_.num_waiting_tokens = waiting_tokens;
  load_.kv_blocks_cached_free = kv_manager_->num_cached_free_blocks();
  load_.num_running = scheduler_->num_running();
  load_.num_waiting = scheduler_->num_waiting();
  load_.num_swapped = scheduler_->num_swapped();
  load_.num_requests = static_cast<int32_t>(in_flight_ids_.size());
  load_.kv_blocks_used = kv_manager_->num_used_blocks();
  const kvcache::PrefixCacheStats& stats = kv_manager_->prefix_cache_stats();
  load_.prefix_cache_queried_tokens = stats.queried_tokens;
  load_.prefix_cache_hit_tokens = stats.hit_tokens;
  num_waiting_requests_ = waiting_requests + static_cast<int32_t>(inbox_.size());
}

}  // namespace glimpse::scheduler
