// A StepRunner whose forward pass does no work, for measuring what the engine (and what runs
// on its thread: detokenization, the streams' listeners) costs the host per decode step.
//
// Greedy steps get token ids, top-k steps k candidates a row — as a GPU step's reduction
// brings them back — every row's different and all of them plain text tokens of the bundled
// tokenizer. A forward call returns at once, or after sleeping `forward_time` (a GPU step's
// duration, during which the engine thread waits without using a CPU, as it does on a
// stream synchronization); host work handed to it (StepRunner::OverlapNextForward) runs
// during that time, as a GPU backend runs it while the step computes. Each forward call records
// when it began, on the wall clock and on the calling thread's and the process's CPU clocks, and
// how many logits rows it had: the interval between two calls is the engine's time per step (the
// runner's being ~0), and the CPU interval the part of it the engine thread spent running rather
// than waiting for a CPU (what other threads on a busy machine cannot inflate). Each call also
// records when it returned: from there to the next call is the host gap, the engine's work
// between two forward passes that nothing overlaps (on a GPU, the time the device idles).
//
// Thread-safety: the engine thread only; Intervals() after the engine stopped.
#ifndef GLIMPSE_TOOLS_BENCH_INSTANT_STEP_RUNNER_H_
#define GLIMPSE_TOOLS_BENCH_INSTANT_STEP_RUNNER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "model/step_runner.h"

namespace glimpse::bench {

// Per-step intervals between consecutive forward calls of one batch size, in microseconds.
struct StepIntervals {
  std::vector<double> wall_us;
  std::vector<double> engine_cpu_us;  // the engine thread's CPU time over the same intervals
  // The whole process's CPU time over them: every thread's (sampling pool, clients, gRPC),
  // spinning included.
  std::vector<double> process_cpu_us;
  // From the end of the first call of each interval to the start of the second: the host gap,
  // and the engine thread's CPU time in it.
  std::vector<double> gap_us;
  std::vector<double> gap_cpu_us;
};

class InstantStepRunner final : public model::StepRunner {
 public:
  InstantStepRunner(const model::LlamaConfig& config, std::chrono::microseconds forward_time)
      : config_(config), forward_time_(forward_time) {}

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

  absl::Status Forward(const model::StepBatch& batch, float* logits) override;
  absl::Status ForwardGreedy(const model::StepBatch& batch, int32_t* tokens) override;
  absl::Status ForwardTopK(const model::StepBatch& batch, int32_t k,
                           std::span<const float> normalizer_temperatures, bool sums_t1,
                           model::TopTokens* top) override;
  absl::Status CopyStepLogitsRow(size_t row, float* logits) override;

  // The intervals between the starts of consecutive forward calls that both had `rows`
  // logits rows (the full-batch decode steps when `rows` is the batch size).
  StepIntervals Intervals(size_t rows) const;

 private:
  // Ids the bundled tokenizer decodes to plain text (past its special tokens).
  static constexpr int32_t kFirstTextToken = 300;
  static constexpr int32_t kTextTokens = 2048;

  struct Call {
    std::chrono::steady_clock::time_point start;
    double thread_cpu_us = 0;
    double process_cpu_us = 0;
    size_t rows = 0;
    std::chrono::steady_clock::time_point end;  // when the call returned
    double end_thread_cpu_us = 0;
  };
  // A forward call: BeginCall records it and runs its overlap work; the call makes up its
  // results; EndCall sleeps out the forward time and records the end. Making up the results
  // is the "device's" work, as a GPU step's copy back is.
  void BeginCall(const model::StepBatch& batch);
  void EndCall();
  int32_t Token(size_t row) const;

  model::LlamaConfig config_;
  std::chrono::microseconds forward_time_;
  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  size_t step_ = 0;
  std::vector<Call> calls_;
};

// The p-quantile (0..1) of `v` (0 when empty).
double Percentile(std::vector<double> v, double p);

}  // namespace glimpse::bench

#endif  // GLIMPSE_TOOLS_BENCH_INSTANT_STEP_RUNNER_H_
