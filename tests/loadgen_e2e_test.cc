// `glimpse loadgen` against a live server, over gRPC and over HTTP (through the gateway): the
// tokens it counts equal the server's own counters (glimpse_generation_tokens_total,
// glimpse_prompt_tokens_total) read by the test before and after each run; the server counters
// loadgen itself reports agree; the JSON holds every request; plots and the markdown report are
// written; the scenario workloads do what they claim on the server (shared prefixes hit the
// prefix cache); and a time-bounded open-loop run stops by itself.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/child_process.h"
#include "tests/http_client.h"

namespace glimpse {
namespace {

using glimpse::testing::ChildProcess;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A counter's value summed over label sets, read by the test itself (not by loadgen's parser).
double Counter(int metrics_port, const std::string& name) {
  const std::string text = glimpse::testing::Http(metrics_port, "GET", "/metrics").body;
  double sum = 0;
  bool found = false;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : -1;
}

std::string TmpDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return tmp != nullptr ? tmp : "/tmp";
}

// Runs loadgen with `flags` and returns its JSON (null on failure).
nlohmann::json RunLoadgen(const std::string& url, const std::string& flags) {
  const std::string json_path = TmpDir() + "/loadgen.json";
  std::filesystem::remove(json_path);
  const std::string command = "server/glimpse loadgen --url=" + url + " --warmup_requests=0 " +
                              flags + " --json=" + json_path + " > " + TmpDir() +
                              "/loadgen.out 2>&1";
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << command << "\n" << ReadFile(TmpDir() + "/loadgen.out");
    return nullptr;
  }
  return nlohmann::json::parse(ReadFile(json_path), nullptr, false);
}

class LoadgenE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics_port_ = testing::FreePort();
    ASSERT_TRUE(replica_.Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                                "--model=models/tinycode-4m-f16.gguf",
                                "--metrics_port=" + std::to_string(metrics_port_)},
                               "glimpse serve: listening on "));
    ASSERT_TRUE(gateway_.Start({"server/glimpse", "gateway", "--port=0",
                                "--backends=127.0.0.1:" + std::to_string(replica_.port())},
                               "glimpse gateway: listening on "));
  }
  std::string GrpcUrl() const { return "grpc://127.0.0.1:" + std::to_string(replica_.port()); }
  std::string HttpUrl() const {
    return "http://127.0.0.1:" + std::to_string(gateway_.port()) + "/v1";
  }
  std::string MetricsFlag() const {
    return "--metrics_url=http://127.0.0.1:" + std::to_string(metrics_port_) + "/metrics";
  }

  int metrics_port_ = 0;
  ChildProcess replica_, gateway_;
};

TEST_F(LoadgenE2eTest, TokenCountsEqualTheServersCountersOverGrpcHttpAndChat) {
  struct Case {
    std::string url;
    std::string flags;
  };
  const std::vector<Case> cases = {
      {GrpcUrl(), ""},
      {HttpUrl(), ""},
      {HttpUrl(), "--endpoint=chat"},
      {GrpcUrl(), "--dataset=jsonl:tests/data/refs/greedy_short.jsonl"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.url + " " + c.flags);
    const double generated_before = Counter(metrics_port_, "glimpse_generation_tokens_total");
    const double prompt_before = Counter(metrics_port_, "glimpse_prompt_tokens_total");
    nlohmann::json result =
        RunLoadgen(c.url, "--concurrency=3 --requests=9 --max_tokens=20 --ignore_eos " +
                              MetricsFlag() + " " + c.flags);
    ASSERT_FALSE(result.is_null() || result.is_discarded());
    const double generated = Counter(metrics_port_, "glimpse_generation_tokens_total") -
                             generated_before;
    const double prompt = Counter(metrics_port_, "glimpse_prompt_tokens_total") - prompt_before;
    EXPECT_EQ(result["requests_ok"], 9);
    EXPECT_EQ(result["requests_failed"], 0);
    EXPECT_EQ(result["output_tokens"], 9 * 20);
    EXPECT_EQ(generated, result["output_tokens"].get<double>());
    // Prompt tokens as the client knows them (ids sent, or the server's usage for text).
    EXPECT_EQ(prompt, result["input_tokens"].get<double>());
    // What loadgen read from the server agrees with what the test read.
    EXPECT_EQ(result["server"]["generation_tokens"].get<double>(), generated);
    EXPECT_EQ(result["server"]["prompt_tokens"].get<double>(), prompt);
    for (const char* key : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
      EXPECT_GT(result[key]["p50"].get<double>(), 0) << key;
      EXPECT_LE(result[key]["p50"].get<double>(), result[key]["p99"].get<double>()) << key;
    }
    // Every request's timings are in the JSON.
    const nlohmann::json& requests = result["levels"][0]["requests"];
    ASSERT_EQ(requests.size(), 9u);
    for (const nlohmann::json& r : requests) {
      EXPECT_TRUE(r["ok"].get<bool>());
      EXPECT_EQ(r["output_tokens"], 20);
      EXPECT_GT(r["ttft_ms"].get<double>(), 0);
      EXPECT_GE(r["e2e_ms"].get<double>(), r["ttft_ms"].get<double>());
      EXPECT_LE(r["itl_ms"].size(), 19u);
      EXPECT_GE(r["itl_ms"].size(), 1u);
    }
  }
}

TEST_F(LoadgenE2eTest, WritesPlotsAndAMarkdownReportForASweep) {
  const std::string dir = TmpDir() + "/report";
  nlohmann::json result = RunLoadgen(
      GrpcUrl(), "--concurrency=1,2 --requests=4 --max_tokens=8 --ignore_eos --plots_dir=" +
                     dir + "/plots --markdown=" + dir + "/report.md " + MetricsFlag());
  ASSERT_FALSE(result.is_null() || result.is_discarded());
  ASSERT_EQ(result["levels"].size(), 2u);
  for (const char* plot : {"ttft_cdf.svg", "tpot_cdf.svg", "itl_cdf.svg", "e2e_cdf.svg",
                           "throughput.svg", "latency.svg"}) {
    const std::string svg = ReadFile(dir + "/plots/" + plot);
    EXPECT_EQ(svg.rfind("<svg", 0), 0u) << plot;
    EXPECT_NE(svg.find("</svg>"), std::string::npos) << plot;
  }
  const std::string md = ReadFile(dir + "/report.md");
  EXPECT_NE(md.find("| concurrency |"), std::string::npos) << md;
  EXPECT_NE(md.find("](plots/throughput.svg)"), std::string::npos) << md;
  EXPECT_NE(md.find("| generation_tokens |"), std::string::npos) << md;
}

TEST_F(LoadgenE2eTest, SharedPrefixWorkloadHitsThePrefixCache) {
  nlohmann::json result = RunLoadgen(
      GrpcUrl(), "--dataset=shared-prefix --prefix_groups=2 --prefix_len=64 "
                 "--input_len=fixed:8 --concurrency=2 --requests=8 --max_tokens=4 --ignore_eos " +
                     MetricsFlag());
  ASSERT_FALSE(result.is_null() || result.is_discarded());
  EXPECT_EQ(result["requests_ok"], 8);
  // 8 requests over 2 prefixes: at least 6 reuse a cached 64-token prefix (whole 16-token
  // blocks: 64 tokens = 4 blocks).
  EXPECT_GE(result["server"]["prefix_cache_hits"].get<double>(), 6 * 64);
}

TEST_F(LoadgenE2eTest, OpenLoopRunStopsAtItsTimeLimitAndSaysWhatWasNotSent) {
  // 1000 requests at 5/s would take 200 s; the limit stops sending after 2 s.
  nlohmann::json result = RunLoadgen(
      GrpcUrl(), "--rate=5 --requests=1000 --max_duration_s=2 --max_tokens=4 --ignore_eos");
  ASSERT_FALSE(result.is_null() || result.is_discarded());
  EXPECT_EQ(result["requests_failed"], 0);
  EXPECT_GT(result["requests_ok"].get<int>(), 0);
  EXPECT_LT(result["requests_ok"].get<int>(), 100);
  EXPECT_EQ(result["requests_not_sent"].get<int>() + result["requests_ok"].get<int>(), 1000);
  EXPECT_EQ(result["rate"].get<double>(), 5.0);
}

// `glimpse serve --http_port` serves the engine's counters on the OpenAI port's /metrics too, so
// loadgen's default metrics URL for an HTTP target ({url}/metrics) finds them.
TEST(LoadgenInProcessGatewayTest, ReadsTheEngineCountersFromTheOpenAiPort) {
  ChildProcess server;
  const int http_port = testing::FreePort();
  ASSERT_TRUE(server.Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                            "--model=models/tinycode-4m-f16.gguf",
                            "--http_port=" + std::to_string(http_port)},
                           "glimpse serve: listening on "));
  // The OpenAI port opens just after the gRPC one.
  double before = -1;
  for (int i = 0; i < 100 && before < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    before = Counter(http_port, "glimpse_generation_tokens_total");
  }
  ASSERT_GE(before, 0) << "no engine counters on the OpenAI port's /metrics";
  nlohmann::json result =
      RunLoadgen("http://127.0.0.1:" + std::to_string(http_port) + "/v1",
                 "--concurrency=2 --requests=4 --max_tokens=10 --ignore_eos");
  ASSERT_FALSE(result.is_null() || result.is_discarded());
  EXPECT_EQ(result["output_tokens"], 40);
  EXPECT_EQ(Counter(http_port, "glimpse_generation_tokens_total") - before, 40);
  EXPECT_EQ(result["server"]["generation_tokens"].get<double>(), 40);
}

TEST(LoadgenCliTest, RefusesRemoteTargetsAndBadFlagsWithAClearMessage) {
  const std::string out = TmpDir() + "/cli.out";
  auto run = [&](const std::string& flags) {
    const int status = std::system(("server/glimpse loadgen " + flags + " > " + out + " 2>&1").c_str());
    return std::make_pair(WEXITSTATUS(status), ReadFile(out));
  };
  auto [code, text] = run("--url=grpc://10.1.2.3:50051");
  EXPECT_EQ(code, 2);
  EXPECT_NE(text.find("--allow_remote"), std::string::npos) << text;
  std::tie(code, text) = run("--url=https://127.0.0.1:1/v1");
  EXPECT_EQ(code, 2);
  EXPECT_NE(text.find("grpc:// or http://"), std::string::npos) << text;
  std::tie(code, text) = run("--url=http://127.0.0.1:1/v1 --input_len=triangle:3");
  EXPECT_NE(code, 0);
  EXPECT_NE(text.find("triangle:3"), std::string::npos) << text;
  std::tie(code, text) = run("--url=grpc://127.0.0.1:1 --endpoint=chat");
  EXPECT_NE(code, 0);
  EXPECT_NE(text.find("--endpoint=chat needs an http://"), std::string::npos) << text;
}

}  // namespace
}  // namespace glimpse
