#include "tools/loadgen/loadgen.h"

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

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "proto/glimpse/v1/engine.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "loadgen: the glimpse server's host:port.");
ABSL_FLAG(std::string, concurrency, "1,4,16", "loadgen: comma-separated concurrency levels.");
ABSL_FLAG(int32_t, requests_per_level, 0,
          "loadgen: requests sent at each level; 0 means max(32, 4 x concurrency).");
ABSL_FLAG(std::string, prompts, "tests/data/refs/greedy_short.jsonl",
          "loadgen: JSONL file whose lines hold \"prompt_tokens\" arrays; used round-robin.");
ABSL_FLAG(int32_t, output_tokens, 64, "loadgen: max_tokens of every request (EOS ignored).");
ABSL_FLAG(std::string, loadgen_json_out, "", "loadgen: also write the results as JSON here.");

namespace glimpse::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct RequestTiming {
  bool ok = false;
  std::string error;
  double ttft_s = 0;
  double tpot_s = 0;  // Mean time per output token after the first.
  double e2e_s = 0;
  int32_t output_tokens = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

RequestTiming RunOne(glimpse::v1::Engine::Stub& stub, const std::vector<int32_t>& prompt,
                     int32_t output_tokens) {
  glimpse::v1::GenerateRequest request;
  for (int32_t t : prompt) request.mutable_token_ids()->add_ids(static_cast<uint32_t>(t));
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(output_tokens));
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_output()->set_detokenize(false);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  RequestTiming timing;
  const Clock::time_point start = Clock::now();
  Clock::time_point first, last;
  auto reader = stub.Generate(&context, request);
  glimpse::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (!response.has_chunk() || response.chunk().token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (timing.output_tokens == 0) first = now;
    last = now;
    timing.output_tokens += response.chunk().token_ids_size();
  }
  const grpc::Status status = reader->Finish();
  timing.ok = status.ok() && timing.output_tokens > 0;
  if (!status.ok()) timing.error = status.error_message();
  timing.e2e_s = std::chrono::duration<double>(Clock::now() - start).count();
  timing.ttft_s = std::chrono::duration<double>(first - start).count();
  if (timing.output_tokens > 1) {
    timing.tpot_s = std::chrono::duration<double>(last - first).count() / (timing.output_tokens - 1);
  }
  return timing;
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
  const auto prompts = LoadPrompts(absl::GetFlag(FLAGS_prompts));
  if (prompts.empty()) {
    std::fprintf(stderr, "glimpse loadgen: no prompts with \"prompt_tokens\" in %s\n",
                 absl::GetFlag(FLAGS_prompts).c_str());
    return 2;
  }
  std::vector<int32_t> levels;
  for (const std::string& s : std::vector<std::string>(absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ','))) {
    int32_t n;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > 1024) {
      std::fprintf(stderr, "glimpse loadgen: --concurrency: '%s' is not in 1..1024\n", s.c_str());
      return 2;
    }
    levels.push_back(n);
  }
  const int32_t output_tokens = absl::GetFlag(FLAGS_output_tokens);
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "glimpse loadgen: cannot connect to %s; is `glimpse serve` running?\n",
                 absl::GetFlag(FLAGS_target).c_str());
    return 1;
  }
  auto stub = glimpse::v1::Engine::NewStub(channel);
  nlohmann::json json;
  json["target"] = absl::GetFlag(FLAGS_target);
  json["output_tokens"] = output_tokens;
  std::printf("| concurrency | requests | output tok/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | e2e p50 s | errors |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int32_t level : levels) {
    int32_t total = absl::GetFlag(FLAGS_requests_per_level);
    if (total <= 0) total = std::max(32, 4 * level);
    std::atomic<int32_t> next{0};
    std::mutex mu;
    std::vector<RequestTiming> timings;
    const Clock::time_point start = Clock::now();
    std::vector<std::thread> clients;
    for (int32_t c = 0; c < level; ++c) {
      clients.emplace_back([&] {
        for (int32_t i = next++; i < total; i = next++) {
          RequestTiming t = RunOne(*stub, prompts[i % prompts.size()], output_tokens);
          std::lock_guard<std::mutex> lock(mu);
          timings.push_back(std::move(t));
        }
      });
    }
    for (std::thread& t : clients) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - start).count();
    std::vector<double> ttft, tpot, e2e;
    int64_t tokens = 0;
    int32_t errors = 0;
    std::string first_error;
    for (const RequestTiming& t : timings) {
      if (!t.ok) {
        if (errors++ == 0) first_error = t.error;
        continue;
      }
      ttft.push_back(t.ttft_s * 1e3);
      tpot.push_back(t.tpot_s * 1e3);
      e2e.push_back(t.e2e_s);
      tokens += t.output_tokens;
    }
    const double tok_s = tokens / wall;
    std::printf("| %d | %d | %.1f | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f | %.2f | %d |\n", level,
                total, tok_s, Percentile(ttft, 50), Percentile(ttft, 90), Percentile(ttft, 99),
                Percentile(tpot, 50), Percentile(tpot, 90), Percentile(tpot, 99),
                Percentile(e2e, 50), errors);
    std::fflush(stdout);
    if (errors > 0) std::fprintf(stderr, "glimpse loadgen: first error: %s\n", first_error.c_str());
    json["levels"].push_back({{"concurrency", level},
                              {"requests", total},
                              {"errors", errors},
                              {"output_tok_s", tok_s},
                              {"ttft_ms", {{"p50", Percentile(ttft, 50)}, {"p90", Percentile(ttft, 90)}, {"p99", Percentile(ttft, 99)}}},
                              {"tpot_ms", {{"p50", Percentile(tpot, 50)}, {"p90", Percentile(tpot, 90)}, {"p99", Percentile(tpot, 99)}}},
                              {"e2e_s_p50", Percentile(e2e, 50)}});
  }
  const std::string out = absl::GetFlag(FLAGS_loadgen_json_out);
  if (!out.empty()) std::ofstream(out) << json.dump(2) << "\n";
  std::printf("\n%s\n", json.dump().c_str());
  return 0;
}

}  // namespace glimpse::tools
