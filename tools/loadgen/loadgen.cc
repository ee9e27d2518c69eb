#include "tools/loadgen/loadgen.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tools/loadgen/arrivals.h"
#include "tools/loadgen/progress.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/server_counters.h"
#include "tools/loadgen/stats.h"
#include "tools/loadgen/target_client.h"
#include "tools/loadgen/workload.h"

ABSL_DECLARE_FLAG(int32_t, max_tokens);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_FLAG(std::string, url, "grpc://127.0.0.1:50051",
          "loadgen: the target: grpc://HOST:PORT (glimpse.v1) or http://HOST:PORT[/v1] (any "
          "OpenAI-compatible server, e.g. llama.cpp's llama-server or vLLM; SSE streaming).");
ABSL_FLAG(std::string, endpoint, "completions",
          "loadgen: HTTP targets: `completions` (/v1/completions) or `chat` "
          "(/v1/chat/completions, prompts sent as chat messages).");
ABSL_FLAG(std::string, request_model, "",
          "loadgen: HTTP targets: the \"model\" field of each request (empty: left out; most "
          "servers then use their only model).");
ABSL_FLAG(std::string, concurrency, "1,4,16",
          "loadgen: comma-separated concurrency levels (closed loop: each client sends its next "
          "request when the previous one ends). With --rate: the cap on requests in flight "
          "(the last value is used).");
ABSL_FLAG(std::string, rate, "",
          "loadgen: comma-separated request rates (requests/s) for open-loop runs (Poisson, or "
          "gamma with --burstiness); when set, the levels are rates instead of concurrencies.");
ABSL_FLAG(double, burstiness, 1.0,
          "loadgen: gamma shape of the arrival gaps with --rate: 1 is Poisson, < 1 burstier.");
ABSL_FLAG(int32_t, requests, 0,
          "loadgen: requests sent at each level; 0 means max(32, 4 x concurrency) closed loop, "
          "max(32, 10 s x rate) open loop.");
ABSL_FLAG(int32_t, warmup_requests, 2,
          "loadgen: requests sent one at a time before each level and left out of its figures.");
ABSL_FLAG(double, max_duration_s, 600,
          "loadgen: a level stops sending new requests after this many seconds (those in flight "
          "finish); what was not sent is reported.");
ABSL_FLAG(double, request_timeout_s, 300,
          "loadgen: a request still running after this many seconds is abandoned and counted as "
          "failed with error kind `timeout`.");
ABSL_FLAG(std::string, dataset, "synthetic",
          "loadgen: the workload: `synthetic` (random prompts of --input_len tokens), "
          "`jsonl:PATH` (lines with \"prompt\", \"prompt_tokens\" or \"messages\", optional "
          "\"max_tokens\"), `sharegpt:PATH` (ShareGPT conversations, JSON array or JSONL), "
          "`shared-prefix` (--prefix_groups groups sharing --prefix_len tokens), `replay` "
          "(--replay_unique requests sent again and again) or `code-edit` (rewrite a given "
          "function: the answer repeats the prompt's code).");
ABSL_FLAG(std::string, input_len, "uniform:64:256",
          "loadgen: prompt length distribution for synthetic kinds, in tokens: N, fixed:N, "
          "uniform:LO:HI or normal:MEAN:STD.");
ABSL_FLAG(std::string, output_len, "",
          "loadgen: output length distribution (same forms as --input_len). Empty: --max_tokens "
          "for synthetic kinds; a dataset file's own lengths (capped by --max_tokens) when it "
          "has them. When set, it overrides every request's length.");
ABSL_FLAG(int32_t, vocab_size, 0,
          "loadgen: synthetic token ids are drawn below this. 0: ask a gRPC target; HTTP "
          "targets then get synthetic text prompts instead of token ids.");
ABSL_FLAG(bool, text_prompts, false,
          "loadgen: synthetic kinds send text prompts instead of token ids (always so for "
          "--endpoint=chat).");
ABSL_FLAG(int32_t, prefix_groups, 4, "loadgen: shared-prefix: number of distinct shared prefixes.");
ABSL_FLAG(int32_t, prefix_len, 512, "loadgen: shared-prefix: tokens each group's prefix has.");
ABSL_FLAG(int32_t, replay_unique, 4, "loadgen: replay: distinct requests replayed round-robin.");
ABSL_FLAG(uint64_t, workload_seed, 0,
          "loadgen: seed of the workload (prompts, lengths) and of the arrival times.");
ABSL_FLAG(std::string, metrics_url, "",
          "loadgen: Prometheus metrics of the server, read before and after each level and "
          "sampled while it runs (prefix-cache hits, preemptions, speculation, KV usage), e.g. "
          "http://127.0.0.1:9090/metrics for `glimpse serve --metrics_port=9090`. Empty: "
          "{url}/metrics for HTTP targets, none for gRPC; `none` turns it off.");
ABSL_FLAG(std::string, json, "",
          "loadgen: write the run as JSON here: every level's summary, server counters and "
          "every request's timings.");
ABSL_FLAG(std::string, markdown, "", "loadgen: write a markdown report here (embeds --plots_dir).");
ABSL_FLAG(std::string, plots_dir, "",
          "loadgen: write SVG plots here: latency CDFs per level, and throughput and latency "
          "against concurrency or rate.");
ABSL_FLAG(std::string, title, "glimpse loadgen", "loadgen: the markdown report's heading.");
ABSL_FLAG(std::string, progress, "auto",
          "loadgen: progress bar on stderr: `auto` (when stderr is a terminal), `always`, `never`.");
ABSL_FLAG(double, goodput_ttft_ms, 0, "loadgen: goodput SLO on TTFT in ms (0 = none).");
ABSL_FLAG(double, goodput_tpot_ms, 0, "loadgen: goodput SLO on TPOT in ms (0 = none).");
ABSL_FLAG(double, goodput_e2e_ms, 0, "loadgen: goodput SLO on end-to-end latency in ms (0 = none).");
ABSL_FLAG(bool, allow_remote, false,
          "loadgen: allow a target that is not on this machine (loopback only by default).");

namespace glimpse::tools {
namespace {

using loadgen::LevelResult;
using loadgen::RequestRecord;
using loadgen::WorkItem;
using Clock = std::chrono::steady_clock;

double Now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

int Fail(const std::string& message, int code = 2) {
  std::fprintf(stderr, "glimpse loadgen: %s\n", message.c_str());
  return code;
}

// Scrapes a Prometheus endpoint given as http://HOST:PORT/PATH.
class MetricsSource {
 public:
  static std::optional<MetricsSource> FromUrl(const std::string& url) {
    absl::StatusOr<loadgen::Target> t = loadgen::ParseTargetUrl(url);
    if (!t.ok() || t->grpc) return std::nullopt;
    return MetricsSource{t->host, t->port, t->path_prefix.empty() ? "/" : t->path_prefix};
  }
  std::optional<std::string> Scrape() const {
    absl::StatusOr<std::string> body = loadgen::HttpGet(host, port, path, 5.0);
    if (!body.ok()) return std::nullopt;
    return *body;
  }
  std::string host;
  int port;
  std::string path;
};

// Runs one level: `total` requests from items[first..], closed loop at `concurrency` or open
// loop at `rate` (capped at `concurrency` in flight), stopping new sends at `max_duration_s`.
// Fills level.records, level_start_s and requests_not_sent; returns the level's wall seconds.
double RunLevel(const loadgen::TargetClient& client, const std::vector<WorkItem>& items,
              size_t first, LevelResult& level, double max_duration_s, bool progress_on,
              uint64_t seed) {
  std::mutex mu;
  loadgen::ProgressBar progress(level.Label(), level.requests_planned, progress_on);
  auto record = [&](RequestRecord r) {
    progress.RequestDone(r.ok);
    std::lock_guard<std::mutex> lock(mu);
    level.records.push_back(std::move(r));
  };
  const int64_t total = level.requests_planned;
  level.level_start_s = Now();
  const double stop_sending = level.level_start_s + max_duration_s;
  std::atomic<int64_t> sent{0};
  if (level.open_loop) {
    // Requests leave on the arrival schedule, each on its own thread, with at most
    // `concurrency` in flight (later arrivals wait for a slot, as vLLM's max_concurrency).
    loadgen::ArrivalSchedule schedule(level.rate, absl::GetFlag(FLAGS_burstiness), seed);
    std::atomic<int32_t> in_flight{0};
    std::vector<std::thread> threads;
    double next = Now();
    for (int64_t i = 0; i < total; ++i) {
      next += schedule.NextGapSeconds();
      while ((Now() < next || in_flight.load() >= level.concurrency) && Now() < stop_sending) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (Now() >= stop_sending) break;
      ++in_flight;
      ++sent;
      threads.emplace_back([&, i] {
        RequestRecord r = client.Send(items[first + static_cast<size_t>(i)]);
        --in_flight;
        record(std::move(r));
      });
    }
    for (std::thread& t : threads) t.join();
  } else {
    std::atomic<int64_t> next{0};
    std::vector<std::thread> clients;
    for (int32_t c = 0; c < level.concurrency; ++c) {
      clients.emplace_back([&] {
        for (int64_t i = next++; i < total && Now() < stop_sending; i = next++) {
          ++sent;
          record(client.Send(items[first + static_cast<size_t>(i)]));
        }
      });
    }
    for (std::thread& t : clients) t.join();
  }
  progress.Finish();
  level.requests_not_sent = total - sent.load();
  return Now() - level.level_start_s;
}

}  // namespace

int RunLoadgenCommand() {
  absl::StatusOr<loadgen::Target> target = loadgen::ParseTargetUrl(absl::GetFlag(FLAGS_url));
  if (!target.ok()) return Fail(std::string(target.status().message()));
  if (!loadgen::IsLoopbackHost(target->host) && !absl::GetFlag(FLAGS_allow_remote)) {
    return Fail(absl::StrCat(target->host,
                             " is not on this machine; pass --allow_remote to load a remote server"));
  }
  loadgen::SendOptions send;
  const std::string endpoint = absl::GetFlag(FLAGS_endpoint);
  if (endpoint == "chat") {
    send.endpoint = loadgen::Endpoint::kChat;
  } else if (endpoint != "completions") {
    return Fail(absl::StrCat("--endpoint: '", endpoint, "' is not `completions` or `chat`"));
  }
  send.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  send.model = absl::GetFlag(FLAGS_request_model);
  send.request_timeout_s = absl::GetFlag(FLAGS_request_timeout_s);
  if (!(send.request_timeout_s > 0)) return Fail("--request_timeout_s must be > 0");
  const int32_t max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens < 1) return Fail("--max_tokens must be >= 1");

  // Levels: concurrencies, or rates with the last concurrency as the in-flight cap.
  std::vector<int32_t> concurrencies;
  for (const std::string& s :
       std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ','))) {
    int32_t n;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > 4096) {
      return Fail(absl::StrCat("--concurrency: '", s, "' is not in 1..4096"));
    }
    concurrencies.push_back(n);
  }
  std::vector<double> rates;
  for (const std::string& s : std::vector<std::string>(
           absl::StrSplit(absl::GetFlag(FLAGS_rate), ',', absl::SkipEmpty()))) {
    double r;
    if (!absl::SimpleAtod(s, &r) || !(r > 0)) {
      return Fail(absl::StrCat("--rate: '", s, "' is not a positive rate"));
    }
    rates.push_back(r);
  }
  if (!(absl::GetFlag(FLAGS_burstiness) > 0)) return Fail("--burstiness must be > 0");
  if (!(absl::GetFlag(FLAGS_max_duration_s) > 0)) return Fail("--max_duration_s must be > 0");
  const std::string progress_mode = absl::GetFlag(FLAGS_progress);
  if (progress_mode != "auto" && progress_mode != "always" && progress_mode != "never") {
    return Fail("--progress must be auto, always or never");
  }
  const bool progress_on =
      progress_mode == "always" || (progress_mode == "auto" && isatty(STDERR_FILENO));
  loadgen::SloOptions slo;
  if (absl::GetFlag(FLAGS_goodput_ttft_ms) > 0) slo.ttft_ms = absl::GetFlag(FLAGS_goodput_ttft_ms);
  if (absl::GetFlag(FLAGS_goodput_tpot_ms) > 0) slo.tpot_ms = absl::GetFlag(FLAGS_goodput_tpot_ms);
  if (absl::GetFlag(FLAGS_goodput_e2e_ms) > 0) slo.e2e_ms = absl::GetFlag(FLAGS_goodput_e2e_ms);

  absl::StatusOr<std::unique_ptr<loadgen::TargetClient>> client =
      loadgen::TargetClient::Connect(*target, send);
  if (!client.ok()) return Fail(std::string(client.status().message()), 1);

  // Server metrics: given, guessed for HTTP targets, or none.
  std::string metrics_url = absl::GetFlag(FLAGS_metrics_url);
  const bool metrics_guessed = metrics_url.empty() && !target->grpc;
  if (metrics_guessed) {
    metrics_url = absl::StrCat("http://", target->host, ":", target->port, "/metrics");
  }
  std::optional<MetricsSource> metrics;
  if (!metrics_url.empty() && metrics_url != "none") {
    metrics = MetricsSource::FromUrl(metrics_url);
    if (!metrics) return Fail(absl::StrCat("--metrics_url: '", metrics_url, "' is not http://HOST:PORT/PATH"));
    if (!metrics->Scrape()) {
      if (!metrics_guessed) {
        return Fail(absl::StrCat("cannot read metrics from ", metrics_url,
                                 "; check --metrics_url (or pass --metrics_url=none)"), 1);
      }
      metrics.reset();  // The peer has no /metrics; server counters are simply not reported.
    }
  }

  // The workload. Synthetic kinds send token ids when the vocabulary is known (asked of a gRPC
  // target) and text otherwise, so they work with any server's tokenizer.
  loadgen::WorkloadOptions workload;
  workload.dataset = absl::GetFlag(FLAGS_dataset);
  workload.input_len = absl::GetFlag(FLAGS_input_len);
  const std::string output_len = absl::GetFlag(FLAGS_output_len);
  workload.output_len = output_len.empty() ? absl::StrCat("fixed:", max_tokens) : output_len;
  workload.override_output_len = !output_len.empty();
  workload.prefix_groups = absl::GetFlag(FLAGS_prefix_groups);
  workload.prefix_len = absl::GetFlag(FLAGS_prefix_len);
  workload.replay_unique = absl::GetFlag(FLAGS_replay_unique);
  int32_t vocab_size = absl::GetFlag(FLAGS_vocab_size);
  if (vocab_size == 0) vocab_size = (*client)->VocabSize().value_or(0);
  workload.text_prompts = absl::GetFlag(FLAGS_text_prompts) ||
                          send.endpoint == loadgen::Endpoint::kChat || vocab_size == 0;
  if (vocab_size > 0) workload.vocab_size = vocab_size;
  workload.min_token_id = std::min(workload.min_token_id, std::max(0, workload.vocab_size / 2));
  const loadgen::TargetClient* client_ptr = client->get();
  if (target->grpc) {
    workload.count_tokens = [client_ptr](std::string_view text) {
      return client_ptr->CountTokens(text).value_or(static_cast<int32_t>((text.size() + 3) / 4));
    };
  }

  // A dataset file is read once, not once per level.
  absl::StatusOr<std::shared_ptr<const loadgen::DatasetFile>> file =
      loadgen::LoadDatasetFile(workload.dataset);
  if (!file.ok()) return Fail(std::string(file.status().message()));
  workload.file = *std::move(file);

  const bool open_loop = !rates.empty();
  const size_t num_levels = open_loop ? rates.size() : concurrencies.size();
  const int32_t warmup = std::max(0, absl::GetFlag(FLAGS_warmup_requests));
  std::vector<LevelResult> levels;
  std::printf("%s", loadgen::ResultsTableHeader(open_loop).c_str());
  std::fflush(stdout);
  for (size_t l = 0; l < num_levels; ++l) {
    LevelResult level;
    level.open_loop = open_loop;
    level.concurrency = open_loop ? concurrencies.back() : concurrencies[l];
    if (open_loop) level.rate = rates[l];
    int64_t total = absl::GetFlag(FLAGS_requests);
    if (total <= 0) {
      total = open_loop ? std::max<int64_t>(32, static_cast<int64_t>(10 * level.rate))
                        : std::max<int64_t>(32, 4 * level.concurrency);
    }
    level.requests_planned = total;
    // Every level gets its own prompts (a different seed), so a server's prefix cache is not
    // primed by the previous level; warm-up requests take the first items.
    workload.seed = absl::GetFlag(FLAGS_workload_seed) + 1000003 * l;
    workload.num_items = static_cast<int32_t>(total + warmup);
    absl::StatusOr<std::vector<WorkItem>> items = loadgen::BuildWorkload(workload);
    if (!items.ok()) return Fail(std::string(items.status().message()));
    if (workload.override_output_len == false) {
      for (WorkItem& item : *items) item.max_tokens = std::min(item.max_tokens, max_tokens);
    }
    for (int32_t w = 0; w < warmup; ++w) (*client)->Send((*items)[static_cast<size_t>(w)]);
    std::optional<loadgen::MetricValues> before;
    std::unique_ptr<loadgen::KvUsageSampler> sampler;
    if (metrics) {
      if (auto text = metrics->Scrape()) before = loadgen::ParsePrometheusText(*text);
      sampler = std::make_unique<loadgen::KvUsageSampler>(
          [m = *metrics] { return m.Scrape(); }, 0.25);
      sampler->Start();
    }
    const double wall_s = RunLevel(**client, *items, static_cast<size_t>(warmup), level,
                                   absl::GetFlag(FLAGS_max_duration_s), progress_on,
                                   absl::GetFlag(FLAGS_workload_seed) + 1234 + l);
    level.summary = loadgen::Summarize(level.records, wall_s, slo);
    if (metrics) {
      sampler->Stop();
      level.kv_usage = sampler->Summary();
      if (auto text = metrics->Scrape(); text && before) {
        level.server_counters = loadgen::CounterDeltas(*before, loadgen::ParsePrometheusText(*text));
      }
    }
    std::printf("%s", loadgen::ResultsTableRow(level).c_str());
    std::fflush(stdout);
    levels.push_back(std::move(level));
  }
  for (const LevelResult& level : levels) {
    if (level.requests_not_sent > 0) {
      std::printf("%s: %lld of %lld requests not sent (--max_duration_s ran out)\n",
                  level.Label().c_str(), static_cast<long long>(level.requests_not_sent),
                  static_cast<long long>(level.requests_planned));
    }
    for (const auto& [kind, count] : level.summary.errors_by_kind) {
      std::string example;  // The first failure's message, so the table's count is actionable.
      for (const RequestRecord& r : level.records) {
        if (!r.ok && r.error_kind == kind && !r.error_detail.empty()) {
          example = absl::StrCat(" (e.g. \"", r.error_detail, "\")");
          break;
        }
      }
      std::printf("%s: %lld requests failed with %s%s\n", level.Label().c_str(),
                  static_cast<long long>(count), kind.c_str(), example.c_str());
    }
  }
  const std::string counters = loadgen::ServerCountersTable(levels);
  if (!counters.empty()) std::printf("\n%s", counters.c_str());

  loadgen::RunDescription description = {
      {"url", target->ToString()},
      {"endpoint", target->grpc ? "grpc Generate" : absl::StrCat(target->path_prefix, "/", endpoint == "chat" ? "chat/completions" : "completions")},
      {"dataset", workload.dataset},
      {"output_len", workload.output_len},
      {"ignore_eos", send.ignore_eos ? "true" : "false"},
      {"arrivals", open_loop ? absl::StrCat("open loop, burstiness ", absl::GetFlag(FLAGS_burstiness),
                                            ", at most ", concurrencies.back(), " in flight")
                             : "closed loop"},
      {"warmup_requests", absl::StrCat(warmup)},
  };
  if (workload.dataset == "synthetic" || workload.dataset == "shared-prefix" ||
      workload.dataset == "replay" || workload.dataset == "code-edit") {
    description.push_back({"input_len", workload.input_len});
    description.push_back({"prompts", workload.text_prompts ? "text" : "token ids"});
  }
  std::vector<std::string> plots;
  const std::string plots_dir = absl::GetFlag(FLAGS_plots_dir);
  if (!plots_dir.empty()) {
    absl::StatusOr<std::vector<std::string>> written = loadgen::WritePlots(plots_dir, levels);
    if (!written.ok()) return Fail(std::string(written.status().message()), 1);
    plots = *written;
  }
  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << loadgen::RunJson(description, levels).dump(1) << "\n";
    if (!out) return Fail(absl::StrCat("cannot write --json=", json_path), 1);
  }
  const std::string markdown_path = absl::GetFlag(FLAGS_markdown);
  if (!markdown_path.empty()) {
    std::string relative;
    if (!plots_dir.empty()) {
      relative = std::filesystem::relative(
                     std::filesystem::absolute(plots_dir),
                     std::filesystem::absolute(markdown_path).parent_path())
                     .string();
    }
    std::ofstream out(markdown_path);
    out << loadgen::MarkdownReport(absl::GetFlag(FLAGS_title), description, levels, relative,
                                   plots);
    if (!out) return Fail(absl::StrCat("cannot write --markdown=", markdown_path), 1);
  }
  return 0;
}

}  // namespace glimpse::tools
