// `glimpse loadgen` against a live server, over gRPC and over HTTP (through the gateway): the
// output tokens it counts equal the server's own glimpse_generation_tokens_total, read before
// and after each run.

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/child_process.h"
#include "tests/http_client.h"

namespace glimpse {
namespace {

using glimpse::testing::ChildProcess;

std::string HttpGet(int port, const std::string& path) {
  return glimpse::testing::Http(port, "GET", path).body;
}

double GeneratedTokens(int metrics_port) {
  const std::string text = HttpGet(metrics_port, "/metrics");
  const std::string name = "\nglimpse_generation_tokens_total{";
  const size_t at = text.find(name);
  if (at == std::string::npos) return -1;
  const size_t space = text.find(' ', at + 1);
  return std::stod(text.substr(space + 1));
}

// Runs loadgen and returns its JSON (null on failure).
nlohmann::json RunLoadgen(const std::string& url) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string json_path = std::string(tmp != nullptr ? tmp : "/tmp") + "/loadgen.json";
  const std::string command = "server/glimpse loadgen --url=" + url +
                              " --concurrency=3 --requests=9 --max_tokens=20 --ignore_eos --warmup_requests=0"
                              " --json=" + json_path + " > /dev/null 2>&1";
  if (std::system(command.c_str()) != 0) return nullptr;
  std::ifstream in(json_path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str(), nullptr, false);
}

TEST(LoadgenE2eTest, TokenCountsEqualTheServersCountersOverGrpcAndHttp) {
  ChildProcess replica, gateway;
  const int metrics_port = testing::FreePort();
  ASSERT_TRUE(replica.Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                             "--model=models/tinycode-4m-f16.gguf",
                             "--metrics_port=" + std::to_string(metrics_port)},
                            "glimpse serve: listening on "));
  ASSERT_TRUE(gateway.Start({"server/glimpse", "gateway", "--port=0",
                             "--backends=127.0.0.1:" + std::to_string(replica.port())},
                            "glimpse gateway: listening on "));
  for (const std::string& url : {"grpc://127.0.0.1:" + std::to_string(replica.port()),
                                "http://127.0.0.1:" + std::to_string(gateway.port()) + "/v1"}) {
    const double before = GeneratedTokens(metrics_port);
    nlohmann::json result = RunLoadgen(url);
    ASSERT_FALSE(result.is_null() || result.is_discarded()) << url;
    const double after = GeneratedTokens(metrics_port);
    EXPECT_EQ(result["requests_ok"], 9) << url;
    EXPECT_EQ(result["requests_failed"], 0) << url;
    EXPECT_EQ(result["output_tokens"], 9 * 20) << url;
    EXPECT_EQ(after - before, result["output_tokens"].get<double>()) << url;
    for (const char* key : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
      EXPECT_GT(result[key]["p50"].get<double>(), 0) << url << " " << key;
      EXPECT_LE(result[key]["p50"].get<double>(), result[key]["p99"].get<double>()) << url << key;
    }
  }
}

}  // namespace
}  // namespace glimpse
