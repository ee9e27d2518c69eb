// The OpenAI-compatible gateway end to end: real `glimpse serve` replicas and a real
// `glimpse gateway` process on loopback ports, driven with plain HTTP/1.1 clients (raw
// sockets). Outputs are checked against llama.cpp's references; errors against OpenAI's shape.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
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
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Reference {
  std::vector<int> prompt_tokens;
  std::vector<int> tokens;
  std::string text;
};

std::vector<Reference> References() {
  std::ifstream in("tests/data/refs/greedy_short.jsonl");
  std::vector<Reference> refs;
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    refs.push_back({j["prompt_tokens"].get<std::vector<int>>(), j["tokens"].get<std::vector<int>>(),
                    j["text"].get<std::string>()});
  }
  return refs;
}

using glimpse::testing::HttpResult;
using glimpse::testing::Http;

int Connect(int port) { return glimpse::testing::ConnectLoopback(port); }

// The `data:` payloads of an SSE body.
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> events;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    events.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return events;
}

double Metric(const std::string& text, const std::string& name_with_labels) {
  const size_t at = text.find("\n" + name_with_labels + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name_with_labels.size() + 2));
}

class GatewayE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    replica_ = new ChildProcess;
    replica_metrics_ = testing::FreePort();
    ASSERT_TRUE(replica_->Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                                 "--model=models/tinycode-4m-f16.gguf",
                                 "--metrics_port=" + std::to_string(replica_metrics_)},
                                "glimpse serve: listening on "));
    gateway_ = new ChildProcess;
    ASSERT_TRUE(gateway_->Start({"server/glimpse", "gateway", "--port=0",
                                 "--backends=127.0.0.1:" + std::to_string(replica_->port())},
                                "glimpse gateway: listening on "));
  }
  static void TearDownTestSuite() {
    delete gateway_;
    delete replica_;
  }
  static int port() { return gateway_->port(); }

  static ChildProcess* replica_;
  static ChildProcess* gateway_;
  static int replica_metrics_;
};

ChildProcess* GatewayE2eTest::replica_ = nullptr;
ChildProcess* GatewayE2eTest::gateway_ = nullptr;
int GatewayE2eTest::replica_metrics_ = 0;

TEST_F(GatewayE2eTest, CompletionReproducesLlamaCppAndReportsUsage) {
  const Reference ref = References()[0];
  json req = {{"prompt", ref.prompt_tokens}, {"max_tokens", ref.tokens.size()},
              {"temperature", 0}, {"ignore_eos", true}};
  HttpResult r = Http(port(), "POST", "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json body = json::parse(r.body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], ref.text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], ref.tokens.size());
  EXPECT_EQ(body["usage"]["prompt_tokens"], ref.prompt_tokens.size());
}

TEST_F(GatewayE2eTest, StreamingChatFollowsOpenAisEventShape) {
  json req = {{"messages", {{{"role", "user"}, {"content", "def f(x):"}}}},
              {"max_tokens", 8}, {"temperature", 0}, {"stream", true}, {"n", 2},
              {"stream_options", {{"include_usage", true}}}};
  HttpResult r = Http(port(), "POST", "/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.headers.find("text/event-stream"), std::string::npos);
  std::vector<std::string> events = Events(r.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<bool> saw_role(2, false), finished(2, false);
  std::vector<std::string> text(2);
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    for (const json& c : e["choices"]) {
      const int index = c["index"].get<int>();
      ASSERT_LT(index, 2);
      EXPECT_FALSE(finished[index]) << "chunk after finish_reason";
      if (c["delta"].contains("role")) saw_role[index] = true;
      if (c["delta"].contains("content")) text[index] += c["delta"]["content"].get<std::string>();
      if (!c["finish_reason"].is_null()) finished[index] = true;
    }
  }
  json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 16);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(saw_role[i]);
    EXPECT_TRUE(finished[i]);
  }
  EXPECT_EQ(text[0], text[1]) << "greedy choices agree";
  EXPECT_FALSE(text[0].empty());
}

TEST_F(GatewayE2eTest, ErrorsUseOpenAisShapeAndStatus) {
  HttpResult bad_type = Http(port(), "POST", "/v1/completions", R"({"prompt":"x","max_tokens":"a"})");
  EXPECT_EQ(bad_type.status, 400);
  json e = json::parse(bad_type.body);
  EXPECT_EQ(e["error"]["param"], "max_tokens");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Http(port(), "POST", "/v1/completions", "{not json").status, 400);
  EXPECT_EQ(Http(port(), "POST", "/v1/completions", R"({"prompt":"x","model":"nope"})").status, 404);
  HttpResult too_long = Http(port(), "POST", "/v1/completions",
                             json({{"prompt", std::vector<int>(600, 100)}, {"max_tokens", 4}}).dump());
  EXPECT_EQ(too_long.status, 400);
  EXPECT_NE(too_long.body.find("context_length_exceeded"), std::string::npos) << too_long.body;
  EXPECT_EQ(Http(port(), "POST", "/v1/completions", std::string(17 << 20, 'x')).status, 413);
  EXPECT_EQ(Http(port(), "GET", "/nope").status, 404);
  HttpResult models = Http(port(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "tinycode-4m-f16");
  EXPECT_EQ(Http(port(), "GET", "/health").status, 200);
}

TEST_F(GatewayE2eTest, DisconnectMidStreamFreesTheRequestOnTheReplica) {
  const Reference ref = References()[1];
  constexpr int kMaxTokens = 300;
  json req = {{"prompt", ref.prompt_tokens}, {"max_tokens", kMaxTokens}, {"ignore_eos", true},
              {"temperature", 0}, {"stream", true}};
  const std::string generated = "glimpse_generation_tokens_total{model_name=\"tinycode-4m-f16\"}";
  const double generated_before = Metric(Http(replica_metrics_, "GET", "/metrics").body, generated);
  const int fd = Connect(port());
  const std::string body = req.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char buf[4096];
  ASSERT_GT(read(fd, buf, sizeof(buf)), 0);  // Streaming has begun.
  close(fd);
  const auto until = Clock::now() + std::chrono::seconds(1);
  double running = -1;
  while (Clock::now() < until) {
    running = Metric(Http(replica_metrics_, "GET", "/metrics").body,
                     "glimpse_num_requests_running{model_name=\"tinycode-4m-f16\"}");
    if (running == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(running, 0) << "the replica still runs the abandoned request";
  // Running drops to 0 also when the request simply ran to max_tokens; it must have been cut.
  const double generated_after = Metric(Http(replica_metrics_, "GET", "/metrics").body, generated);
  ASSERT_GE(generated_before, 0);
  EXPECT_LT(generated_after - generated_before, kMaxTokens)
      << "the abandoned request was not aborted";
}

// 429 when the replica's queue is full; 503 (and /health 503) when no replica is healthy.
TEST(GatewayOverloadTest, FullQueueIs429AndNoHealthyReplicaIs503) {
  ChildProcess replica, gateway;
  ASSERT_TRUE(replica.Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                             "--model=models/tinycode-4m-f16.gguf", "--max_num_seqs=1",
                             "--max_waiting_requests=1"},
                            "glimpse serve: listening on "));
  ASSERT_TRUE(gateway.Start({"server/glimpse", "gateway", "--port=0",
                             "--backends=127.0.0.1:" + std::to_string(replica.port())},
                            "glimpse gateway: listening on "));
  const Reference ref = References()[0];
  json req = {{"prompt", ref.prompt_tokens}, {"max_tokens", 200}, {"ignore_eos", true},
              {"temperature", 0}};
  std::vector<int> statuses(6);
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] { statuses[i] = Http(gateway.port(), "POST", "/v1/completions", req.dump()).status; });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_GE(std::count(statuses.begin(), statuses.end(), 429), 1);
  EXPECT_GE(std::count(statuses.begin(), statuses.end(), 200), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 429) +
                std::count(statuses.begin(), statuses.end(), 200),
            6);

  replica.Signal(SIGKILL);
  replica.WaitExit(std::chrono::seconds(5));
  EXPECT_EQ(Http(gateway.port(), "POST", "/v1/completions", req.dump()).status, 503);
  const auto until = Clock::now() + std::chrono::seconds(5);
  int health = 0;
  while (Clock::now() < until && (health = Http(gateway.port(), "GET", "/health").status) != 503) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health, 503);
}

// Membership from DNS: "localhost:PORT" resolves to the replica (and possibly ::1, where
// nothing listens: that address stays unhealthy and gets no requests).
TEST(GatewayDnsTest, ReplicasResolvedFromADnsNameServeRequests) {
  ChildProcess replica, gateway;
  ASSERT_TRUE(replica.Start({"server/glimpse", "serve", "--port=0", "--threads=1",
                             "--model=models/tinycode-4m-f16.gguf"},
                            "glimpse serve: listening on "));
  ASSERT_TRUE(gateway.Start({"server/glimpse", "gateway", "--port=0",
                             "--backends_dns=localhost:" + std::to_string(replica.port())},
                            "glimpse gateway: listening on "));
  for (int i = 0; i < 3; ++i) {
    json req = {{"prompt", "def f(x):"}, {"max_tokens", 3}, {"temperature", 0}};
    EXPECT_EQ(Http(gateway.port(), "POST", "/v1/completions", req.dump()).status, 200);
  }
  const std::string metrics = Http(gateway.port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("glimpse_gateway_backend_healthy{backend=\"127.0.0.1:" +
                         std::to_string(replica.port()) + "\"} 1"),
            std::string::npos)
      << metrics;
}

// Two replicas: prompts sharing a long prefix stick to one replica; a killed replica's share
// moves to the other.
TEST(GatewayRoutingTest, PrefixAffinityAndFailover) {
  ChildProcess a, b, gateway;
  const std::vector<std::string> serve = {"server/glimpse", "serve", "--port=0", "--threads=1",
                                          "--model=models/tinycode-4m-f16.gguf"};
  ASSERT_TRUE(a.Start(serve, "glimpse serve: listening on "));
  ASSERT_TRUE(b.Start(serve, "glimpse serve: listening on "));
  ASSERT_TRUE(gateway.Start({"server/glimpse", "gateway", "--port=0",
                             "--backends=127.0.0.1:" + std::to_string(a.port()) + ",127.0.0.1:" +
                                 std::to_string(b.port())},
                            "glimpse gateway: listening on "));
  const std::vector<Reference> refs = References();
  // A 300-token prefix from two reference prompts, then different suffixes.
  std::vector<int> prefix = refs[0].prompt_tokens;
  prefix.insert(prefix.end(), refs[1].prompt_tokens.begin() + 1, refs[1].prompt_tokens.end());
  prefix.insert(prefix.end(), refs[2].prompt_tokens.begin() + 1, refs[2].prompt_tokens.end());
  ASSERT_GE(prefix.size(), 300u);
  prefix.resize(300);
  const auto sent_to = [&](const ChildProcess& replica) {
    return Metric(Http(gateway.port(), "GET", "/metrics").body,
                  "glimpse_gateway_backend_requests_total{backend=\"127.0.0.1:" +
                      std::to_string(replica.port()) + "\"}");
  };
  const double a_before = sent_to(a), b_before = sent_to(b);
  for (int i = 0; i < 6; ++i) {
    std::vector<int> prompt = prefix;
    prompt.push_back(100 + i);
    prompt.push_back(200 + i);
    json req = {{"prompt", prompt}, {"max_tokens", 2}, {"temperature", 0}};
    ASSERT_EQ(Http(gateway.port(), "POST", "/v1/completions", req.dump()).status, 200);
  }
  const double to_a = sent_to(a) - a_before, to_b = sent_to(b) - b_before;
  EXPECT_TRUE((to_a == 6 && to_b == 0) || (to_a == 0 && to_b == 6)) << to_a << " / " << to_b;

  // Kill the replica that had them: new requests go to the survivor.
  ChildProcess& busy = to_a == 6 ? a : b;
  busy.Signal(SIGKILL);
  busy.WaitExit(std::chrono::seconds(5));
  for (int i = 0; i < 4; ++i) {
    json req = {{"prompt", prefix}, {"max_tokens", 2}, {"temperature", 0}};
    EXPECT_EQ(Http(gateway.port(), "POST", "/v1/completions", req.dump()).status, 200) << i;
  }
}

}  // namespace
}  // namespace glimpse
