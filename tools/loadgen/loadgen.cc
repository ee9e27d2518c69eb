#include "tools/loadgen/loadgen.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "tools/loadgen/arrivals.h"
#include "tools/loadgen/sse_parser.h"
#include "tools/loadgen/stats.h"

ABSL_DECLARE_FLAG(int32_t, max_tokens);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_FLAG(std::string, url, "grpc://127.0.0.1:50051",
          "loadgen: the target: grpc://HOST:PORT (glimpse.v1) or http://HOST:PORT[/v1] (any "
          "OpenAI-compatible server; /v1/completions with SSE streaming).");
ABSL_FLAG(std::string, concurrency, "1,4,16",
          "loadgen: comma-separated concurrency levels (closed loop: each client sends its next "
          "request when the previous one ends).");
ABSL_FLAG(int32_t, requests, 0,
          "loadgen: requests sent at each level; 0 means max(32, 4 x concurrency).");
ABSL_FLAG(std::string, prompts, "tests/data/refs/greedy_short.jsonl",
          "loadgen: JSONL file whose lines hold \"prompt_tokens\" arrays; used round-robin.");
ABSL_FLAG(std::string, json, "", "loadgen: also write every level's results as JSON here.");
ABSL_FLAG(std::string, rate, "",
          "loadgen: comma-separated request rates (requests/s) for open-loop runs with Poisson "
          "arrivals; when set, levels are rates instead of --concurrency (which then caps the "
          "requests in flight).");
ABSL_FLAG(double, burstiness, 1.0,
          "loadgen: gamma shape of the arrival gaps with --rate: 1 is Poisson, < 1 burstier.");
ABSL_FLAG(int32_t, warmup_requests, 2,
          "loadgen: requests sent one at a time before each run and left out of its figures.");
ABSL_FLAG(bool, allow_remote, false,
          "loadgen: allow a target that is not on this machine (loopback only by default).");

namespace glimpse::tools {
namespace {

using Clock = std::chrono::steady_clock;
using loadgen::RequestRecord;

struct Target {
  bool grpc = true;
  std::string host;
  int port = 0;
  std::string path_prefix;  // HTTP: e.g. "/v1".
};

absl::StatusOr<Target> ParseUrl(const std::string& url) {
  Target t;
  std::string rest;
  if (url.rfind("grpc://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("http://", 0) == 0) {
    t.grpc = false;
    rest = url.substr(7);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--url: '", url, "' must start with grpc:// or http:// (https is not supported)"));
  }
  const size_t slash = rest.find('/');
  const std::string host_port = rest.substr(0, slash);
  t.path_prefix = slash == std::string::npos ? "/v1" : rest.substr(slash);
  while (t.path_prefix.size() > 1 && t.path_prefix.back() == '/') t.path_prefix.pop_back();
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(host_port.substr(colon + 1), &t.port)) {
    return absl::InvalidArgumentError(absl::StrCat("--url: '", url, "' needs HOST:PORT"));
  }
  t.host = host_port.substr(0, colon);
  return t;
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]" || host == "::1";
}

double Now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

RequestRecord RunGrpc(glimpse::v1::Engine::Stub& stub, const std::vector<int32_t>& prompt,
                      int32_t max_tokens, bool ignore_eos) {
  glimpse::v1::GenerateRequest request;
  for (int32_t t : prompt) request.mutable_token_ids()->add_ids(static_cast<uint32_t>(t));
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  request.mutable_stopping()->set_ignore_eos(ignore_eos);
  request.mutable_output()->set_detokenize(false);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  RequestRecord r;
  r.input_tokens = static_cast<int32_t>(prompt.size());
  r.start_s = Now();
  auto reader = stub.Generate(&context, request);
  glimpse::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (!response.has_chunk() || response.chunk().token_ids_size() == 0) continue;
    const double now = Now();
    if (r.output_tokens == 0) r.first_token_s = now;
    r.token_times_s.push_back(now);
    r.output_tokens += response.chunk().token_ids_size();
  }
  const grpc::Status status = reader->Finish();
  r.end_s = Now();
  r.ok = status.ok();
  if (!status.ok()) r.error_kind = absl::StrCat("grpc_", static_cast<int>(status.error_code()));
  return r;
}

// One streaming /v1/completions request on its own connection, read with the SSE parser.
RequestRecord RunHttp(const Target& target, const std::vector<int32_t>& prompt,
                      int32_t max_tokens, bool ignore_eos) {
  RequestRecord r;
  r.input_tokens = static_cast<int32_t>(prompt.size());
  nlohmann::json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                         {"stream", true}, {"stream_options", {{"include_usage", true}}}};
  if (ignore_eos) body["ignore_eos"] = true;
  const std::string payload = body.dump();
  const std::string request =
      absl::StrCat("POST ", target.path_prefix, "/completions HTTP/1.1\r\nHost: ", target.host,
                   "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ",
                   payload.size(), "\r\n\r\n", payload);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* address = nullptr;
  r.start_s = Now();
  if (getaddrinfo(target.host.c_str(), std::to_string(target.port).c_str(), &hints, &address) != 0) {
    r.error_kind = "dns";
    return r;
  }
  const int fd = socket(address->ai_family, SOCK_STREAM, 0);
  const bool connected = fd >= 0 && connect(fd, address->ai_addr, address->ai_addrlen) == 0;
  freeaddrinfo(address);
  if (!connected) {
    if (fd >= 0) close(fd);
    r.error_kind = "connect";
    r.end_s = Now();
    return r;
  }
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  loadgen::HttpResponseReader http;
  loadgen::SseParser sse;
  int32_t usage_tokens = -1;
  bool done = false;
  char buf[16384];
  ssize_t n;
  while (!done && (n = read(fd, buf, sizeof(buf))) > 0) {
    absl::StatusOr<std::string> bytes = http.Feed(std::string_view(buf, static_cast<size_t>(n)));
    if (!bytes.ok()) {
      r.error_kind = "bad_http";
      break;
    }
    if (http.head_complete() && http.head().status_code != 200) {
      r.error_kind = absl::StrCat("http_", http.head().status_code);
      break;
    }
    const double now = Now();
    for (const loadgen::SseEvent& event : sse.Feed(*bytes)) {
      if (event.IsDone()) {
        done = true;
        break;
      }
      nlohmann::json chunk = nlohmann::json::parse(event.data, nullptr, false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        usage_tokens = chunk["usage"].value("completion_tokens", -1);
      }
      if (!chunk.contains("choices") || !chunk["choices"].is_array()) continue;
      for (const auto& choice : chunk["choices"]) {
        if (choice.contains("text") && choice["text"].is_string() && !choice["text"].get<std::string>().empty()) {
          if (r.token_times_s.empty()) r.first_token_s = now;
          r.token_times_s.push_back(now);
        }
      }
    }
  }
  close(fd);
  r.end_s = Now();
  // Tokens: the server's usage when it reports it, else one per chunk with text.
  r.output_tokens = usage_tokens >= 0 ? usage_tokens : static_cast<int32_t>(r.token_times_s.size());
  r.ok = done && r.error_kind.empty();
  if (!r.ok && r.error_kind.empty()) r.error_kind = "incomplete_stream";
  return r;
}

std::vector<std::vector<int32_t>> LoadPrompts(const std::string& path) {
  std::vector<std::vector<int32_t>> prompts;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("prompt_tokens")) continue;
    std::vector<int32_t> ids;
    for (const auto& v : j["prompt_tokens"]) {
      if (v.is_number_integer()) ids.push_back(v.get<int32_t>());
    }
    if (!ids.empty()) prompts.push_back(std::move(ids));
  }
  return prompts;
}

}  // namespace

int RunLoadgenCommand() {
  absl::StatusOr<Target> target = ParseUrl(absl::GetFlag(FLAGS_url));
  if (!target.ok()) {
    std::fprintf(stderr, "glimpse loadgen: %s\n", std::string(target.status().message()).c_str());
    return 2;
  }
  if (!IsLoopback(target->host) && !absl::GetFlag(FLAGS_allow_remote)) {
    std::fprintf(stderr, "glimpse loadgen: %s is not on this machine; pass --allow_remote to "
                         "load a remote server\n", target->host.c_str());
    return 2;
  }
  const auto prompts = LoadPrompts(absl::GetFlag(FLAGS_prompts));
  if (prompts.empty()) {
    std::fprintf(stderr, "glimpse loadgen: no prompts with \"prompt_tokens\" in %s\n",
                 absl::GetFlag(FLAGS_prompts).c_str());
    return 2;
  }
  std::vector<int32_t> levels;
  for (const std::string& s : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ','))) {
    int32_t n;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > 4096) {
      std::fprintf(stderr, "glimpse loadgen: --concurrency: '%s' is not in 1..4096\n", s.c_str());
      return 2;
    }
    levels.push_back(n);
  }
  const int32_t max_tokens = absl::GetFlag(FLAGS_max_tokens);
  const bool ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  std::unique_ptr<glimpse::v1::Engine::Stub> stub;
  if (target->grpc) {
    auto channel = grpc::CreateChannel(absl::StrCat(target->host, ":", target->port),
                                       grpc::InsecureChannelCredentials());
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "glimpse loadgen: cannot connect to %s; is `glimpse serve` running?\n",
                   absl::GetFlag(FLAGS_url).c_str());
      return 1;
    }
    stub = glimpse::v1::Engine::NewStub(channel);
  }
  auto run_one = [&](int32_t i) {
    const std::vector<int32_t>& prompt = prompts[static_cast<size_t>(i) % prompts.size()];
    return target->grpc ? RunGrpc(*stub, prompt, max_tokens, ignore_eos)
                        : RunHttp(*target, prompt, max_tokens, ignore_eos);
  };
  std::vector<double> rates;
  for (const std::string& s : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_rate), ',', absl::SkipEmpty()))) {
    double r;
    if (!absl::SimpleAtod(s, &r) || !(r > 0)) {
      std::fprintf(stderr, "glimpse loadgen: --rate: '%s' is not a positive rate\n", s.c_str());
      return 2;
    }
    rates.push_back(r);
  }
  if (!(absl::GetFlag(FLAGS_burstiness) > 0)) {
    std::fprintf(stderr, "glimpse loadgen: --burstiness must be > 0\n");
    return 2;
  }
  nlohmann::json json;
  json["url"] = absl::GetFlag(FLAGS_url);
  json["max_tokens"] = max_tokens;
  json["ignore_eos"] = ignore_eos;
  const bool open_loop = !rates.empty();
  std::printf("| %s | requests | output tok/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | ITL p50 ms | errors |\n",
              open_loop ? "rate req/s" : "concurrency");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  const size_t num_levels = open_loop ? rates.size() : levels.size();
  for (size_t level = 0; level < num_levels; ++level) {
    const int32_t concurrency = open_loop ? levels.back() : levels[level];
    int32_t total = absl::GetFlag(FLAGS_requests);
    if (total <= 0) total = std::max(32, 4 * concurrency);
    for (int32_t w = 0; w < absl::GetFlag(FLAGS_warmup_requests); ++w) run_one(w);
    std::mutex mu;
    std::vector<RequestRecord> records;
    const double start = Now();
    if (open_loop) {
      // Open loop: requests leave on the arrival schedule, each on its own thread, with at
      // most `concurrency` in flight (later arrivals wait for a slot, as vLLM's max_concurrency).
      loadgen::ArrivalSchedule schedule(rates[level], absl::GetFlag(FLAGS_burstiness), 1234 + level);
      std::atomic<int32_t> in_flight{0};
      std::vector<std::thread> requests;
      double next = Now();
      for (int32_t i = 0; i < total; ++i) {
        next += schedule.NextGapSeconds();
        while (Now() < next || in_flight.load() >= concurrency) {
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        ++in_flight;
        requests.emplace_back([&, i] {
          RequestRecord r = run_one(i);
          --in_flight;
          std::lock_guard<std::mutex> lock(mu);
          records.push_back(std::move(r));
        });
      }
      for (std::thread& t : requests) t.join();
    } else {
      std::atomic<int32_t> next{0};
      std::vector<std::thread> clients;
      for (int32_t c = 0; c < concurrency; ++c) {
        clients.emplace_back([&] {
          for (int32_t i = next++; i < total; i = next++) {
            RequestRecord r = run_one(i);
            std::lock_guard<std::mutex> lock(mu);
            records.push_back(std::move(r));
          }
        });
      }
      for (std::thread& t : clients) t.join();
    }
    const loadgen::Summary s = loadgen::Summarize(records, Now() - start, loadgen::SloOptions());
    const std::string label = open_loop ? absl::StrCat(rates[level]) : absl::StrCat(concurrency);
    std::printf("| %s | %d | %.1f | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f | %.1f | %lld |\n",
                label.c_str(), total, s.output_tok_s, s.ttft.p50_ms, s.ttft.p90_ms, s.ttft.p99_ms,
                s.tpot.p50_ms, s.tpot.p90_ms, s.tpot.p99_ms, s.itl.p50_ms,
                static_cast<long long>(s.requests_failed));
    std::fflush(stdout);
    nlohmann::json level_json = loadgen::ToJson(s);
    level_json["concurrency"] = concurrency;
    if (open_loop) level_json["rate"] = rates[level];
    json["levels"].push_back(level_json);
  }
  // The last level's figures also sit at the top level (a single-level run reads naturally).
  if (!json["levels"].empty()) {
    for (auto& [key, value] : json["levels"].back().items()) json[key] = value;
  }
  const std::string out = absl::GetFlag(FLAGS_json);
  if (!out.empty()) std::ofstream(out) << json.dump(2) << "\n";
  return 0;
}

}  // namespace glimpse::tools
