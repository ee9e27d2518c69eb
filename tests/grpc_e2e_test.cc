// End to end: starts the real `glimpse serve` binary on a loopback port and talks to it with a
// real gRPC client (the generated glimpse.v1 stub, and a generic stub for grpc.health.v1).
// Greedy outputs are checked against llama.cpp's references (tests/data/refs).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/glimpse/v1/engine.grpc.pb.h"
#include "proto/glimpse/v1/engine.pb.h"
#include "tests/child_process.h"
#include "tests/http_client.h"

namespace glimpse {
namespace {

namespace v1 = ::glimpse::v1;
using Clock = std::chrono::steady_clock;

struct Reference {
  std::string prompt;
  std::vector<uint32_t> prompt_tokens;
  std::vector<uint32_t> tokens;
  std::string text;
};

const std::vector<Reference>& References() {
  static const auto* refs = [] {
    auto* out = new std::vector<Reference>;
    std::ifstream in("tests/data/refs/greedy_short.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      out->push_back({j["prompt"].get<std::string>(),
                      j["prompt_tokens"].get<std::vector<uint32_t>>(),
                      j["tokens"].get<std::vector<uint32_t>>(), j["text"].get<std::string>()});
    }
    return out;
  }();
  return *refs;
}

using glimpse::testing::FreePort;

// One `glimpse serve` child process with a gRPC stub to it.
class ServerProcess {
 public:
  ::testing::AssertionResult Start(const std::vector<std::string>& extra_flags) {
    std::vector<std::string> args = {"server/glimpse", "serve", "--port=0", "--threads=2",
                                     "--model=models/tinycode-4m-f16.gguf"};
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    ::testing::AssertionResult started = process_.Start(args, "glimpse serve: listening on ");
    if (!started) return started;
    channel_ = grpc::CreateChannel(absl_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Engine::NewStub(channel_);
    return ::testing::AssertionSuccess();
  }
  void Signal(int sig) const { process_.Signal(sig); }
  int WaitExit(std::chrono::milliseconds timeout) { return process_.WaitExit(timeout); }
  std::string absl_address() const { return "127.0.0.1:" + std::to_string(process_.port()); }
  v1::Engine::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  glimpse::testing::ChildProcess process_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Engine::Stub> stub_;
};

// Everything one Generate call returned.
struct StreamResult {
  std::vector<uint32_t> tokens;  // Index 0.
  std::string text;
  std::optional<v1::GenerateResponse::PromptInfo> prompt;
  std::vector<v1::GenerateResponse::Complete> completes;
  int num_chunks = 0;
  int first_chunk_tokens = 0;
  grpc::Status status;
};

// Runs a Generate call to the end; with `cancel_after` > 0 the client cancels after that many
// messages.
StreamResult Generate(v1::Engine::Stub& stub, const v1::GenerateRequest& request,
                      std::optional<std::chrono::milliseconds> deadline = std::nullopt,
                      int cancel_after = 0) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       deadline.value_or(std::chrono::milliseconds(60000)));
  StreamResult r;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse m;
  int num_messages = 0;
  while (reader->Read(&m)) {
    if (m.has_prompt()) r.prompt = m.prompt();
    if (m.has_chunk() && m.chunk().index() == 0) {
      ++r.num_chunks;
      if (r.num_chunks == 1) r.first_chunk_tokens = m.chunk().token_ids_size();
      r.tokens.insert(r.tokens.end(), m.chunk().token_ids().begin(), m.chunk().token_ids().end());
      r.text += m.chunk().text();
    }
    if (m.has_complete()) r.completes.push_back(m.complete());
    if (++num_messages == cancel_after) context.TryCancel();
  }
  r.status = reader->Finish();
  return r;
}

v1::GenerateRequest Greedy(const std::vector<uint32_t>& prompt, uint32_t max_tokens) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  r.mutable_sampling()->set_temperature(0);
  r.mutable_stopping()->set_max_tokens(max_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

// grpc.health.v1.Health/Check through a generic stub (Debian ships no health.proto stubs):
// HealthCheckRequest{service = 1: string}, HealthCheckResponse{status = 1: enum}.
// Returns 1 SERVING, 2 NOT_SERVING, -1 on an RPC error.
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  std::string bytes = "\x0a" + std::string(1, static_cast<char>(service.size())) + service;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&done](grpc::Status s) { done.set_value(s); });
  if (!done.get_future().get().ok()) return -1;
  grpc::Slice out;
  if (!response.DumpToSingleSlice(&out).ok()) return -1;
  const std::string body(reinterpret_cast<const char*>(out.begin()), out.size());
  return body.size() == 2 && body[0] == 0x08 ? body[1] : 0;
}

v1::SchedulerLoad Loads(v1::Engine::Stub& stub) {
  grpc::ClientContext context;
  v1::GetLoadsRequest request;
  request.add_include("all");
  v1::GetLoadsResponse response;
  EXPECT_TRUE(stub.GetLoads(&context, request, &response).ok());
  return response.loads_size() > 0 ? response.loads(0) : v1::SchedulerLoad();
}

// Polls until the KV blocks in use drop to 0 (idle), up to 2 s.
bool BlocksReturnToIdle(v1::Engine::Stub& stub) {
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < until) {
    if (Loads(stub).kv().used_blocks() == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// The body of `GET path` on 127.0.0.1:port, or "" on error.
std::string HttpGet(int port, const std::string& path) {
  return glimpse::testing::Http(port, "GET", path).body;
}

// The value of the first sample of `name` in a Prometheus text body, or -1.
double MetricValue(const std::string& body, const std::string& name) {
  size_t at = 0;
  while ((at = body.find(name, at)) != std::string::npos) {
    const bool line_start = at == 0 || body[at - 1] == '\n';
    const char next = at + name.size() < body.size() ? body[at + name.size()] : '\0';
    if (line_start && (next == '{' || next == ' ')) {
      const size_t end = body.find('\n', at);
      const std::string line = body.substr(at, end == std::string::npos ? end : end - at);
      return std::stod(line.substr(line.find_last_of(' ') + 1));
    }
    at += name.size();
  }
  return -1;
}

class GrpcE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess;
    ASSERT_TRUE(server_->Start({}));
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  v1::Engine::Stub& stub() { return server_->stub(); }

  static ServerProcess* server_;
};

ServerProcess* GrpcE2eTest::server_ = nullptr;

TEST_F(GrpcE2eTest, GreedyTokenIdsStreamTheReferenceTokens) {
  const Reference& ref = References()[0];
  StreamResult r = Generate(stub(), Greedy(ref.prompt_tokens, ref.tokens.size()));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.tokens, ref.tokens);
  // Tokens stream: the first message holds the first few tokens, not the output. (How the
  // output is split varies: what queues behind a write in flight goes out in one message.)
  EXPECT_GE(r.num_chunks, 2) << "tokens must stream";
  EXPECT_LT(r.first_chunk_tokens, static_cast<int>(ref.tokens.size()) / 2) << "tokens must stream";
  EXPECT_EQ(r.text, "") << "token-id input is not detokenized by default";
  EXPECT_FALSE(r.prompt.has_value());
  ASSERT_EQ(r.completes.size(), 1u);
  EXPECT_EQ(r.completes[0].finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.completes[0].usage().completion_tokens(), ref.tokens.size());
  EXPECT_EQ(r.completes[0].usage().prompt_tokens(), ref.prompt_tokens.size());
}

TEST_F(GrpcE2eTest, TextInputStreamsPromptInfoAndTheReferenceText) {
  const Reference& ref = References()[1];
  v1::GenerateRequest request = Greedy({}, ref.tokens.size());
  request.set_text(ref.prompt);
  request.set_request_id("text-input");
  request.mutable_output()->set_return_prompt_token_ids(true);
  StreamResult r = Generate(stub(), request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.prompt.has_value());
  EXPECT_EQ(std::vector<uint32_t>(r.prompt->token_ids().begin(), r.prompt->token_ids().end()),
            ref.prompt_tokens);
  EXPECT_EQ(r.prompt->prompt_tokens(), ref.prompt_tokens.size());
  EXPECT_EQ(r.tokens, ref.tokens);
  EXPECT_EQ(r.text, ref.text);
}

TEST_F(GrpcE2eTest, TokenizeAndDetokenizeRoundTrip) {
  const Reference& ref = References()[2];
  grpc::ClientContext c1;
  v1::TokenizeRequest tokenize;
  tokenize.set_text(ref.prompt);
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub().Tokenize(&c1, tokenize, &ids).ok());
  EXPECT_EQ(std::vector<uint32_t>(ids.token_ids().begin(), ids.token_ids().end()),
            ref.prompt_tokens);
  EXPECT_EQ(ids.count(), ref.prompt_tokens.size());
  // Without BOS the round trip is exact (Detokenize drops the SPM dummy-prefix space; after a
  // leading BOS llama.cpp keeps it, and so do we).
  grpc::ClientContext c2;
  tokenize.set_add_special_tokens(false);
  ASSERT_TRUE(stub().Tokenize(&c2, tokenize, &ids).ok());
  EXPECT_EQ(ids.count() + 1, ref.prompt_tokens.size());
  grpc::ClientContext c4;
  v1::DetokenizeRequest detokenize;
  detokenize.mutable_token_ids()->CopyFrom(ids.token_ids());
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub().Detokenize(&c4, detokenize, &text).ok());
  EXPECT_EQ(text.text(), ref.prompt);

  // The bundled model has no chat template: the documented default (ChatML) renders it.
  grpc::ClientContext c3;
  v1::TokenizeRequest chat;
  auto* message = chat.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content("hi");
  v1::TokenizeResponse chat_ids;
  ASSERT_TRUE(stub().Tokenize(&c3, chat, &chat_ids).ok());
  EXPECT_EQ(chat_ids.rendered_prompt(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_GT(chat_ids.count(), 5u);
  // A request-supplied Llama 3 template is recognised and rendered natively.
  grpc::ClientContext c5;
  chat.mutable_chat()->set_chat_template(
      "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
      "{% endfor %}");
  ASSERT_TRUE(stub().Tokenize(&c5, chat, &chat_ids).ok());
  EXPECT_NE(chat_ids.rendered_prompt().find("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"),
            std::string::npos)
      << chat_ids.rendered_prompt();
  // Role-order violations are INVALID_ARGUMENT.
  grpc::ClientContext c6;
  v1::TokenizeRequest bad;
  bad.mutable_chat()->add_messages()->set_role("narrator");
  EXPECT_EQ(stub().Tokenize(&c6, bad, &chat_ids).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(GrpcE2eTest, BadRequestsGetTheDocumentedStatus) {
  v1::GenerateRequest empty;
  empty.set_text("");
  EXPECT_EQ(Generate(stub(), empty).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::GenerateRequest other = Greedy(References()[0].prompt_tokens, 4);
  other.set_model("no-such-model");
  EXPECT_EQ(Generate(stub(), other).status.error_code(), grpc::StatusCode::NOT_FOUND);

  StreamResult too_long = Generate(stub(), Greedy(std::vector<uint32_t>(600, 300), 4));
  EXPECT_EQ(too_long.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(too_long.status.error_message().find("context_length_exceeded"), std::string::npos)
      << too_long.status.error_message();
}

TEST_F(GrpcE2eTest, CancelledStreamFreesItsBlocks) {
  const Reference& ref = References()[0];
  StreamResult r = Generate(stub(), Greedy(ref.prompt_tokens, 400), std::nullopt,
                            /*cancel_after=*/3);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(r.tokens.size(), 400u);
  EXPECT_TRUE(BlocksReturnToIdle(stub()));
}

TEST_F(GrpcE2eTest, DeadlineEndsTheCallAndFreesItsBlocks) {
  const Reference& ref = References()[0];
  StreamResult r =
      Generate(stub(), Greedy(ref.prompt_tokens, 440), std::chrono::milliseconds(40));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(r.tokens.size(), 440u);
  EXPECT_TRUE(BlocksReturnToIdle(stub()));
}

TEST_F(GrpcE2eTest, HealthServicesReportServing) {
  EXPECT_EQ(HealthStatus(server_->channel(), ""), 1);
  EXPECT_EQ(HealthStatus(server_->channel(), "glimpse.v1.Engine"), 1);
  grpc::ClientContext context;
  v1::HealthCheckResponse health;
  ASSERT_TRUE(stub().HealthCheck(&context, v1::HealthCheckRequest(), &health).ok());
  EXPECT_TRUE(health.healthy());
  EXPECT_EQ(health.state(), v1::HEALTH_STATE_READY);
  grpc::ClientContext c2;
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub().GetModelInfo(&c2, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.served_model_name(), "tinycode-4m-f16");
  EXPECT_EQ(info.max_context_length(), 512u);
}

// What grpcurl does first: ServerReflectionInfo with list_services. Debian ships no
// reflection stubs, so the request is hand-encoded: ServerReflectionRequest field 7
// (list_services, a string) = "" is the two bytes 0x3a 0x00. The response lists service
// names as plain strings, which is all this checks.
TEST_F(GrpcE2eTest, ServerReflectionListsTheEngineAndHealthServices) {
  grpc::GenericStub stub(server_->channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto wait = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(wait(1));
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  call->Write(buffer, reinterpret_cast<void*>(2));
  ASSERT_TRUE(wait(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(wait(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(wait(4)) << "no reflection response: is server reflection enabled?";
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait(5);
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  grpc::Slice out;
  ASSERT_TRUE(response.DumpToSingleSlice(&out).ok());
  const std::string body(reinterpret_cast<const char*>(out.begin()), out.size());
  EXPECT_NE(body.find("glimpse.v1.Engine"), std::string::npos);
  EXPECT_NE(body.find("grpc.health.v1.Health"), std::string::npos);
}

// A fresh server, so that the decode-batch figures cover only these 32 streams; three write
// threads, so that the streams' responses are built and sent by several at once.
TEST(GrpcE2eConcurrencyTest, ThirtyTwoConcurrentStreamsMatchAloneAndBatch) {
  ServerProcess server;
  const int metrics_port = FreePort();
  ASSERT_TRUE(
      server.Start({"--metrics_port=" + std::to_string(metrics_port), "--write_threads=3"}));
  const std::vector<Reference>& refs = References();
  ASSERT_GE(refs.size(), 32u);
  std::vector<StreamResult> results(32);
  std::vector<std::thread> threads;
  for (int i = 0; i < 32; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(server.stub(), Greedy(refs[i].prompt_tokens, refs[i].tokens.size()));
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 32; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].tokens, refs[i].tokens) << "stream " << i;
  }
  const std::string metrics = HttpGet(metrics_port, "/metrics");
  const double mean = MetricValue(metrics, "glimpse_decode_batch_size_mean");
  EXPECT_GE(mean, 16.0) << metrics;
  EXPECT_GT(MetricValue(metrics, "glimpse_generation_tokens_total"), 32 * 47);
  EXPECT_GT(MetricValue(metrics, "glimpse_time_to_first_token_seconds_count"), 31);
}

// A second request sharing a long prefix with the first computes only its uncached tokens
// (the forward-token counter says so), and its output equals a run that bypasses the cache.
TEST(GrpcE2ePrefixCacheTest, SharedPrefixComputesOnlyUncachedTokens) {
  ServerProcess server;
  const int metrics_port = FreePort();
  ASSERT_TRUE(server.Start({"--metrics_port=" + std::to_string(metrics_port)}));
  const std::vector<Reference>& refs = References();
  std::vector<uint32_t> a = refs[1].prompt_tokens, b = refs[1].prompt_tokens;
  a.insert(a.end(), refs[2].prompt_tokens.begin() + 1, refs[2].prompt_tokens.begin() + 20);
  b.insert(b.end(), refs[3].prompt_tokens.begin() + 1, refs[3].prompt_tokens.begin() + 20);
  auto forward_tokens = [&] {
    return MetricValue(HttpGet(metrics_port, "/metrics"), "glimpse_forward_tokens_total");
  };
  ASSERT_TRUE(Generate(server.stub(), Greedy(a, 16)).status.ok());
  const double before = forward_tokens();
  StreamResult cached = Generate(server.stub(), Greedy(b, 16));
  const double cached_work = forward_tokens() - before;
  v1::GenerateRequest bypass = Greedy(b, 16);
  bypass.mutable_kv()->set_bypass_prefix_cache(true);
  const double before_bypass = forward_tokens();
  StreamResult uncached = Generate(server.stub(), bypass);
  const double uncached_work = forward_tokens() - before_bypass;
  ASSERT_TRUE(cached.status.ok() && uncached.status.ok());
  EXPECT_EQ(cached.tokens, uncached.tokens);
  const int shared_tokens = static_cast<int>(refs[1].prompt_tokens.size()) / 16 * 16;
  EXPECT_EQ(uncached_work, static_cast<double>(b.size() + 15));
  EXPECT_EQ(cached_work, static_cast<double>(b.size() - shared_tokens + 15));
  ASSERT_EQ(cached.completes.size(), 1u);
  EXPECT_EQ(cached.completes[0].usage().cached_tokens(), static_cast<uint32_t>(shared_tokens));
}

// A KV pool far too small for 8 concurrent sequences forces preemption; every output stays
// what llama.cpp produced, in recompute and in swap mode.
TEST(GrpcE2ePreemptionTest, TinyKvPoolPreemptsInBothModesAndOutputsStayIdentical) {
  const std::vector<Reference>& refs = References();
  // The bundled model's KV block: 6 layers x (K + V) x 16 slots x 64 floats x 4 bytes.
  const int64_t block_bytes = 6 * 2 * 16 * 64 * 4;
  for (const std::string mode : {"recompute", "swap"}) {
    ServerProcess server;
    const int metrics_port = FreePort();
    ASSERT_TRUE(server.Start({"--metrics_port=" + std::to_string(metrics_port),
                              "--kv_cache_bytes=" + std::to_string(40 * block_bytes),
                              "--preemption_mode=" + mode,
                              "--swap_space_bytes=" + std::to_string(200 * block_bytes)}));
    std::vector<StreamResult> results(8);
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
      threads.emplace_back([&, i] {
        results[i] = Generate(server.stub(), Greedy(refs[i].prompt_tokens, refs[i].tokens.size()));
      });
    }
    for (std::thread& t : threads) t.join();
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(results[i].status.ok()) << mode << " " << results[i].status.error_message();
      EXPECT_EQ(results[i].tokens, refs[i].tokens) << mode << " stream " << i;
    }
    const std::string metrics = HttpGet(metrics_port, "/metrics");
    EXPECT_GT(MetricValue(metrics, "glimpse_num_preemptions_total"), 0) << mode;
    EXPECT_TRUE(BlocksReturnToIdle(server.stub())) << mode;
  }
}

// GetServerInfo and the metrics' cache_config_info report the KV cache as configured: an fp16
// cache holds twice the blocks of an fp32 one in the same bytes, and the engine still
// reproduces llama.cpp over it.
TEST(GrpcE2eServerInfoTest, ReportsTheKvCacheTypeAndItsBlocks) {
  // The bundled model's KV block: 6 layers x (K + V) x 16 slots x 64 values.
  const int64_t block_values = 6 * 2 * 16 * 64;
  const int64_t budget = 300 * block_values * 4;  // 300 fp32 blocks
  for (const auto& [dtype, element_bytes] : {std::pair{"fp32", 4}, std::pair{"f16", 2}}) {
    ServerProcess server;
    const int metrics_port = FreePort();
    ASSERT_TRUE(server.Start({"--kv_cache_bytes=" + std::to_string(budget),
                              std::string("--kv_cache_dtype=") + dtype,
                              "--metrics_port=" + std::to_string(metrics_port)}));
    grpc::ClientContext context;
    v1::GetServerInfoResponse info;
    ASSERT_TRUE(server.stub().GetServerInfo(&context, v1::GetServerInfoRequest(), &info).ok());
    EXPECT_EQ(info.kv_cache_dtype(), dtype);
    EXPECT_EQ(info.total_kv_blocks(),
              static_cast<uint32_t>(budget / (block_values * element_bytes)))
        << dtype;
    EXPECT_EQ(info.kv_cache_bytes(),
              static_cast<uint64_t>(info.total_kv_blocks()) * block_values * element_bytes)
        << dtype;
    // The same facts in the metrics' info series.
    const std::string metrics = HttpGet(metrics_port, "/metrics");
    const std::string series =
        std::string("glimpse_cache_config_info{model_name=\"tinycode-4m-f16\",kv_cache_dtype=\"") +
        dtype + "\",block_size=\"16\",num_kv_blocks=\"" + std::to_string(info.total_kv_blocks()) +
        "\",num_host_blocks=\"0\",prefix_caching=\"true\"} 1";
    EXPECT_NE(metrics.find(series), std::string::npos) << series << "\n" << metrics;
    const Reference& ref = References()[0];
    StreamResult r = Generate(server.stub(), Greedy(ref.prompt_tokens, ref.tokens.size()));
    ASSERT_TRUE(r.status.ok()) << dtype << " " << r.status.error_message();
    EXPECT_EQ(r.tokens, ref.tokens) << dtype;
  }
}

// With one running sequence and one waiting slot, a burst of requests overflows the queue:
// the overflow gets RESOURCE_EXHAUSTED, the rest complete.
TEST(GrpcE2eAdmissionTest, FullQueueAnswersResourceExhausted) {
  ServerProcess server;
  ASSERT_TRUE(server.Start({"--max_num_seqs=1", "--max_waiting_requests=1"}));
  const std::vector<Reference>& refs = References();
  std::vector<StreamResult> results(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(server.stub(), Greedy(refs[i].prompt_tokens, 200));
    });
  }
  for (std::thread& t : threads) t.join();
  int exhausted = 0, ok = 0;
  for (const StreamResult& r : results) {
    if (r.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++exhausted;
    if (r.status.ok()) ++ok;
  }
  EXPECT_GE(exhausted, 1);
  EXPECT_GE(ok, 1);
  EXPECT_EQ(exhausted + ok, 6);
}

// SIGTERM while streams run: health flips to NOT_SERVING, new requests get UNAVAILABLE, the
// running streams finish, and the process exits 0.
TEST(GrpcE2eDrainTest, SigtermDrainsThenExitsZero) {
  ServerProcess server;
  ASSERT_TRUE(server.Start({"--drain_timeout_seconds=30"}));
  const std::vector<Reference>& refs = References();
  constexpr int kStreams = 8;
  // Up to the context limit, so that the streams outlast the checks below (~1 s on 2 cores).
  auto max_tokens = [&](int i) {
    return static_cast<uint32_t>(512 - refs[i].prompt_tokens.size());
  };
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(server.stub(), Greedy(refs[i].prompt_tokens, max_tokens(i)));
    });
  }
  // Wait until the streams are generating.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (Loads(server.stub()).num_running_reqs() < kStreams / 2 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  server.Signal(SIGTERM);
  int health = 1;
  const auto health_until = Clock::now() + std::chrono::seconds(2);
  while (health == 1 && Clock::now() < health_until) health = HealthStatus(server.channel(), "");
  EXPECT_EQ(health, 2) << "grpc.health.v1 must say NOT_SERVING while draining";
  grpc::ClientContext context;
  v1::HealthCheckResponse state;
  ASSERT_TRUE(server.stub().HealthCheck(&context, v1::HealthCheckRequest(), &state).ok());
  EXPECT_EQ(state.state(), v1::HEALTH_STATE_DRAINING);
  EXPECT_EQ(Generate(server.stub(), Greedy(refs[0].prompt_tokens, 4)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    ASSERT_EQ(results[i].completes.size(), 1u);
    EXPECT_EQ(results[i].completes[0].finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(results[i].tokens.size(), max_tokens(i));
  }
  EXPECT_EQ(server.WaitExit(std::chrono::seconds(20)), 0);
}

}  // namespace
}  // namespace glimpse
