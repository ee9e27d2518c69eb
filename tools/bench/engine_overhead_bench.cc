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
// the runner's being ~0) and that per sequence.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "model/step_runner.h"
#include "scheduler/engine.h"
#include "server/loaded_model.h"

ABSL_FLAG(int32_t, steps, 200, "decode steps per request (each request's max_tokens)");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "16", "64", "256"}),
          "decode batch sizes (requests run together)");
ABSL_FLAG(std::vector<std::string>, modes,
          std::vector<std::string>({"greedy", "top_k", "logprobs"}),
          "sampling modes: greedy, top_k (top-k 50 at T 0.8), logprobs (greedy + 5 logprobs)");
ABSL_FLAG(std::string, overhead_model, "models/tinycode-4m-f16.gguf",
          "model whose tokenizer and config the engine uses (its weights are not run)");

namespace glimpse::scheduler {
namespace {

using Clock = std::chrono::steady_clock;

// A StepRunner whose forward pass takes no time: greedy steps get token ids, top-k steps k
// candidates a row, every row's different and all of them plain text tokens. Records when each
// forward call began and how many logits rows it had. Thread-safety: the engine thread only;
// Intervals() after the engine stopped.
class InstantStepRunner final : public model::StepRunner {
 public:
  explicit InstantStepRunner(const model::LlamaConfig& config) : config_(config) {}

  const model::LlamaConfig& config() const override { return config_; }
  int tensor_parallel_size() const override { return 1; }
  void AllocateKvCache(int32_t num_blocks, int32_t block_size, int32_t) override {
    num_blocks_ = num_blocks;
    block_size_ = block_size;
  }
  void ReserveActivations(int32_t, int32_t) override {}
  int32_t kv_num_blocks() const override { return num_blocks_; }
  int32_t kv_block_size() const override { return block_size_; }
  size_t kv_element_bytes() const override { return 2; }
  void MoveKvBlocks(std::span<const model::KvBlockMove>) override {}

  absl::Status Forward(const model::StepBatch& batch, float* logits) override {
    Record(batch);
    const size_t vocab = static_cast<size_t>(config_.vocab_size);
    for (size_t r = 0; r < batch.logits_rows.size(); ++r) {
      std::fill(logits + r * vocab, logits + (r + 1) * vocab, -20.0f);
      logits[r * vocab + Token(r)] = 5.0f;
    }
    return absl::OkStatus();
  }
  absl::Status ForwardGreedy(const model::StepBatch& batch, int32_t* tokens) override {
    Record(batch);
    for (size_t r = 0; r < batch.logits_rows.size(); ++r) tokens[r] = Token(r);
    return absl::OkStatus();
  }
  absl::Status ForwardTopK(const model::StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           model::TopTokens* top) override {
    Record(batch);
    const size_t rows = batch.logits_rows.size();
    top->Resize(rows, k, !normalizer_temperatures.empty(), sums_t1);
    const int32_t count = std::min(k, kTextTokens);
    for (size_t r = 0; r < rows; ++r) {
      top->count[r] = count;
      for (int32_t j = 0; j < count; ++j) {
        // Increasing ids, values in a made-up order; the row's own token the likeliest.
        const size_t at = r * static_cast<size_t>(k) + static_cast<size_t>(j);
        top->ids[at] = kFirstTextToken + (Token(r) - kFirstTextToken + j) % kTextTokens;
        top->logits[at] = j == 0 ? 5.0f : -0.05f * static_cast<float>((j * 37) % count);
      }
      std::sort(top->ids.begin() + r * k, top->ids.begin() + r * k + count);
      if (!top->row_max.empty()) {
        top->row_max[r] = 5.0f;
        top->row_exp_sum[r] = 1.5;
        if (!top->row_exp_sum_t1.empty()) top->row_exp_sum_t1[r] = 1.5;
      }
    }
    return absl::OkStatus();
  }
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override {
    std::fill(logits, logits + config_.vocab_size, -20.0f);
    logits[Token(row)] = 5.0f;
    return absl::OkStatus();
  }

  // Intervals (us) between the starts of consecutive forward calls that both had `rows`
  // logits rows.
  std::vector<double> Intervals(size_t rows) const {
    std::vector<double> out;
    for (size_t i = 1; i < calls_.size(); ++i) {
      if (calls_[i].rows != rows || calls_[i - 1].rows != rows) continue;
      out.push_back(
          std::chrono::duration<double, std::micro>(calls_[i].start - calls_[i - 1].start).count());
    }
    return out;
  }

 private:
  // Ids the bundled tokenizer decodes to plain text (past its special tokens).
  static constexpr int32_t kFirstTextToken = 300;
  static constexpr int32_t kTextTokens = 2048;

  struct Call {
    Clock::time_point start;
    size_t rows = 0;
  };
  void Record(const model::StepBatch& batch) {
    calls_.push_back({Clock::now(), batch.logits_rows.size()});
    ++step_;
  }
  int32_t Token(size_t row) const {
    return kFirstTextToken + static_cast<int32_t>((row * 131 + step_ * 17) % kTextTokens);
  }

  model::LlamaConfig config_;
  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  size_t step_ = 0;
  std::vector<Call> calls_;
};

struct Mode {
  const char* flag;
  const char* name;
  float temperature;
  int32_t top_k;
  int32_t num_logprobs;  // -1: none
};

// Runs `batch` requests of `steps` tokens each to the end; returns the full-batch intervals.
std::vector<double> Run(const server::LoadedModel& loaded, const Mode& mode, int32_t batch,
                        int32_t steps) {
  InstantStepRunner runner(loaded.model->config());
  EngineOptions options;
  options.scheduler.max_running_sequences = batch;
  options.scheduler.max_step_tokens = std::max(512, batch);
  options.num_kv_blocks = batch * ((16 + steps) / 16 + 2);
  options.max_waiting_requests = batch;
  options.seed = 1;
  auto engine = Engine::Create(runner, *loaded.tokenizer, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine_overhead_bench: %s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  (*engine)->Start();
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int32_t i = 0; i < batch; ++i) {
    EngineRequest r;
    r.request_id = "r" + std::to_string(i);
    for (int32_t t = 0; t < 16; ++t) r.prompt_tokens.push_back(400 + (i * 7 + t) % 1000);
    r.sampling.temperature = mode.temperature;
    r.sampling.top_k = mode.top_k;
    r.output.num_logprobs = mode.num_logprobs;
    r.stopping.max_tokens = steps;
    r.stopping.ignore_eos = true;
    auto s = (*engine)->Submit(std::move(r));
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
        while (std::optional<RequestOutput> out = streams[i]->TryNext()) {
          if (out->done) done = 1;
        }
        lock.lock();
        finished += done;
        if (finished == streams.size()) wake.notify_all();
      }
    });
  }
  for (std::thread& t : clients) t.join();
  (*engine)->Stop();
  return runner.Intervals(static_cast<size_t>(batch));
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace
}  // namespace glimpse::scheduler

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace glimpse;
  auto loaded = server::LoadedModel::Load(absl::GetFlag(FLAGS_overhead_model), /*num_threads=*/1,
                                          server::Device::kCpu, 1, server::KvCacheDType::kAuto);
  if (!loaded.ok()) {
    std::fprintf(stderr, "engine_overhead_bench: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const int32_t steps = absl::GetFlag(FLAGS_steps);
  const scheduler::Mode modes[] = {{"greedy", "greedy", 0.0f, 0, -1},
                                   {"top_k", "top-k 50, T 0.8", 0.8f, 50, -1},
                                   {"logprobs", "greedy + 5 logprobs", 0.0f, 0, 5}};
  std::vector<int32_t> batches;
  for (const std::string& b : absl::GetFlag(FLAGS_batch_sizes)) {
    int32_t v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1 || v > 4096) {
      std::fprintf(stderr,
                   "engine_overhead_bench: --batch_sizes wants numbers in 1..4096, "
                   "not '%s'\n",
                   b.c_str());
      return 2;
    }
    batches.push_back(v);
  }
  const std::vector<std::string> wanted = absl::GetFlag(FLAGS_modes);
  for (const std::string& m : wanted) {
    if (std::none_of(std::begin(modes), std::end(modes),
                     [&](const scheduler::Mode& mode) { return m == mode.flag; })) {
      std::fprintf(stderr, "engine_overhead_bench: unknown mode '%s' (greedy, top_k, logprobs)\n",
                   m.c_str());
      return 2;
    }
  }
  std::printf(
      "engine time per full-batch decode step (instant forward pass, %d steps a "
      "request)\n",
      steps);
  std::printf("%-22s %6s %12s %12s %14s\n", "mode", "batch", "median us", "p90 us",
              "us / sequence");
  for (const scheduler::Mode& mode : modes) {
    if (std::find(wanted.begin(), wanted.end(), mode.flag) == wanted.end()) continue;
    for (const int32_t batch : batches) {
      const std::vector<double> intervals = scheduler::Run(*loaded, mode, batch, steps);
      const double median = scheduler::Percentile(intervals, 0.5);
      std::printf("%-22s %6d %12.1f %12.1f %14.2f\n", mode.name, batch, median,
                  scheduler::Percentile(intervals, 0.9), median / batch);
    }
  }
  return 0;
}
