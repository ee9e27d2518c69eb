// The command line and table shared by the host-overhead benches (engine_overhead_bench,
// grpc_overhead_bench): each runs an engine over an InstantStepRunner for every sampling mode
// and batch size asked for, and this prints the engine's time per full-batch decode step.
//
// Flags (defined here): --steps, --batch_sizes, --modes, --forward_us, --sampling_threads,
// --overhead_model.
#ifndef GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_
#define GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "scheduler/engine.h"
#include "server/loaded_model.h"
#include "tools/bench/instant_step_runner.h"

namespace glimpse::bench {

// One sampling mode every request of a run uses.
struct OverheadMode {
  const char* flag;  // its --modes name
  const char* name;  // its name in the table
  float temperature;
  int32_t top_k;
  int32_t num_logprobs;  // -1: none
};

// What one run of a bench does.
struct OverheadRunSpec {
  const server::LoadedModel* loaded;
  OverheadMode mode;
  int32_t batch;                           // requests, all running together
  int32_t steps;                           // tokens each generates
  std::chrono::microseconds forward_time;  // the InstantStepRunner's
};

// Runs `spec.batch` requests to the end; returns the runner's full-batch intervals.
using OverheadRun = std::function<StepIntervals(const OverheadRunSpec& spec)>;

// Creates and starts the engine of a run over `runner`: room for `spec.batch` sequences of a
// 16-token prompt and `spec.steps` tokens, all running together. Exits the process with a
// message naming `program` if it cannot.
std::unique_ptr<scheduler::Engine> StartOverheadEngine(InstantStepRunner& runner,
                                                       const OverheadRunSpec& spec,
                                                       const char* program);

// The 16-token prompt of a run's `i`th request.
std::vector<int32_t> OverheadPrompt(int32_t i);

// Parses the flags, loads --overhead_model and prints the table (`title` heads it); returns
// main's exit status.
int OverheadBenchMain(int argc, char** argv, const char* program, const char* title,
                      const OverheadRun& run);

}  // namespace glimpse::bench

#endif  // GLIMPSE_TOOLS_BENCH_OVERHEAD_BENCH_MAIN_H_
