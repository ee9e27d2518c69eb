// Load: at least 1,000 streaming completions held open at once through the gateway, each of
// 64 tokens, each ending with [DONE] and correct usage; the gateway's open-streams gauge must
// reach 1,000. The replica's running and queue limits are raised for it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/child_process.h"
#include "tests/http_client.h"

namespace glimpse {
namespace {

using glimpse::testing::ChildProcess;
using Clock = std::chrono::steady_clock;

int Connect(int port) { return glimpse::testing::ConnectLoopback(port); }

std::string Get(int port, const std::string& path) {
  return glimpse::testing::Http(port, "GET", path).body;
}

double OpenStreams(int port) {
  const std::string text = Get(port, "/metrics");
  const size_t at = text.find("\nglimpse_gateway_open_streams ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + 30));
}

TEST(GatewayLoadTest, HoldsAThousandStreamsThatAllCompleteWithUsage) {
  constexpr int kStreams = 1000;
  constexpr int kTokens = 64;
  rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2 * kStreams + 100) GTEST_SKIP() << "open-file limit too low";

  ChildProcess replica, gateway;
  ASSERT_TRUE(replica.Start({"server/glimpse", "serve", "--port=0", "--threads=2",
                             "--model=models/tinycode-4m-f16.gguf", "--max_num_seqs=1024",
                             "--max_waiting_requests=4096", "--max_num_batched_tokens=4096",
                             "--kv_cache_bytes=400000000"},
                            "glimpse serve: listening on "));
  ASSERT_TRUE(gateway.Start({"server/glimpse", "gateway", "--port=0",
                             "--backends=127.0.0.1:" + std::to_string(replica.port())},
                            "glimpse gateway: listening on "));
  // Every connection is open before any request is sent, and the requests then go out in one
  // tight loop: otherwise the first streams could finish while later ones were still
  // connecting, and the gauge would never see all of them at once.
  std::vector<int> fds;
  for (int i = 0; i < kStreams; ++i) {
    const int fd = Connect(gateway.port());
    ASSERT_GE(fd, 0) << "connection " << i;
    fds.push_back(fd);
  }
  std::vector<std::string> requests;
  for (int i = 0; i < kStreams; ++i) {
    nlohmann::json req = {{"prompt", std::vector<int>{1, 444, 287, 3896, 100 + i % 500}},
                          {"max_tokens", kTokens}, {"ignore_eos", true}, {"temperature", 0},
                          {"stream", true}, {"stream_options", {{"include_usage", true}}}};
    const std::string body = req.dump();
    requests.push_back("POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(send(fds[i], requests[i].data(), requests[i].size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(requests[i].size()));
  }
  std::vector<std::string> raw(kStreams);
  std::vector<bool> done(kStreams, false);
  int num_done = 0;
  double peak = 0;
  auto last_probe = Clock::now() - std::chrono::seconds(1);
  const auto until = Clock::now() + std::chrono::seconds(240);
  while (num_done < kStreams && Clock::now() < until) {
    if (Clock::now() - last_probe > std::chrono::milliseconds(100)) {
      peak = std::max(peak, OpenStreams(gateway.port()));
      last_probe = Clock::now();
    }
    std::vector<pollfd> polls;
    std::vector<int> index;
    for (int i = 0; i < kStreams; ++i) {
      if (!done[i]) {
        polls.push_back({fds[i], POLLIN, 0});
        index.push_back(i);
      }
    }
    if (poll(polls.data(), polls.size(), 50) <= 0) continue;
    for (size_t k = 0; k < polls.size(); ++k) {
      if (!(polls[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int i = index[k];
      char buf[16384];
      const ssize_t n = read(fds[i], buf, sizeof(buf));
      if (n > 0) raw[i].append(buf, static_cast<size_t>(n));
      if (n <= 0) {
        done[i] = true;
        ++num_done;
      }
    }
  }
  for (int fd : fds) close(fd);
  EXPECT_EQ(num_done, kStreams) << "streams still open at the deadline";
  EXPECT_GE(peak, kStreams) << "the open-streams gauge never reached " << kStreams;
  int complete = 0;
  int reported = 0;
  for (int i = 0; i < kStreams; ++i) {
    const std::string& r = raw[i];
    const bool ok = r.find("HTTP/1.1 200") == 0 && r.find("data: [DONE]") != std::string::npos &&
                    r.find("\"completion_tokens\":" + std::to_string(kTokens)) != std::string::npos;
    complete += ok ? 1 : 0;
    if (!ok && reported++ < 5) ADD_FAILURE() << "stream " << i << ": " << r.substr(0, 600);
  }
  EXPECT_EQ(complete, kStreams);
}

}  // namespace
}  // namespace glimpse
