// The engine's own time per decode step: what a step costs the host besides the forward pass
// (scheduling, the batch and its page tables, sampling from the device's candidates, stop
// checks, detokenization, output delivery to the clients' streams). The engine is
// synchronous: on a GPU this time adds to every step's, so at batch 256 on an H200 (a
// Llama-3-8B decode step is ~4-6 ms) each 100 us of it is ~2 % of throughput.
//
// The forward pass is an InstantStepRunner: it answers at once with made-up argmaxes or
// top-k candidates (as a GPU step's reduction brings them back), so the figures are the
// engine's alone, measured here on the CPU. The bundled model supplies the tokenizer and
// config (its vocabulary is small; with candidates, sampling does not read whole rows, so the
// vocabulary hardly matters).
//
//   bazel run -c opt //tools/bench:engine_overhead_bench [-- --steps=200]
//
// Prints, per sampling mode and batch size, the median and 90th percentile of the interval
// between consecutive full-batch decode steps' forward calls (the engine's time per step,
// the runner's being ~0), that per sequence, and the engine thread's CPU time per step.
// The clients here take outputs straight from the RequestStreams; grpc_overhead_bench runs
// the same engine behind the real gRPC service, whose listeners add their own work.
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "scheduler/engine.h"
#include "server/loaded_model.h"
#include "tools/bench/overhead_bench_main.h"

namespace glimpse::bench {
namespace {

void Run(const OverheadRunSpec& spec, scheduler::Engine& engine) {
  const OverheadMode& mode = spec.mode;
  const int32_t batch = spec.batch;
  const int32_t steps = spec.steps;
  std::vector<std::shared_ptr<scheduler::RequestStream>> streams;
  for (int32_t i = 0; i < batch; ++i) {
    scheduler::EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    r.prompt_tokens = OverheadPrompt(i);
    r.sampling.temperature = mode.temperature;
    r.sampling.top_k = mode.top_k;
    r.output.num_logprobs = mode.num_logprobs;
    r.stopping.max_tokens = steps;
    r.stopping.ignore_eos = true;
    auto s = engine.Submit(std::move(r));
    if (!s.ok()) {
      std::fprintf(stderr, "engine_overhead_bench: %s\n", s.status().ToString().c_str());
      std::exit(1);
    }
    streams.push_back(*s);
  }
  // The clients: two threads taking each stream's outputs as they come, woken by its
  // listener, as the gRPC reactors are (a client that read one stream to its end before the
  // next would leave the others' outputs piling up, which no server does).
  std::mutex mu;
  std::condition_variable wake;
  std::deque<size_t> ready;  // streams with output waiting (maybe listed more than once)
  size_t finished = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    streams[i]->SetListener([&, i] {
      {
        std::lock_guard<std::mutex> lock(mu);
        ready.push_back(i);
      }
      wake.notify_one();
    });
  }
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (true) {
        wake.wait(lock, [&] { return !ready.empty() || finished == streams.size(); });
        if (ready.empty()) return;
        const size_t i = ready.front();
        ready.pop_front();
        lock.unlock();
        size_t done = 0;
        while (std::optional<scheduler::RequestOutput> out = streams[i]->TryNext()) {
          if (out->done) done = 1;
        }
        lock.lock();
        finished += done;
        if (finished == streams.size()) wake.notify_all();
      }
    });
  }
  for (std::thread& t : clients) t.join();
}

}  // namespace
}  // namespace glimpse::bench

int main(int argc, char** argv) {
  return glimpse::bench::OverheadBenchMain(
      argc, argv, "engine_overhead_bench",
      "engine time per full-batch decode step, clients reading the RequestStreams",
      glimpse::bench::Run);
}
