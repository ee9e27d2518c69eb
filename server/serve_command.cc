#include "server/serve_command.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "kernels/cpu/thread_pool.h"
#include "scheduler/engine.h"
#include "server/common_flags.h"
#include "server/engine_metrics_observer.h"
#include "server/gateway_command.h"
#include "server/grpc_service.h"
#include "server/health.h"
#include "server/http_server.h"
#include "server/kv_budget.h"
#include "server/loaded_model.h"
#include "server/metrics.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

// Defined with `glimpse generate` (server/generate_command.cc); serve reads it too.
ABSL_DECLARE_FLAG(int32_t, block_size);

ABSL_FLAG(int32_t, port, 50051,
          "serve: TCP port of the gRPC server; 0 picks a free port (the line 'glimpse serve: "
          "listening on HOST:PORT' on stdout says which).");
ABSL_FLAG(std::string, host, "127.0.0.1",
          "serve: address to listen on. The default accepts local clients only; use 0.0.0.0 "
          "(or ::) to serve other machines, e.g. in a container.");
ABSL_FLAG(std::string, served_model_name, "",
          "serve: the model name clients send (GenerateRequest.model); empty: the --model file "
          "name without its directory and .gguf suffix.");
ABSL_FLAG(int64_t, kv_cache_bytes, int64_t{1} << 30,
          "serve: memory for the KV cache pool in bytes, per device: with "
          "--tensor_parallel_size=N each of the N ranks holds its share of the KV heads in this "
          "much (so the pool holds N times the blocks of one unsplit device; CPU ranks all use "
          "host memory, N times this in all). Capped at what --max_num_seqs full-context "
          "sequences can use. Ignored when --kv_cache_fraction is set.");
ABSL_FLAG(double, kv_cache_fraction, 0.0,
          "serve: if > 0, size the KV cache pool by this fraction (0, 0.9] instead of "
          "--kv_cache_bytes: with --device=cuda, of the GPU memory free once the weights are "
          "loaded (per device, the least free of the N; the rest stays for activations, CUDA "
          "graphs and cuBLAS); with --device=cpu, of physical memory (in all: with N CPU ranks "
          "each gets 1/N of it).");
ABSL_FLAG(int32_t, max_num_seqs, 64, "serve: most sequences running in one engine step.");
ABSL_FLAG(int32_t, max_num_batched_tokens, 512,
          "serve: token budget of one engine step (decode tokens plus prefill chunks).");
ABSL_FLAG(int32_t, max_waiting_requests, 256,
          "serve: bound of the waiting queue; requests beyond it get RESOURCE_EXHAUSTED.");
ABSL_FLAG(int32_t, sampling_threads, 0,
          "serve: threads that sample a step's logits rows, the engine thread included; 0: "
          "the CPUs this process may use, at most 8. Rows are sampled in parallel once rows x "
          "vocabulary reach 2^20 (e.g. 8 rows of a 128k vocabulary); any count draws the same "
          "tokens.");
ABSL_FLAG(bool, overlap_outputs, true,
          "serve: emit a step's outputs while the next step computes (on a GPU the host "
          "builds and pushes them during the forward pass instead of the device waiting for "
          "them); false: before the next step is scheduled. Tokens reach each stream in order "
          "either way.");
ABSL_FLAG(int32_t, write_threads, 0,
          "serve: threads that build the Generate responses and start their gRPC writes, so "
          "that the engine thread, which must get on with the next step, does not; 0: one per "
          "8 CPUs, 1 to 4.");
ABSL_FLAG(int32_t, device_top_k, glimpse::server::kAutoCandidates,
          "serve: steps whose every row samples greedily or with top-k (logprobs come with "
          "the row's normalizer; a logit bias or penalties with --adjusted_extra_candidates "
          "more) and top_k up to this select each row's candidates where the logits are (on "
          "a GPU k pairs a row come back instead of the row) and sample from them alone: the "
          "same tokens. 0 brings every row back whole. -1 (default): 1024 with "
          "--device=cuda, 0 with --device=cpu (the rows are in host memory already; "
          "selecting there costs more than it saves).");
ABSL_FLAG(int32_t, adjusted_extra_candidates, 32,
          "serve: a greedy or top-k row with a logit bias or repetition, frequency or "
          "presence penalties brings back this many candidates beyond its top_k (and top "
          "logprobs), for the tokens the bias or penalties push out of its top k; when those "
          "do not decide, the few biased or generated tokens that could still win are "
          "gathered, and only then the row: the same tokens either way. More decide more "
          "rows at once but cost more to bring back. 0 brings such rows back whole. Used "
          "only with --device_top_k > 0.");
ABSL_FLAG(int32_t, nucleus_candidates, glimpse::server::kAutoCandidates,
          "serve: rows sampling without top-k — with top-p, min-p or plain temperature "
          "(logprobs come with the row's normalizer; the raw logits of the tokens a logit bias "
          "or penalties touch are gathered besides) — bring back "
          "this many candidates and their weight sum (at most --device_top_k) and sample from "
          "those when they decide the draw, else from their row fetched after the step: the "
          "same tokens. More decide more rows but cost more to bring back and sort. 0 brings such "
          "rows back whole. -1 (default): 256 with --device=cuda, 0 with --device=cpu.");
ABSL_FLAG(std::string, preemption_mode, "recompute",
          "serve: what happens to a preempted sequence's KV when blocks run out: 'recompute' "
          "(free it, recompute later) or 'swap' (copy it to host memory, see "
          "--swap_space_bytes).");
ABSL_FLAG(int64_t, swap_space_bytes, int64_t{1} << 30,
          "serve: host memory for swapped-out KV blocks with --preemption_mode=swap (in all, "
          "over every tensor-parallel rank).");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "serve: reuse the KV of shared prompt prefixes across requests.");
ABSL_FLAG(int32_t, drain_timeout_seconds, 30,
          "serve: on SIGTERM/SIGINT, how long in-flight requests may run before they are "
          "aborted and the server exits.");
ABSL_FLAG(int32_t, http_port, 0,
          "serve: if > 0, also run the OpenAI-compatible HTTP gateway in-process on "
          "http://HOST:PORT/v1 (0 = off); see `glimpse gateway` for its flags.");
ABSL_FLAG(int32_t, metrics_port, 0,
          "serve: if > 0, serve Prometheus metrics on http://HOST:PORT/metrics (0 = off).");

namespace glimpse::server {
namespace {

// The validated serve flags.
struct ServeConfig {
  std::string model_path;
  std::string host;
  int32_t port = 0;
  std::string served_model_name;
  scheduler::EngineOptions engine;
  int64_t kv_cache_bytes = 0;    // --kv_cache_bytes: per device.
  double kv_cache_fraction = 0;  // --kv_cache_fraction (KvBudgetPerDevice); 0: unset.
  int64_t swap_bytes = 0;  // Host memory, all ranks together.
  absl::Duration drain_timeout;
  std::string preemption_mode;
  int32_t write_threads = 0;  // --write_threads; 0: automatic.
};

absl::StatusOr<ServeConfig> ConfigFromFlags() {
  ServeConfig c;
  c.model_path = absl::GetFlag(FLAGS_model);
  c.host = absl::GetFlag(FLAGS_host);
  c.port = absl::GetFlag(FLAGS_port);
  if (c.port < 0 || c.port > 65535) return absl::InvalidArgumentError("--port must be in 0..65535");
  c.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (c.served_model_name.empty()) {
    c.served_model_name = c.model_path.substr(c.model_path.find_last_of('/') + 1);
    const std::string suffix = ".gguf";
    if (c.served_model_name.size() > suffix.size() &&
        c.served_model_name.compare(c.served_model_name.size() - suffix.size(), suffix.size(),
                                    suffix) == 0) {
      c.served_model_name.resize(c.served_model_name.size() - suffix.size());
    }
  }
  c.engine.block_size = absl::GetFlag(FLAGS_block_size);
  if (c.engine.block_size < 1 || c.engine.block_size > 1024) {
    return absl::InvalidArgumentError("--block_size must be in 1..1024");
  }
  scheduler::SchedulerOptions& s = c.engine.scheduler;
  s.max_running_sequences = absl::GetFlag(FLAGS_max_num_seqs);
  s.max_step_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens);
  s.prefill_chunk_tokens = s.max_step_tokens;
  s.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  if (s.max_running_sequences < 1) return absl::InvalidArgumentError("--max_num_seqs must be >= 1");
  if (s.max_step_tokens < 1) return absl::InvalidArgumentError("--max_num_batched_tokens must be >= 1");
  c.engine.max_waiting_requests = absl::GetFlag(FLAGS_max_waiting_requests);
  if (c.engine.max_waiting_requests < 1) {
    return absl::InvalidArgumentError("--max_waiting_requests must be >= 1");
  }
  const int32_t sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
  if (sampling_threads < 0 || sampling_threads > 256) {
    return absl::InvalidArgumentError("--sampling_threads must be in 0..256 (0: automatic)");
  }
  c.engine.sampling_threads =
      sampling_threads > 0 ? sampling_threads : std::min(8, kernels::cpu::DefaultNumThreads());
  c.engine.overlap_outputs = absl::GetFlag(FLAGS_overlap_outputs);
  c.write_threads = absl::GetFlag(FLAGS_write_threads);
  if (c.write_threads < 0 || c.write_threads > 64) {
    return absl::InvalidArgumentError("--write_threads must be in 0..64 (0: automatic)");
  }
  const Device device = absl::GetFlag(FLAGS_device);
  c.engine.step_logits.max_device_top_k = DeviceTopKFor(absl::GetFlag(FLAGS_device_top_k), device);
  if (c.engine.step_logits.max_device_top_k < 0 || c.engine.step_logits.max_device_top_k > 32768) {
    return absl::InvalidArgumentError("--device_top_k must be in 0..32768 (0: off; -1: auto)");
  }
  c.engine.step_logits.nucleus_candidates =
      NucleusCandidatesFor(absl::GetFlag(FLAGS_nucleus_candidates), device);
  if (c.engine.step_logits.nucleus_candidates < 0 ||
      c.engine.step_logits.nucleus_candidates > 32768) {
    return absl::InvalidArgumentError(
        "--nucleus_candidates must be in 0..32768 (0: off; -1: auto)");
  }
  c.engine.step_logits.adjusted_extra_candidates = absl::GetFlag(FLAGS_adjusted_extra_candidates);
  if (c.engine.step_logits.adjusted_extra_candidates < 0 ||
      c.engine.step_logits.adjusted_extra_candidates > 32768) {
    return absl::InvalidArgumentError("--adjusted_extra_candidates must be in 0..32768 (0: off)");
  }
  c.preemption_mode = absl::GetFlag(FLAGS_preemption_mode);
  if (c.preemption_mode == "swap") {
    s.preemption_mode = scheduler::PreemptionMode::kSwap;
  } else if (c.preemption_mode != "recompute") {
    return absl::InvalidArgumentError("--preemption_mode must be 'recompute' or 'swap'");
  }
  const double fraction = absl::GetFlag(FLAGS_kv_cache_fraction);
  if (fraction < 0 || fraction > 0.9) {
    return absl::InvalidArgumentError("--kv_cache_fraction must be in [0, 0.9]");
  }
  c.kv_cache_fraction = fraction;
  c.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  if (fraction == 0 && c.kv_cache_bytes < 1) {
    return absl::InvalidArgumentError("--kv_cache_bytes must be > 0");
  }
  c.swap_bytes = absl::GetFlag(FLAGS_swap_space_bytes);
  if (c.swap_bytes < 0) return absl::InvalidArgumentError("--swap_space_bytes must be >= 0");
  const int32_t drain = absl::GetFlag(FLAGS_drain_timeout_seconds);
  if (drain < 0) return absl::InvalidArgumentError("--drain_timeout_seconds must be >= 0");
  c.drain_timeout = absl::Seconds(drain);
  return c;
}

// Sizes the KV pools from the byte budgets (KvBudgetPerDevice): never more blocks than
// max_num_seqs sequences of the full context can use. A block id names a block on every rank,
// each rank holding its share of the KV heads, so the device budget divides by a rank's bytes
// per block and the (one, host) swap budget by all ranks' together. `rule` says how the
// device budget was chosen.
absl::Status SizeKvPools(const LoadedModel& loaded, ServeConfig& c, std::string& rule) {
  const model::LlamaConfig& model_config = loaded.config();
  const int64_t ranks = loaded.tensor_parallel_size();
  const int64_t bytes_per_block =
      static_cast<int64_t>(loaded.runner->KvBytesPerBlockPerDevice(c.engine.block_size));
  const int64_t blocks_per_seq =
      (model_config.context_length + c.engine.block_size - 1) / c.engine.block_size;
  const int64_t useful = blocks_per_seq * c.engine.scheduler.max_running_sequences;
  KvBudgetInputs inputs;
  inputs.kv_cache_bytes = c.kv_cache_bytes;
  inputs.kv_cache_fraction = c.kv_cache_fraction;
  inputs.host_memory_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  for (int r = 0; r < ranks; ++r) inputs.devices.push_back(loaded.rank_backend(r).DeviceMemory());
  ASSIGN_OR_RETURN(const KvBudget budget, KvBudgetPerDevice(inputs));
  rule = budget.rule;
  const int64_t blocks = std::min(budget.bytes_per_device / bytes_per_block, useful);
  if (blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache budget of ", budget.bytes_per_device, " bytes (", budget.rule,
                     ") is less than one block (", bytes_per_block, " bytes)"));
  }
  c.engine.num_kv_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, 1 << 30));
  if (c.engine.scheduler.preemption_mode == scheduler::PreemptionMode::kSwap) {
    const int64_t host = std::min(c.swap_bytes / (bytes_per_block * ranks), useful);
    if (host < 1) return absl::InvalidArgumentError("--swap_space_bytes holds no KV block");
    c.engine.num_host_blocks = static_cast<int32_t>(host);
  }
  return absl::OkStatus();
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(std::min(line.size(), colon + 2));
    }
  }
  return "cpu";
}

// GetServerInfo's device: the GPU's name for a CUDA backend (its name() reads
// "cuda (NVIDIA H200, device 0, ...)"), else the CPU's model name.
std::string DeviceDescription(const std::string& backend_name) {
  if (backend_name.rfind("cuda", 0) == 0) {
    const size_t open = backend_name.find('(');
    const size_t end = backend_name.find_first_of(",)", open);
    if (open != std::string::npos && end != std::string::npos) {
      return backend_name.substr(open + 1, end - open - 1);
    }
    return "cuda";
  }
  return CpuModelName();
}

EngineServiceOptions ServiceOptions(const ServeConfig& c, const LoadedModel& loaded,
                                    size_t kv_bytes) {
  EngineServiceOptions o;
  o.served_model_name = c.served_model_name;
  o.model_path = c.model_path;
  if (auto arch = loaded.file->GetString("general.architecture"); arch.ok()) o.model_type = *arch;
  if (const model::GgufTensor* t = loaded.file->FindTensor("blk.0.attn_q.weight")) {
    o.weights_dtype = std::string(model::GgmlTypeName(t->type));
    std::transform(o.weights_dtype.begin(), o.weights_dtype.end(), o.weights_dtype.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  }
  if (auto tmpl = loaded.file->GetString("tokenizer.chat_template"); tmpl.ok()) {
    o.chat_template = *tmpl;
  }
  // Backend::name() may add detail ("cpu (2 threads)"); the API wants "cpu" or "cuda".
  const std::string backend_name = loaded.rank_backend(0).name();
  o.backend = backend_name.substr(0, backend_name.find(' '));
  o.device = DeviceDescription(backend_name);
  o.preemption_mode = c.preemption_mode;
  o.kv_cache_bytes = kv_bytes;
  o.kv_cache_dtype = loaded.kv_cache_dtype_name();
  o.tensor_parallel_size = loaded.tensor_parallel_size();
  o.write_threads = c.write_threads;
  return o;
}

// The engine's Prometheus metrics, fed by an EngineMetricsObserver (events, on the engine
// thread) and refreshed from Engine::GetLoad() at scrape time (state gauges), and served at
// `/metrics` on --host:--metrics_port when that port is set.
struct MetricsEndpoint {
  MetricsRegistry registry;
  EngineMetrics metrics;
  std::unique_ptr<EngineMetricsObserver> observer;
  std::unique_ptr<HttpServer> http;
};

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> CreateMetrics(const ServeConfig& c) {
  auto endpoint = std::make_unique<MetricsEndpoint>();
  absl::StatusOr<EngineMetrics> metrics =
      CreateEngineMetrics(endpoint->registry, {{"model_name", c.served_model_name}});
  if (!metrics.ok()) return metrics.status();
  endpoint->metrics = *metrics;
  endpoint->observer = std::make_unique<EngineMetricsObserver>(endpoint->metrics);
  return endpoint;
}

absl::Status ServeMetrics(const ServeConfig& c, const scheduler::Engine& engine,
                          MetricsEndpoint& endpoint) {
  const int32_t port = absl::GetFlag(FLAGS_metrics_port);
  if (port <= 0) return absl::OkStatus();
  HttpServerOptions options;
  options.host = c.host;
  options.port = port;
  endpoint.http = std::make_unique<HttpServer>(options);
  MetricsEndpoint* e = &endpoint;
  absl::Status s = e->http->Handle("GET", "/metrics", [e, &engine](const HttpRequest&) {
    e->observer->RefreshFromLoad(engine.GetLoad());
    return HttpResponse::Text(200, e->registry.RenderText(), MetricsRegistry::kContentType);
  });
  if (s.ok()) s = e->http->Start();
  if (!s.ok()) return s;
  spdlog::info("metrics on http://{}:{}/metrics", c.host, e->http->port());
  return absl::OkStatus();
}

// The backend's own counters (e.g. CUDA graph captures and replays; none on the CPU) as
// glimpse_<name>, read from the backend at scrape time (Backend::Counters is thread-safe).
absl::Status RegisterBackendCounters(MetricsRegistry& registry, const kernels::Backend& backend,
                                     const MetricLabels& labels) {
  const std::vector<kernels::BackendCounter> counters = backend.Counters();
  for (size_t i = 0; i < counters.size(); ++i) {
    const std::string name = absl::StrCat("glimpse_", counters[i].name);
    auto read = [&backend, i] {
      const std::vector<kernels::BackendCounter> now = backend.Counters();
      return i < now.size() ? static_cast<double>(now[i].value) : 0.0;
    };
    const bool monotonic = absl::EndsWith(name, "_total");
    absl::Status s = monotonic ? registry.AddCallbackCounter(name, counters[i].help, read, labels)
                               : registry.AddCallbackGauge(name, counters[i].help, read, labels);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// The KV cache's configuration as an info metric (value 1, facts in the labels), as vLLM's
// cache_config_info: what a dashboard needs to read the usage gauges.
absl::Status RegisterCacheConfigInfo(MetricsRegistry& registry, const ServeConfig& c,
                                     const LoadedModel& loaded) {
  const MetricLabels labels = {
      {"model_name", c.served_model_name},
      {"kv_cache_dtype", loaded.kv_cache_dtype_name()},
      {"block_size", absl::StrCat(c.engine.block_size)},
      {"num_kv_blocks", absl::StrCat(c.engine.num_kv_blocks)},
      {"num_host_blocks", absl::StrCat(c.engine.num_host_blocks)},
      {"prefix_caching", c.engine.scheduler.enable_prefix_caching ? "true" : "false"}};
  absl::StatusOr<Gauge*> info =
      registry.AddGauge("glimpse_cache_config_info",
                        "The KV cache's configuration (in the labels); always 1", labels);
  if (!info.ok()) return info.status();
  (*info)->Set(1.0);
  return absl::OkStatus();
}

// SIGTERM handling: stop taking work, let in-flight requests finish (up to the timeout),
// abort the rest, then stop the gRPC server and the engine.
void Drain(const ServeConfig& c, ServerLifecycle& lifecycle, scheduler::Engine& engine,
           EngineService& service, grpc::Server& server) {
  lifecycle.Set(glimpse::v1::HEALTH_STATE_DRAINING);
  engine.StartDrain();
  spdlog::info("draining: {} request(s) in flight, timeout {}s", service.num_active_calls(),
               absl::ToInt64Seconds(c.drain_timeout));
  if (!engine.WaitIdle(c.drain_timeout)) {
    const int aborted = service.AbortAll();
    spdlog::warn("drain timeout: aborted {} request(s)", aborted);
    engine.WaitIdle(absl::Seconds(5));
  }
  // Let the last writes of finished calls reach their clients.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (service.num_active_calls() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  engine.Stop();
}

}  // namespace

int RunServeCommand() {
  // Before any thread exists (the backend's pool, gRPC's, the engine's).
  BlockShutdownSignals();
  spdlog::set_default_logger(spdlog::stderr_color_mt("glimpse"));

  absl::StatusOr<ServeConfig> config = ConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "glimpse serve: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  ServerLifecycle lifecycle;  // STARTING until the engine runs.
  absl::StatusOr<LoadedModel> loaded =
      LoadedModel::Load(config->model_path, absl::GetFlag(FLAGS_threads));
  if (!loaded.ok()) {
    spdlog::error("cannot load the model: {}", std::string(loaded.status().message()));
    return 1;
  }
  const model::LlamaConfig& model_config = loaded->config();
  std::string kv_budget_rule;
  if (absl::Status s = SizeKvPools(*loaded, *config, kv_budget_rule); !s.ok()) {
    std::fprintf(stderr, "glimpse serve: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> metrics = CreateMetrics(*config);
  if (!metrics.ok()) {
    spdlog::error("cannot create the metrics: {}", std::string(metrics.status().message()));
    return 1;
  }
  // Rank 0's counters: every rank runs the same steps.
  absl::Status s = RegisterBackendCounters((*metrics)->registry, loaded->rank_backend(0),
                                           {{"model_name", config->served_model_name}});
  if (s.ok()) s = RegisterCacheConfigInfo((*metrics)->registry, *config, *loaded);
  if (!s.ok()) {
    spdlog::error("cannot create the metrics: {}", std::string(s.message()));
    return 1;
  }
  config->engine.observer = (*metrics)->observer.get();
  auto engine = scheduler::Engine::Create(*loaded->runner, *loaded->tokenizer, config->engine);
  if (!engine.ok()) {
    spdlog::error("cannot create the engine: {}", std::string(engine.status().message()));
    return 2;
  }
  const size_t kv_bytes_per_device =
      loaded->runner->KvBytesPerBlockPerDevice(config->engine.block_size) *
      static_cast<size_t>(config->engine.num_kv_blocks);
  spdlog::info(
      "model {} ('{}'): {} layers, context {}, vocab {}, tensor-parallel size {}; {} "
      "KV cache {} blocks of {} tokens ({:.1f} MiB per device, by {}), host swap {} "
      "blocks",
      config->model_path, config->served_model_name, model_config.num_layers,
      model_config.context_length, model_config.vocab_size, loaded->tensor_parallel_size(),
      loaded->kv_cache_dtype_name(), config->engine.num_kv_blocks, config->engine.block_size,
      static_cast<double>(kv_bytes_per_device) / (1 << 20), kv_budget_rule,
      config->engine.num_host_blocks);
  (*engine)->Start();

  if (absl::Status s = ServeMetrics(*config, **engine, **metrics); !s.ok()) {
    spdlog::error("cannot serve metrics: {}", std::string(s.message()));
    return 1;
  }
  EngineServiceOptions service_options = ServiceOptions(
      *config, *loaded, kv_bytes_per_device * static_cast<size_t>(loaded->tensor_parallel_size()));
  service_options.stream_chunks_merged = (*metrics)->metrics.stream_chunks_merged;
  EngineService service(**engine, *loaded->tokenizer, lifecycle, std::move(service_options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  const bool ipv6 = config->host.find(':') != std::string::npos;
  const std::string address = ipv6 ? absl::StrCat("[", config->host, "]:", config->port)
                                   : absl::StrCat(config->host, ":", config->port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    spdlog::error("cannot listen on {}", address);
    return 1;
  }
  lifecycle.AttachGrpcHealth(server->GetHealthCheckService());
  lifecycle.Set(glimpse::v1::HEALTH_STATE_READY);
  const std::string bound = ipv6 ? absl::StrCat("[", config->host, "]:", bound_port)
                                 : absl::StrCat(config->host, ":", bound_port);
  std::printf("glimpse serve: listening on %s\n", bound.c_str());
  std::fflush(stdout);
  spdlog::info("serving glimpse.v1.Engine on {} ({} backend)", bound, loaded->backend_name());

  std::unique_ptr<Gateway> gateway;
  if (absl::GetFlag(FLAGS_http_port) > 0) {
    RaiseFileLimit();
    absl::StatusOr<GatewayOptions> gateway_options =
        GatewayOptionsFromFlags({bound}, config->host, absl::GetFlag(FLAGS_http_port));
    if (!gateway_options.ok()) {
      spdlog::error("cannot start the HTTP gateway: {}", std::string(gateway_options.status().message()));
      return 2;
    }
    // The engine's metrics also appear on the OpenAI port's /metrics.
    gateway_options->extra_metrics = [e = metrics->get(), engine_ptr = engine->get()] {
      e->observer->RefreshFromLoad(engine_ptr->GetLoad());
      return e->registry.RenderText();
    };
    gateway = std::make_unique<Gateway>(*std::move(gateway_options));
    if (absl::Status s = gateway->Start(absl::Seconds(10)); !s.ok()) {
      spdlog::error("cannot start the HTTP gateway: {}", std::string(s.message()));
      return 1;
    }
    std::printf("glimpse serve: OpenAI API on http://%s:%d/v1\n", config->host.c_str(), gateway->port());
    std::fflush(stdout);
  }

  const int signal = WaitForShutdownSignal();
  spdlog::info("received {}; shutting down", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  Drain(*config, lifecycle, **engine, service, *server);
  if (gateway != nullptr) gateway->Shutdown();
  if ((*metrics)->http != nullptr) (*metrics)->http->Shutdown();
  spdlog::info("shut down cleanly");
  return 0;
}

}  // namespace glimpse::server
